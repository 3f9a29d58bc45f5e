"""Evaluation metrics one level up, and the fusion of two runs' scores (no Ray)."""

import numpy as np
import pyarrow as pa
import pytest

from finegym_ray.train.evaluate import fuse_scores, level_metrics, metrics_of


def _scores(pred, k):
    return np.eye(k)[pred]


def test_set_level_accuracy_from_element_predictions():
    # classes 0, 1 in set 21 and class 2 in set 22
    labels = np.array([0, 1, 2, 2])
    scores = _scores([1, 1, 2, 0], 3)
    m, cm = metrics_of(scores, labels, ["a", "b", "c"], {"set": (21, 21, 22)})
    assert m["top1"] == 0.5 and cm.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m["mean_class"] == pytest.approx((0 + 1 + 0.5) / 3)
    # sets: true 21 21 22 22, predicted 21 21 22 21
    assert m["levels"]["set"] == {"top1": 0.75, "mean_class": 0.75}
    assert level_metrics(scores, labels, (1, 1, 1)) == {"top1": 1.0, "mean_class": 1.0}


def test_fusion_averages_scores_and_refuses_other_clips():
    a = pa.table({"key": ["x", "y"], "label": [0, 1], "scores": [[0.9, 0.1], [0.6, 0.4]]})
    b = pa.table({"key": ["x", "y"], "label": [0, 1], "scores": [[0.3, 0.7], [0.0, 1.0]]})
    fused = np.stack(fuse_scores(a, b).column("scores").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(fused, [[0.6, 0.4], [0.3, 0.7]])
    with pytest.raises(ValueError, match="same clips"):
        fuse_scores(a, b.slice(0, 1))
