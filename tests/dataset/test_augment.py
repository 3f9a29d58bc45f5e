import cv2
import numpy as np
import pytest

from finegym_ray.dataset.augment import (
    clip_input,
    crop_resize,
    decode_jpeg,
    decode_reduction,
    random_box,
    test_box as centre_box,
)
from finegym_ray.video.flow import dequantize_flow, quantize_flow


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()


def test_decode_reduction_keeps_enough_pixels():
    assert decode_reduction(256, 224) == 1
    assert decode_reduction(256, 112) == 2
    assert decode_reduction(256, 64) == 4
    assert decode_reduction(1024, 100) == 8
    img = np.zeros((128, 228, 3), np.uint8)
    assert decode_jpeg(_jpeg(img), grey=False, reduction=2).shape == (64, 114, 3)


def test_rgb_comes_out_in_rgb_order():
    bgr = np.zeros((32, 32, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR
    assert decode_jpeg(_jpeg(bgr), grey=False)[..., 0].mean() > 190


@pytest.mark.parametrize("aspect", [1.0, 16 / 9])
def test_random_boxes_fit_and_follow_tsn_scales(aspect):
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y, w, h = random_box(256, 455, rng, aspect=aspect)
        assert 0 <= x and x + w <= 455 and 0 <= y and y + h <= 256
        assert int(256 * 0.66) <= h <= 256
        # sides at most one scale step apart: 0.875 / 1 ... 0.75 / 0.875
        assert aspect * 0.857 - 0.02 <= w / h <= aspect / 0.857 + 0.02


def test_test_boxes():
    assert centre_box(256, 455, 224 / 256) == (115, 16, 224, 224)
    left, centre, right = (centre_box(256, 455, 224 / 256, v, 3) for v in range(3))
    assert left[0] == 0 and right[0] + right[2] == 455 and abs(centre[0] - 115) <= 1 and centre[1:] == (16, 224, 224)
    assert centre_box(128, 228, 1.0, aspect=192 / 112) == (4, 0, 219, 128)


def test_flipping_flow_mirrors_it_and_negates_x():
    rng = np.random.default_rng(1)
    flow = rng.uniform(-15, 15, (2, 32, 48, 2)).astype(np.float32)
    xs, ys = zip(*(quantize_flow(f) for f in flow))
    frames = ([_jpeg(x) for x in xs], [_jpeg(y) for y in ys])
    full = lambda h, w: (0, 0, w, h)  # noqa: E731
    idx = np.array([[0, 1]])
    plain = clip_input(frames, idx, flow=True, size=(32, 48), box_fn=full, flip=False, reduction=1)
    flipped = clip_input(frames, idx, flow=True, size=(32, 48), box_fn=full, flip=True, reduction=1)
    assert plain.shape == (1, 4, 32, 48)  # x0, y0, x1, y1
    px = dequantize_flow(plain)
    fx = dequantize_flow(flipped)
    step = 2 * 20 / 255  # one quantization level, pixels
    np.testing.assert_allclose(px[0, 0], flow[0, ..., 0], atol=2 * step)  # quantizing + JPEG at quality 100
    np.testing.assert_allclose(fx[0, 0], -px[0, 0, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(fx[0, 3], px[0, 3, :, ::-1], atol=1e-6)  # y keeps its sign


def test_rgb_clip_input_stacks_frames_per_segment():
    frames = [_jpeg(np.full((40, 60, 3), 10 * i, np.uint8)) for i in range(6)]
    out = clip_input(frames, np.array([[0, 1], [4, 5]]), flow=False, size=(20, 30),
                     box_fn=lambda h, w: (0, 0, w, h), flip=False, reduction=1)
    assert out.shape == (2, 6, 20, 30) and out.dtype == np.uint8
    assert [int(round(out[t, c].mean())) for t in range(2) for c in (0, 3)] == [0, 10, 40, 50]


def test_crop_resize_takes_the_box():
    img = np.zeros((100, 100), np.uint8)
    img[10:20, 30:50] = 255
    assert crop_resize(img, (30, 10, 20, 10), (5, 10)).min() == 255
