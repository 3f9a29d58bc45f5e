"""JPEG round trips for colour frames and grey flow images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from finegym_ray.video import decode_jpeg, encode_jpeg, set_thread_limits


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_rgb(height: int = 256, width: int = 340) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], axis=-1)
    return cv2.GaussianBlur(img, (0, 0), 2).astype(np.uint8)


def test_rgb_round_trip_keeps_channel_order():
    img = smooth_rgb()
    data = encode_jpeg(img, quality=90)
    assert data[:2] == b"\xff\xd8"  # JPEG start-of-image marker
    back = decode_jpeg(data)
    assert back.shape == img.shape and back.dtype == np.uint8
    assert psnr(img, back) > 35
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    r, g, b = decode_jpeg(encode_jpeg(red)).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_grey_round_trip_stays_one_channel():
    img = smooth_rgb()[..., 1]
    data = encode_jpeg(img, quality=90)
    back = decode_jpeg(data)
    assert back.shape == img.shape and back.dtype == np.uint8
    assert psnr(img, back) > 35
    assert len(data) < len(encode_jpeg(np.repeat(img[..., None], 3, axis=2), quality=90))


def test_quality_changes_size():
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_jpeg(noisy, quality=50)) < len(encode_jpeg(noisy, quality=95))


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.float32),
                                 np.zeros((2, 8, 8, 3), np.uint8)])
def test_encode_refuses_other_images(bad):
    with pytest.raises(ValueError, match="uint8"):
        encode_jpeg(bad)


def test_encode_refuses_bad_quality():
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(np.zeros((8, 8), np.uint8), quality=101)


@pytest.mark.parametrize("data", [b"", b"not a jpeg", encode_jpeg(smooth_rgb())[:20]])
def test_decode_refuses_garbage(data):
    with pytest.raises(ValueError, match="JPEG"):
        decode_jpeg(data)


def test_set_thread_limits_returns_the_previous_setting():
    previous = set_thread_limits(1)
    try:
        assert cv2.getNumThreads() == 1
        assert set_thread_limits(1) == 1
    finally:
        set_thread_limits(previous)
