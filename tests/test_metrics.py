"""Metrics against cases computed by hand."""

import numpy as np
import pytest

from finegym_ray.metrics import confusion_matrix, mean_class_accuracy, per_class_accuracy, top1_accuracy


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
