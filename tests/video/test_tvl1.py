"""TV-L1 in torch: OpenCV's building blocks, batching, determinism, the method contract."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finegym_ray.video.tvl1 import TVL1, _centred_gradient, _median, _resize

SMALL = {"scales": 3, "warps": 2, "outer_iterations": 2}  # fewer iterations: quick, still converging on these pairs


def moving_texture(shift: tuple[float, float], height: int = 64, width: int = 80, seed: int = 0):
    """Two (H, W) uint8 renderings of one smooth texture, the second moved by ``shift``
    (dx, dy) pixels: cubic sampling of a larger texture at shifted coordinates."""
    rng = np.random.default_rng(seed)
    big = sum(cv2.GaussianBlur(rng.standard_normal((height + 40, width + 40)).astype(np.float32), (0, 0), s) * s
              for s in (2.0, 5.0))
    big = (big - big.min()) / (big.max() - big.min()) * 255
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 20
    first = cv2.remap(big, xs, ys, cv2.INTER_CUBIC)
    second = cv2.remap(big, xs - np.float32(shift[0]), ys - np.float32(shift[1]), cv2.INTER_CUBIC)
    return tuple(np.clip(np.rint(im), 0, 255).astype(np.uint8) for im in (first, second))


@pytest.mark.parametrize("shift", [(1.4, -0.6), (-2.3, 1.7)])
def test_recovers_a_subpixel_translation(shift):
    first, second = moving_texture(shift)
    flow = TVL1(device="cpu")(np.stack([first, second]))
    assert flow.shape == (1, 64, 80, 2) and flow.dtype == np.float32
    inner = flow[0, 8:-8, 8:-8]
    # measured: mean endpoint error 0.01-0.02 px here (OpenCV's TV-L1 the same)
    err = np.linalg.norm(inner - np.array(shift, np.float32), axis=-1)
    assert err.mean() < 0.05 and np.median(err) < 0.05


def test_batched_pairs_equal_pairs_solved_alone():
    pairs = [moving_texture(s, seed=i) for i, s in enumerate([(1.0, 0.5), (0.0, 0.0), (-2.5, 1.0)])]
    method = TVL1(device="cpu", batch_pairs=3, **SMALL)
    together = method.pairs(torch.from_numpy(np.stack([a for a, _ in pairs])),
                            torch.from_numpy(np.stack([b for _, b in pairs])))
    for i, (a, b) in enumerate(pairs):
        alone = method.pairs(torch.from_numpy(a[None]), torch.from_numpy(b[None]))
        # a pair that converges first is frozen in the batch exactly where it stops alone
        assert torch.allclose(together[i], alone[0], atol=1e-4), i
    assert together[1].abs().max() < 0.05  # identical images: no motion


def test_deterministic():
    first, second = moving_texture((0.7, 0.2))
    method = TVL1(device="cpu", **SMALL)
    assert np.array_equal(method(np.stack([first, second])), method(np.stack([first, second])))


def test_contract_prev_and_chunks():
    frames = np.stack([moving_texture((0.8 * i, 0.0))[1] for i in range(4)])  # moves 0.8 px per frame
    method = TVL1(device="cpu", batch_pairs=2, **SMALL)
    whole = method(frames)
    assert whole.shape == (3, 64, 80, 2)
    chunked = np.concatenate([method(frames[:2]), method(frames[2:], prev=frames[1])])
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    assert method(frames[:1]).shape == (0, 64, 80, 2)
    assert method(frames[:1], prev=frames[0]).shape == (1, 64, 80, 2)
    assert np.abs(whole[:, 8:-8, 8:-8, 0].mean() - 0.8) < 0.05
    with pytest.raises(ValueError, match="uint8"):
        method(frames.astype(np.float32))
    with pytest.raises(ValueError, match="prev"):
        method(frames, prev=frames[0, :10])


@pytest.mark.parametrize("options, message", [
    ({"tau": 0.5}, "tau"), ({"scale_step": 1.0}, "scale_step"), ({"median_filtering": 4}, "median_filtering"),
    ({"warps": 0}, "warps"), ({"epsilon": float("nan")}, "epsilon"), ({"scales": 2.5}, "scales"),
    ({"batch_pairs": 0}, "batch_pairs"), ({"device": "nonsense"}, "device"),
])
def test_options_out_of_range_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TVL1(**options)


def test_defaults_are_opencvs():
    m = TVL1(device="cpu")
    assert (m.tau, m.lambda_, m.theta, m.scales, m.scale_step, m.warps, m.epsilon, m.inner_iterations,
            m.outer_iterations, m.median_filtering, m.gamma) == (0.25, 0.15, 0.3, 5, 0.8, 5, 0.01, 30, 10, 5, 0.0)
    assert m.device == "cpu" and not m.compile and TVL1.RUNTIME_OPTIONS == ("device", "batch_pairs", "compile")


def test_illumination_term_follows_a_brightening_texture():
    first, second = moving_texture((1.0, 0.0))
    brighter = np.clip(second.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    flow = TVL1(device="cpu", gamma=0.5, **SMALL)(np.stack([first, brighter]))
    assert np.isfinite(flow).all()
    assert np.abs(flow[0, 8:-8, 8:-8, 0].mean() - 1.0) < 0.2


@pytest.mark.parametrize("k", [3, 5, 7])
def test_median_equals_sorting_the_windows(k):
    u = torch.randn(2, 2, 19, 23)
    r = k // 2
    windows = F.pad(u, (r, r, r, r), mode="replicate").unfold(2, k, 1).unfold(3, k, 1)
    assert torch.equal(_median(u, k), windows.reshape(2, 2, 19, 23, k * k).median(dim=-1).values)


def test_median_equals_opencvs_median_blur():
    u = np.random.default_rng(0).standard_normal((30, 41)).astype(np.float32)
    ours = _median(torch.from_numpy(u)[None, None], 5)[0, 0].numpy()
    np.testing.assert_array_equal(ours, cv2.medianBlur(u, 5))


@pytest.mark.parametrize("shape", [(256, 340), (205, 272), (37, 50)])
def test_pyramid_resize_equals_opencvs(shape):
    image = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    expected = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = _resize(torch.from_numpy(image)[None, None], expected.shape, 0.8)[0, 0].numpy()
    # grey levels of 255: float round-off of the source positions (1e-5 px) on a noise image
    np.testing.assert_allclose(ours, expected, atol=0.01)


def test_centred_gradient_halves_at_the_border():
    image = torch.tensor([[0.0, 2.0, 6.0], [1.0, 1.0, 1.0], [5.0, 3.0, 2.0]])[None, None]
    dx, dy = _centred_gradient(image)
    assert dx[0, 0].tolist() == [[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [-1.0, -1.5, -0.5]]
    assert dy[0, 0].tolist() == [[0.5, -0.5, -2.5], [2.5, 0.5, -2.0], [2.0, 1.0, 0.5]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path of tvl1 is checked by "
                                                           "benchmarks/gpu_check.py on a GPU machine")
def test_cuda_agrees_with_cpu():
    first, second = moving_texture((1.2, -0.4))
    frames = np.stack([first, second])
    cpu = TVL1(device="cpu", **SMALL)(frames)
    gpu = TVL1(device="cuda", **SMALL)(frames)
    assert np.median(np.linalg.norm(gpu - cpu, axis=-1)) < 0.01
