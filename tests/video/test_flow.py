"""Flow on a synthetic translated texture, and the uint8 storage round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from finegym_ray.video import FLOW_METHODS, compute_flow, dequantize_flow, quantize_flow

MARGIN = 16  # pixels: np.roll wraps the texture round at the borders


def texture(height: int = 128, width: int = 160, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB smooth random texture: trackable at every pixel."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    grey = cv2.GaussianBlur(noise, (0, 0), 2.0)
    grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -2), (2, 1)])
def test_flow_recovers_a_translation(method, dx, dy):
    first = texture()
    second = np.roll(first, shift=(dy, dx), axis=(0, 1))  # content moves by (dx, dy) pixels
    flow = compute_flow(np.stack([first, second, second]), method=method)
    assert flow.shape == (2, 128, 160, 2) and flow.dtype == np.float32
    inner = flow[0, MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert inner[..., 0].mean() == pytest.approx(dx, abs=0.5)
    assert inner[..., 1].mean() == pytest.approx(dy, abs=0.5)
    still = flow[1, MARGIN:-MARGIN, MARGIN:-MARGIN]  # identical frames: no motion
    assert np.abs(still).mean() < 0.1


def test_dis_presets_and_grey_input():
    first = texture()
    second = np.roll(first, 3, axis=1)
    grey = np.stack([first[..., 0], second[..., 0]])  # (N, H, W) grey
    for preset in ("ultrafast", "fast", "medium"):
        flow = compute_flow(grey, method="dis", preset=preset)
        assert flow[0, MARGIN:-MARGIN, MARGIN:-MARGIN, 0].mean() == pytest.approx(3, abs=0.5)
    with pytest.raises(ValueError, match="ultrafast"):
        compute_flow(grey, method="dis", preset="slowest")


def test_none_method_and_short_inputs():
    frames = np.stack([texture(seed=s) for s in range(3)])
    assert not compute_flow(frames, method="none").any()
    assert compute_flow(frames, method="none").shape == (2, 128, 160, 2)
    assert compute_flow(frames[:1]).shape == (0, 128, 160, 2)
    assert compute_flow(frames[:0]).shape == (0, 128, 160, 2)


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError) as info:
        compute_flow(np.zeros((2, 8, 8, 3), np.uint8), method="tvl1")
    for name in FLOW_METHODS:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 4), np.uint8)])
def test_bad_frames_are_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(bad)


def test_quantize_anchors():
    x, y = quantize_flow(np.array([[-20.0, 20.0], [0.0, -100.0], [100.0, 0.0]], np.float32), bound=20)
    assert x.dtype == np.uint8 and x.tolist() == [0, 128, 255]  # 127.5 rounds to even: 128
    assert y.tolist() == [255, 0, 128]
    assert dequantize_flow(np.array([0, 255], np.uint8), 20).tolist() == [-20.0, 20.0]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (7, 5, 2), elements=st.floats(-30, 30, width=32)), st.sampled_from([5.0, 20.0]))
def test_quantize_round_trip(flow, bound):
    x, y = quantize_flow(flow, bound)
    back = np.stack([dequantize_flow(x, bound), dequantize_flow(y, bound)], axis=-1)
    assert back.dtype == np.float32 and back.shape == flow.shape
    err = np.abs(back - np.clip(flow, -bound, bound))
    assert err.max() <= bound / 255 + 1e-5
