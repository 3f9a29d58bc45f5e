"""Optical flow between consecutive frames, and its uint8 storage form.

Methods live in ``FLOW_METHODS``: a name -> factory that takes the method's keyword
options and returns a function ``(prev_gray, next_gray) -> (H, W, 2) float32``. The
factory runs once per ``compute_flow`` call, so per-method state (a DIS object, later a
GPU TV-L1 context) is built once per clip, not once per pair. Adding a method is one
more entry.

Flow is in pixels per frame: ``flow[t, y, x] = (dx, dy)`` moves pixel (x, y) of frame
``t`` to (x + dx, y + dy) in frame ``t + 1``.

Storage follows FineGym/mmaction2 (shared/FINEGYM.md): clip to [-bound, bound] pixels
(bound 20) and quantize linearly to uint8, x and y stored as separate grey images.

No ray or torch here (see ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

PairFlow = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (H, W) uint8 x 2 -> (H, W, 2) float32

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _dis(*, preset: str = "fast") -> PairFlow:
    """Dense Inverse Search. Speeds at 340x256 on one core (shared/README.md): ultrafast
    ~1160 pairs/s, fast ~520, medium ~120."""
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def _farneback(*, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
               poly_n: int = 5, poly_sigma: float = 1.2) -> PairFlow:
    """Farneback polynomial expansion, OpenCV's documented parameters (~48 pairs/s at 340x256)."""
    def pair(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale, levels, winsize, iterations,
                                            poly_n, poly_sigma, 0)
    return pair


def _none() -> PairFlow:
    """Zero flow: for RGB-only runs that still want the flow columns' shape."""
    return lambda prev, nxt: np.zeros((*prev.shape, 2), dtype=np.float32)


FLOW_METHODS: dict[str, Callable[..., PairFlow]] = {
    "dis": _dis,
    "farneback": _farneback,
    "none": _none,
}


def compute_flow(frames_rgb: np.ndarray, method: str = "dis", **options) -> np.ndarray:
    """Flow between consecutive frames, computed on grayscale.

    frames_rgb: (N, H, W, 3) uint8 RGB, or (N, H, W) uint8 grey.
    method: a key of ``FLOW_METHODS``; ``options`` go to its factory (``preset`` for
        "dis": "ultrafast", "fast" (default) or "medium").
    Returns (N - 1, H, W, 2) float32 flow in pixels per frame, (dx, dy) last; (0, H, W, 2)
    for fewer than two frames.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {sorted(FLOW_METHODS)}")
    frames = np.asarray(frames_rgb)
    if frames.dtype != np.uint8 or not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB or (N, H, W) grey, "
                         f"got {frames.dtype} {frames.shape}")
    n, height, width = frames.shape[:3]
    out = np.empty((max(n - 1, 0), height, width, 2), dtype=np.float32)
    if n < 2:
        return out
    pair = FLOW_METHODS[method](**options)
    grey = [f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for t in range(n - 1):
        out[t] = pair(grey[t], grey[t + 1])
    return out


def quantize_flow(flow: np.ndarray, bound: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2) float flow in pixels -> (x_u8, y_u8), each (...) uint8.

    ``q = round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))``: 0 is -bound,
    255 is +bound, zero flow falls between 127 and 128. One step is 2 * bound / 255
    pixels (0.157 px at bound 20), so ``dequantize_flow`` is off by at most half a step,
    bound / 255, for flow inside the bound.
    """
    if bound <= 0:
        raise ValueError(f"bound must be positive pixels, got {bound}")
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim < 1 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have a last axis of 2 (dx, dy), got shape {flow.shape}")
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    q = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return q[..., 0], q[..., 1]


def dequantize_flow(quantized: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """uint8 flow component -> float32 pixels: ``f = q * 2 * bound / 255 - bound``, the
    inverse of ``quantize_flow`` (same shape in and out)."""
    if bound <= 0:
        raise ValueError(f"bound must be positive pixels, got {bound}")
    q = np.asarray(quantized)
    if q.dtype != np.uint8:
        raise ValueError(f"quantized flow must be uint8, got {q.dtype}")
    return (q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)
