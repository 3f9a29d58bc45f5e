"""Flow on a synthetic translated texture, the method contract for every method, and the
uint8 storage round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from finegym_ray.video import FLOW_METHODS, build_flow, compute_flow, dequantize_flow, quantize_flow
from finegym_ray.video.flow import method_defaults, runtime_options

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
        compute_flow(np.zeros((2, 8, 8, 3), np.uint8), method="tvl2")
    for name in FLOW_METHODS:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 4), np.uint8)])
def test_bad_frames_are_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(bad)


# Options that keep the contract tests fast: TV-L1 on the CPU at its defaults takes about
# 1 s per 340x256 pair, and these recover the test's 1-pixel motion anyway.
FAST = {"tvl1": {"device": "cpu", "scales": 2, "warps": 2, "outer_iterations": 2, "inner_iterations": 10}}


def moving(n: int = 5, height: int = 40, width: int = 48) -> np.ndarray:
    """(n, H, W) uint8 grey: a texture moving right by 1 pixel a frame."""
    base = texture(height, width)[..., 0]
    return np.stack([np.roll(base, t, axis=1) for t in range(n)])


@pytest.mark.parametrize("name", sorted(FLOW_METHODS))
def test_every_method_keeps_the_chunk_contract(name):
    method = build_flow(name, **FAST.get(name, {}))
    frames = moving()
    whole = method(frames)
    assert whole.shape == (4, 40, 48, 2) and whole.dtype == np.float32
    inner = whole[:, 8:-8, 8:-8]
    if name != "none":
        assert inner[..., 0].mean() == pytest.approx(1.0, abs=0.2) and abs(inner[..., 1].mean()) < 0.2
    # Chunk by chunk, each call given the previous chunk's last frame: the same flow.
    chunked = np.concatenate([method(frames[:2]), method(frames[2:3], frames[1]), method(frames[3:], frames[2])])
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    np.testing.assert_allclose(method(frames[1:], frames[0]), whole, atol=1e-4)  # prev -> frames[0] first
    for chunk, prev, pairs in ((frames[:1], None, 0), (frames[:0], None, 0), (frames[:1], frames[0], 1),
                               (frames[:0], frames[0], 0)):
        out = method(chunk, prev)
        assert out.shape == (pairs, 40, 48, 2) and out.dtype == np.float32
    for bad, prev in ((frames.astype(np.float32), None), (frames[0], None), (frames, frames[0, :-1])):
        with pytest.raises(ValueError):
            method(bad, prev)


@pytest.mark.parametrize("name", sorted(FLOW_METHODS))
def test_an_unknown_option_names_the_method_and_its_options(name):
    with pytest.raises(ValueError) as info:
        build_flow(name, warp_speed=9)
    message = str(info.value)
    assert repr(name) in message and "warp_speed" in message
    assert all(option in message for option in method_defaults(name))


def test_option_types_and_ranges_are_checked_when_built():
    with pytest.raises(ValueError, match="preset"):
        build_flow("dis", preset=3)
    with pytest.raises(ValueError, match="pyr_scale"):
        build_flow("farneback", pyr_scale=1.0)
    with pytest.raises(ValueError, match="warps"):
        build_flow("tvl1", device="cpu", warps=0)
    with pytest.raises(ValueError, match="levels must be of type int"):
        build_flow("farneback", levels=2.5)
    build_flow("farneback", poly_sigma=2)  # an int is taken for a float option


def test_runtime_options_are_the_methods_own():
    assert {"device", "batch_pairs"} <= set(runtime_options("tvl1")) <= set(method_defaults("tvl1"))
    assert [runtime_options(m) for m in ("dis", "farneback", "none")] == [(), (), ()]


def test_compute_flow_takes_tvl1_and_its_options():
    frames = np.repeat(moving()[..., None], 3, axis=3)  # RGB
    flow = compute_flow(frames, method="tvl1", **FAST["tvl1"])
    assert flow.shape == (4, 40, 48, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow, build_flow("tvl1", **FAST["tvl1"])(moving()), atol=1e-4)


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
