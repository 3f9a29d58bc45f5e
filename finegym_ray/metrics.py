"""The paper's recognition metrics, on numpy arrays (no torch, no Ray).

top-1 accuracy: the share of samples whose highest score is their label.
mean class accuracy: the mean over classes of per-class recall (correct / instances of
that class), over the classes that occur in ``labels``: a class absent from the
evaluation set has no recall and is left out rather than counted as 0 or 1.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise InputError(f"scores must be (N, K) and labels (N,), got {scores.shape} and {labels.shape}")
    if len(labels) == 0:
        raise InputError("no samples to score")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise InputError(f"labels must be in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")
    # arg-max of a row of NaN is 0: a diverged model would score as predicting class 0.
    bad = np.flatnonzero(~np.isfinite(scores).all(1))
    if len(bad):
        rows = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise InputError(f"{len(bad)} of {len(labels)} score rows are not finite (row{'s' * (len(bad) > 1)} {rows})")
    return scores, labels


def confusion_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted (arg-max) class."""
    scores, labels = _check(scores, labels)
    k = scores.shape[1]
    return np.bincount(labels * k + scores.argmax(1), minlength=k * k).reshape(k, k).astype(np.int64)


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return confusion_top1(confusion_matrix(scores, labels))


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K,) recall per class; NaN for classes with no instance in ``labels``."""
    return confusion_per_class(confusion_matrix(scores, labels))


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return confusion_mean_class(confusion_matrix(scores, labels))


# The same metrics from a confusion matrix, which sums across batches and workers.

def confusion_top1(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def confusion_per_class(cm: np.ndarray) -> np.ndarray:
    counts = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(cm) / np.maximum(counts, 1), np.nan)


def confusion_mean_class(cm: np.ndarray) -> float:
    per_class = confusion_per_class(cm)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


# Uncertainty: a percentile bootstrap over clips. Resampling the clips (not the classes)
# matches how a validation split is drawn; a class missing from a resample has no recall
# there and is left out of that resample's mean class accuracy, as above.

def bootstrap(scores: np.ndarray, labels: np.ndarray, *, samples: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """``top1`` (B,), ``mean_class`` (B,) and ``per_class`` (B, K) recall (NaN: class
    absent from that resample) of B = ``samples`` resamplings of the N clips with
    replacement. The draws depend on ``seed`` and N only: two score arrays over the same
    clips in the same order get the same resamplings, so their sample-by-sample
    differences give a paired interval."""
    scores, labels = _check(scores, labels)
    k = scores.shape[1]
    correct = (scores.argmax(1) == labels).astype(np.float64)
    index = np.random.default_rng(seed).integers(0, len(labels), (samples, len(labels)))  # (B, N)
    cell = (np.arange(samples)[:, None] * k + labels[index]).ravel()  # (resample, class) bins
    hits = np.bincount(cell, weights=correct[index].ravel(), minlength=samples * k).reshape(samples, k)
    counts = np.bincount(cell, minlength=samples * k).reshape(samples, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return {"top1": correct[index].mean(1), "mean_class": np.nanmean(per_class, 1), "per_class": per_class}


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``values`` (NaNs left out;
    (nan, nan) when none is left)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


# Uncertainty over training seeds as well. All seeds of a configuration are evaluated on
# the same validation clips, so the clip resamplings are shared (paired) across them, and
# the seed term is independent of them: the two add, draw by draw. Seeds are not resampled:
# with the 2 to 5 seeds a study affords, a bootstrap over them takes a handful of distinct
# values and its percentile interval never reaches beyond the seeds it saw; the mean's
# standard error times Student's t with S - 1 degrees of freedom is the classical width
# for a mean of S values (wide for 2 seeds, as it should be).

def over_seeds(points: np.ndarray, draws: np.ndarray, *, rng_seed: int = 0) -> tuple[float, np.ndarray]:
    """The mean over S training seeds of one figure, and B draws of it that cover both
    the seeds and the clips. ``points`` (S,): each seed's figure; ``draws`` (S, B): each
    seed's :func:`bootstrap` draws of it, the same B resamplings of the same clips for
    every seed (NaN: not defined in that resample). Draw b is the seeds' mean of their
    draw b plus t_b times the standard error of the seeds' mean (t_b from Student's t
    with S - 1 degrees of freedom, fixed by ``rng_seed``). One seed: its figure and its
    draws, unchanged; seeds that agree add nothing to the clips' spread."""
    points, draws = np.asarray(points, np.float64), np.asarray(draws, np.float64)
    if points.ndim != 1 or len(points) == 0 or draws.shape[:1] != points.shape or draws.ndim != 2:
        raise InputError(f"points must be (S,) and draws (S, B), got {points.shape} and {draws.shape}")
    if len(points) == 1:
        return float(points[0]), draws[0]
    seeds = len(points)
    spread = points.std(ddof=1) / np.sqrt(seeds)
    t = np.random.default_rng(rng_seed).standard_t(seeds - 1, draws.shape[1])
    return float(points.mean()), draws.mean(0) + t * spread
