"""From stored JPEG frames to a model input: decode, crop, resize, flip.

Frames arrive as the JPEG bytes of a clip shard (``rgb``, or grey ``flow_x`` /
``flow_y``). A sample is ``(T, C, H, W)`` uint8: T segments (or dense frames), C = 3 x
length for RGB and 2 x length for flow (x0, y0, x1, y1, ... pairs), H x W the network
input in pixels (square by default; a wider input keeps more of a 16:9 frame, where a
gymnast crossing the floor leaves a centre square). It stays uint8 until the train
worker, where it is scaled (and flow dequantized).

Crops follow TSN: in training a box whose sides are each one of ``scales`` times the
short side (sides at most ``max_distort`` steps apart) at a random place, resized to the
crop; at test the frame resized to ``test_short`` pixels, centre (or left/centre/right)
box of the input's aspect, ``crop`` pixels high. Boxes are computed on the decoded
frame, so one resize per frame does both the scale and the crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import InputError

TSN_SCALES = (1.0, 0.875, 0.75, 0.66)

Box = tuple[int, int, int, int]  # x, y, width, height in decoded-frame pixels


def decode_reduction(short_side: int, needed: int) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that keeps ``short_side`` / r >=
    ``needed`` pixels: libjpeg decodes at 1/2, 1/4, 1/8 for a fraction of the cost."""
    for r in (8, 4, 2):
        if short_side // r >= needed:
            return r
    return 1


_FLAGS = {(False, 1): cv2.IMREAD_COLOR, (False, 2): cv2.IMREAD_REDUCED_COLOR_2,
          (False, 4): cv2.IMREAD_REDUCED_COLOR_4, (False, 8): cv2.IMREAD_REDUCED_COLOR_8,
          (True, 1): cv2.IMREAD_GRAYSCALE, (True, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
          (True, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, (True, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8}


def decode_jpeg(blob: bytes, *, grey: bool, reduction: int = 1) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) RGB or (H, W) grey uint8, decoded at 1/reduction size."""
    img = cv2.imdecode(np.frombuffer(blob, np.uint8), _FLAGS[(grey, reduction)])
    if img is None:
        raise InputError("a frame is not a readable JPEG")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def random_box(height: int, width: int, rng: np.random.Generator, scales: Sequence[float] = TSN_SCALES,
               max_distort: int = 1, aspect: float = 1.0) -> Box:
    """TSN's multi-scale crop box: each side one of ``scales`` x the side of the largest
    box of ``aspect`` (width / height) that fits the frame; a square by default (pixels)."""
    full_h = min(height, width / aspect)
    hs = [max(int(full_h * s), 1) for s in scales]
    ws = [min(max(int(full_h * aspect * s), 1), width) for s in scales]
    pairs = [(ws[i], hs[j]) for i in range(len(scales)) for j in range(len(scales)) if abs(i - j) <= max_distort]
    w, h = pairs[int(rng.integers(len(pairs)))]
    x = int(rng.integers(0, width - w + 1))
    y = int(rng.integers(0, height - h + 1))
    return x, y, w, h


def test_box(height: int, width: int, crop_fraction: float, view: int = 0, views: int = 1,
             aspect: float = 1.0) -> Box:
    """``crop_fraction`` x the largest box of ``aspect`` (width / height) that fits; views >
    1 spread it along the long side (3 views: left / centre / right, or top / middle /
    bottom). View 0 of 1 is the centre."""
    full_h = min(height, width / aspect)
    h = max(int(round(full_h * crop_fraction)), 1)
    w = min(max(int(round(full_h * aspect * crop_fraction)), 1), width)
    if views == 1:
        return (width - w) // 2, (height - h) // 2, w, h
    pos = view / (views - 1)
    if width - w >= height - h:
        return int(round((width - w) * pos)), (height - h) // 2, w, h
    return (width - w) // 2, int(round((height - h) * pos)), w, h


def crop_resize(img: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Cut ``box`` from an (H, W[, C]) image and resize it to ``size`` = (height, width) pixels."""
    x, y, w, h = box
    patch = img[y:y + h, x:x + w]
    interp = cv2.INTER_AREA if h > size[0] else cv2.INTER_LINEAR
    return cv2.resize(patch, (size[1], size[0]), interpolation=interp)


def clip_input(frames: Sequence[bytes] | tuple[Sequence[bytes], Sequence[bytes]], indices: np.ndarray, *,
               flow: bool, size: int, box_fn, flip: bool, reduction: int) -> np.ndarray:
    """Decode and crop the frames ``indices`` (T, L) of one clip -> (T, C * L, size, size) uint8.

    ``frames``: the ``rgb`` JPEGs, or the pair (``flow_x``, ``flow_y``) for flow.
    ``box_fn(height, width)`` gives the crop box (the same for every frame of the clip);
    ``flip`` mirrors the frames, and for flow also negates x (quantized q -> 255 - q).
    Each distinct frame is decoded once.
    """
    wanted = np.unique(indices)
    if flow:
        xs, ys = frames
        decoded = {int(i): (decode_jpeg(xs[i], grey=True, reduction=reduction),
                            decode_jpeg(ys[i], grey=True, reduction=reduction)) for i in wanted}
        h, w = next(iter(decoded.values()))[0].shape[:2]
    else:
        decoded = {int(i): decode_jpeg(frames[i], grey=False, reduction=reduction) for i in wanted}
        h, w = next(iter(decoded.values())).shape[:2]
    box = box_fn(h, w)
    cropped = {}
    for i, img in decoded.items():
        if flow:
            fx, fy = (crop_resize(c, box, size) for c in img)
            if flip:
                fx, fy = 255 - fx[:, ::-1], fy[:, ::-1]
            cropped[i] = np.stack([fx, fy])  # (2, H, W)
        else:
            c = crop_resize(img, box, size)
            cropped[i] = (c[:, ::-1] if flip else c).transpose(2, 0, 1)  # (3, H, W)
    t, length = indices.shape
    out = np.stack([cropped[int(i)] for i in indices.ravel()])  # (T * L, C, H, W)
    return np.ascontiguousarray(out.reshape(t, length * out.shape[1], *size))
