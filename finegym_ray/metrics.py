"""The paper's recognition metrics, on numpy arrays (no torch, no Ray).

top-1 accuracy: the share of samples whose highest score is their label.
mean class accuracy: the mean over classes of per-class recall (correct / instances of
that class), over the classes that occur in ``labels``: a class absent from the
evaluation set has no recall and is left out rather than counted as 0 or 1.
"""

from __future__ import annotations

import numpy as np


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, K) and labels (N,), got {scores.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no samples to score")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")
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
