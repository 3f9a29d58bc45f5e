"""Metrics against cases computed by hand."""

import numpy as np
import pytest

from finegym_ray.metrics import (
    bootstrap,
    confusion_matrix,
    interval,
    mean_class_accuracy,
    per_class_accuracy,
    top1_accuracy,
)


def one_hot(pred, k):
    return np.eye(k)[pred]


def test_imbalanced_case_separates_the_two_metrics():
    # class 0: 8 samples, all right; class 1: 2 samples, 0 right; class 2 never occurs.
    labels = np.array([0] * 8 + [1, 1])
    scores = one_hot([0] * 8 + [0, 2], 3)
    assert top1_accuracy(scores, labels) == pytest.approx(0.8)
    assert mean_class_accuracy(scores, labels) == pytest.approx(0.5)  # (1 + 0) / 2: class 2 left out
    assert np.isnan(per_class_accuracy(scores, labels)[2])
    assert confusion_matrix(scores, labels).tolist() == [[8, 0, 0], [1, 0, 1], [0, 0, 0]]


def test_three_classes_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    scores = np.array([[.9, .1, 0], [.2, .7, .1], [.1, .8, .1], [.3, .3, .4], [0, 1, 0], [.1, .2, .7]])
    assert top1_accuracy(scores, labels) == pytest.approx(4 / 6)
    assert mean_class_accuracy(scores, labels) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)


@pytest.mark.parametrize("scores, labels", [(np.zeros((2, 3)), np.array([0, 3])), (np.zeros(3), np.array([0])),
                                            (np.zeros((0, 3)), np.zeros(0, dtype=int))])
def test_bad_input(scores, labels):
    with pytest.raises(ValueError):
        top1_accuracy(scores, labels)


def _noisy_scores(n: int, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores right about 60 % of the time, on ``n`` clips of ``k`` classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    scores = rng.random((n, k))
    right = rng.random(n) < 0.6
    scores[right, labels[right]] += 1.0
    return scores, labels


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_more_clips():
    widths = []
    for n in (100, 1600):
        scores, labels = _noisy_scores(n)
        draws = bootstrap(scores, labels, samples=500, seed=1)
        for metric, point in (("top1", top1_accuracy(scores, labels)),
                              ("mean_class", mean_class_accuracy(scores, labels))):
            lo, hi = interval(draws[metric])
            assert lo <= point <= hi, (n, metric, lo, point, hi)
        lo, hi = interval(draws["mean_class"])
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # 16x the clips: about a quarter of the width


def test_bootstrap_is_deterministic_and_paired_by_seed():
    scores, labels = _noisy_scores(200)
    a, b = bootstrap(scores, labels, seed=3), bootstrap(scores, labels, seed=3)
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    assert not np.array_equal(a["top1"], bootstrap(scores, labels, seed=4)["top1"])
    # The same clips resampled alike: a model against itself differs by exactly 0.
    assert np.all(a["mean_class"] - b["mean_class"] == 0)
    per_class = a["per_class"]
    assert per_class.shape == (1000, 5) and np.allclose(np.nanmean(per_class, 1), a["mean_class"])


def test_bootstrap_by_hand_and_absent_classes():
    # Class 2 never occurs: its recall is NaN everywhere and mean class averages 0 and 1.
    scores = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    draws = bootstrap(scores, np.array([0, 1]), samples=50)
    assert np.isnan(draws["per_class"][:, 2]).all()
    both = ~np.isnan(draws["per_class"][:, :2]).any(1)
    assert np.allclose(draws["mean_class"][both], 0.5)
    assert np.isnan(interval(np.array([np.nan]))).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad):
    # A row of NaN has arg-max 0: without the check it would count as a prediction of class 0.
    scores = one_hot([0, 1, 1], 3)
    scores[1] = bad
    for metric in (top1_accuracy, mean_class_accuracy, confusion_matrix, bootstrap):
        with pytest.raises(ValueError, match=r"1 of 3 score rows are not finite \(row 1\)"):
            metric(scores, np.array([0, 1, 1]))


def test_over_seeds_keeps_one_seed_and_adds_the_seeds_spread():
    from finegym_ray.metrics import over_seeds

    draws = np.random.default_rng(0).normal(0.5, 0.02, (1, 500))
    point, one = over_seeds(np.array([0.5]), draws)
    assert point == 0.5 and (one == draws[0]).all()
    _, same = over_seeds(np.array([0.5, 0.5]), np.concatenate([draws, draws]))
    assert np.allclose(same, draws[0])
    point, apart = over_seeds(np.array([0.4, 0.5, 0.6]), np.concatenate([draws - 0.1, draws, draws + 0.1]))
    assert point == pytest.approx(0.5) and np.std(apart) > 2 * np.std(draws)
    with pytest.raises(ValueError, match="points must be"):
        over_seeds(np.array([0.5, 0.6]), draws)
