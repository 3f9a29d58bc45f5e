"""The chunk of grey frames every optical flow method takes (a module of its own so
that the torch method, ``tvl1``, and the registry of methods, ``flow``, both use it
without importing each other)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def check_chunk(frames: np.ndarray, prev: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``frames`` and ``prev`` as arrays, or InputError unless they are (N, H, W) and
    (H, W) uint8 grey (``prev`` may be None)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 3:
        raise InputError(f"frames must be uint8 (N, H, W) grey, got {frames.dtype} {frames.shape}")
    if prev is not None:
        prev = np.asarray(prev)
        if prev.dtype != np.uint8 or prev.shape != frames.shape[1:]:
            raise InputError(f"prev must be one uint8 {frames.shape[1:]} grey frame, got {prev.dtype} {prev.shape}")
    return frames, prev
