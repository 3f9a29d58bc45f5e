"""Optical flow between consecutive frames, and its uint8 storage form.

Methods live in ``FLOW_METHODS``: a name -> builder that takes the method's keyword
options and returns a method object, built once per actor (or per ``compute_flow``
call), so that per-method state (a DIS object, a GPU TV-L1 context) is made once. A
method object is called on chunks of a frame sequence::

    method(frames, prev=None) -> (N', H, W, 2) float32

frames: (N, H, W) uint8 grey. prev: the (H, W) uint8 frame just before ``frames[0]``
(the previous chunk's last frame), or None at the start of a sequence. The result holds
the flow of each consecutive pair in order: ``prev -> frames[0]`` when ``prev`` is
given, then ``frames[0] -> frames[1]``, ...; so N' = N with ``prev``, max(N - 1, 0)
without. Calling it chunk by chunk, each time with the previous chunk's last frame,
gives the flow of the whole sequence, and a GPU method gets many pairs per call.
Adding a method is one more entry.

Flow is in pixels per frame: ``flow[t, y, x] = (dx, dy)`` moves pixel (x, y) of frame
``t`` to (x + dx, y + dy) in frame ``t + 1``.

Storage follows FineGym/mmaction2 (shared/FINEGYM.md): clip to [-bound, bound] pixels
(bound 20) and quantize linearly to uint8, x and y stored as separate grey images.

No ray or torch here (see docs/architecture.md): TV-L1 (``tvl1``, torch) is imported only
when it is built or its options are looked up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

from ..errors import InputError
from .chunk import check_chunk


class FlowMethod(Protocol):
    """A built flow method: see the module docstring for the contract."""

    def __call__(self, frames: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray: ...


class _PairByPair:
    """The CPU methods: one OpenCV call per consecutive pair (subclasses give ``_pair``)."""

    def __call__(self, frames: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        frames, prev = check_chunk(frames, prev)
        sequence = list(frames) if prev is None else [prev, *frames]
        out = np.empty((max(len(sequence) - 1, 0), *frames.shape[1:], 2), dtype=np.float32)  # (N', H, W, 2)
        for t in range(len(out)):
            out[t] = self._pair(sequence[t], sequence[t + 1])
        return out

    def _pair(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:  # (H, W) uint8 x 2 -> (H, W, 2) float32
        raise NotImplementedError


DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class DIS(_PairByPair):
    """Dense Inverse Search. Speeds at 340x256 on one core (shared/README.md): ultrafast
    ~1160 pairs/s, fast ~520, medium ~120."""

    def __init__(self, *, preset: str = "fast"):
        if preset not in DIS_PRESETS:
            raise InputError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def _pair(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return self._dis.calc(prev, nxt, None)


class Farneback(_PairByPair):
    """Farneback polynomial expansion, OpenCV's documented parameters (~48 pairs/s at 340x256).

    pyr_scale: image scale between pyramid levels, in (0, 1). levels: extra pyramid
    levels. winsize: averaging window, pixels. iterations: per level. poly_n: pixel
    neighbourhood of the polynomial expansion (5 or 7 typically). poly_sigma: its
    Gaussian's standard deviation, pixels.
    """

    def __init__(self, *, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2):
        # OpenCV asserts (cv2.error) on some of these only when it runs: refuse them here.
        problems = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("pyr_scale", pyr_scale, 0 < pyr_scale < 1, "in (0, 1)"), ("levels", levels, levels >= 0, ">= 0"),
            ("winsize", winsize, winsize >= 1, ">= 1"), ("iterations", iterations, iterations >= 1, ">= 1"),
            ("poly_n", poly_n, poly_n >= 1, ">= 1"), ("poly_sigma", poly_sigma, poly_sigma > 0, "> 0"))
            if not ok]
        if problems:
            raise InputError("farneback: " + "; ".join(problems))
        self._args = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    def _pair(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, *self._args)


class NoFlow(_PairByPair):
    """Zero flow: for RGB-only runs that still want the flow columns' shape."""

    def _pair(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return np.zeros((*prev.shape, 2), dtype=np.float32)


def _tvl1_class() -> type:
    from .tvl1 import TVL1  # torch comes with it: loaded only where TV-L1 is built or inspected

    return TVL1


def _tvl1(**options: Any) -> FlowMethod:
    """TV-L1 (Zach et al. 2007, denseflow's method) in torch, on a GPU when there is one:
    ``finegym_ray.video.tvl1.TVL1``."""
    return _tvl1_class()(**options)


FLOW_METHODS: dict[str, Callable[..., FlowMethod]] = {
    "dis": DIS,
    "farneback": Farneback,
    "none": NoFlow,
    "tvl1": _tvl1,
}
# Builders that load their class on demand: where to find the class whose signature
# lists their options.
_LAZY_CLASSES: dict[str, Callable[[], type]] = {"tvl1": _tvl1_class}


def method_class(method: str) -> type:
    """The class a method's builder makes; ValueError naming the methods for an unknown one."""
    if method not in FLOW_METHODS:
        raise InputError(f"unknown flow method {method!r}; choose one of {sorted(FLOW_METHODS)}")
    return _LAZY_CLASSES[method]() if method in _LAZY_CLASSES else FLOW_METHODS[method]


def method_defaults(method: str) -> dict[str, Any]:
    """Option name -> default of ``method`` (its class's keyword arguments)."""
    params = inspect.signature(method_class(method)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
            or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self")}


def runtime_options(method: str) -> tuple[str, ...]:
    """Options of ``method`` that change where and how fast it runs (device, batch size)
    but not its flow beyond float rounding: the class's ``RUNTIME_OPTIONS``."""
    return tuple(getattr(method_class(method), "RUNTIME_OPTIONS", ()))


def resolve_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``method``: its defaults updated with ``options``.

    ValueError naming the method and its valid options for an unknown option, and for a
    value whose type is not its default's (an int is taken for a float, as a float).
    Ranges are the builder's to check.
    """
    defaults = method_defaults(method)
    unknown = sorted((k for k in options if k not in defaults), key=str)
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise InputError(f"flow method {method!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {valid}")
    resolved = dict(defaults)
    for name, value in options.items():
        default = defaults[name]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and type(value) is not type(default):
            raise InputError(f"flow method {method!r}: option {name} must be of type {type(default).__name__} "
                             f"(default {default!r}), got {value!r}")
        resolved[name] = value
    return resolved


def build_flow(method: str, **options: Any) -> FlowMethod:
    """The method object of ``method`` built with ``options`` (checked by
    ``resolve_options``; the builder refuses values out of range with ValueError)."""
    return FLOW_METHODS[method](**resolve_options(method, options))


def compute_flow(frames_rgb: np.ndarray, method: str = "dis", **options: Any) -> np.ndarray:
    """Flow between consecutive frames of one clip, computed on grayscale.

    frames_rgb: (N, H, W, 3) uint8 RGB, or (N, H, W) uint8 grey.
    method: a key of ``FLOW_METHODS``; ``options`` go to its builder (``preset`` for
        "dis": "ultrafast", "fast" (default) or "medium"), which runs once per call.
    Returns (N - 1, H, W, 2) float32 flow in pixels per frame, (dx, dy) last; (0, H, W, 2)
    for fewer than two frames.
    """
    method_class(method)  # an unknown method is refused before the frames are looked at
    frames = np.asarray(frames_rgb)
    if frames.dtype != np.uint8 or not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise InputError(f"frames must be uint8 (N, H, W, 3) RGB or (N, H, W) grey, "
                         f"got {frames.dtype} {frames.shape}")
    if frames.ndim == 4:
        frames = np.array([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames], np.uint8).reshape(frames.shape[:3])
    return build_flow(method, **options)(frames)


def quantize_flow(flow: np.ndarray, bound: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2) float flow in pixels -> (x_u8, y_u8), each (...) uint8.

    ``q = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))``: 0 is -bound,
    255 is +bound, zero flow falls between 127 and 128. One step is 2 * bound / 255
    pixels (0.157 px at bound 20), so ``dequantize_flow`` is off by at most half a step,
    bound / 255, for flow inside the bound.
    """
    if bound <= 0:
        raise InputError(f"bound must be positive pixels, got {bound}")
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim < 1 or flow.shape[-1] != 2:
        raise InputError(f"flow must have a last axis of 2 (dx, dy), got shape {flow.shape}")
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    q = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return q[..., 0], q[..., 1]


def dequantize_flow(quantized: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """uint8 flow component -> float32 pixels: ``f = q * 2 * bound / 255 - bound``, the
    inverse of ``quantize_flow`` (same shape in and out)."""
    if bound <= 0:
        raise InputError(f"bound must be positive pixels, got {bound}")
    q = np.asarray(quantized)
    if q.dtype != np.uint8:
        raise InputError(f"quantized flow must be uint8, got {q.dtype}")
    return (q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)
