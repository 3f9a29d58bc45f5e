"""JPEG bytes for frames and quantized flow, and OpenCV's thread setting.

OpenCV works in BGR order; everything here takes and returns RGB (or 2-D grey), so the
channel swap happens in exactly one place.

No ray or torch here (see docs/architecture.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import InputError


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 image: (H, W, 3) RGB or (H, W) grey, sizes in pixels.

    quality: 0..100 (OpenCV's scale). A grey image gives a one-channel JPEG (about half
    the bytes of a colour one), the form used for quantized flow.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise InputError(f"image must be uint8 (H, W, 3) RGB or (H, W) grey, got {img.dtype} {img.shape}")
    if not 0 <= quality <= 100:
        raise InputError(f"quality must be in 0..100, got {quality}")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError(f"OpenCV could not encode a {img.shape} image as JPEG")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Image from JPEG bytes: (H, W, 3) uint8 RGB for colour, (H, W) uint8 for grey."""
    buf = np.frombuffer(data, dtype=np.uint8)
    # UNCHANGED keeps a grey JPEG one-channel instead of expanding it to three.
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise InputError(f"not a decodable JPEG ({len(data)} bytes)")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def set_thread_limits(n: int = 1) -> int:
    """Set OpenCV's worker threads for this process (flow, colour conversion, JPEG);
    returns the previous setting.

    A process that runs one task per core (a Ray worker) should use 1: OpenCV's own
    pool would otherwise start a thread per core in every process and oversubscribe.
    """
    if n < 0:
        raise InputError(f"thread count must be >= 0, got {n}")
    previous = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    return previous
