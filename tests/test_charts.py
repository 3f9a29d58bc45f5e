"""What the charts say in words: axis labels, what a number in brackets is, reference lines."""

from __future__ import annotations

import cv2
import numpy as np

from finegym_ray import charts


def _decodes(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_per_class_names_its_axis_and_the_count_in_brackets():
    with charts.recording() as texts:
        _decodes(charts.per_class_png(np.array([0.5, np.nan]), np.array([4, 0]), ["a", "b"], "title"))
    assert any("(clips)" in t for t in texts)  # the "(n)" after each class is its number of clips
    assert any("accuracy" in t and "%" in t for t in texts)


def test_the_timeline_says_its_axis_is_seconds():
    with charts.recording() as texts:
        _decodes(charts.timeline_png({"v": [("a", 1.0, 2.0)]}, {"v": [("a", 1.2, 2.1, 0.9)]}, {"v": (0.0, 5.0)},
                                     class_names=["a"], title="t"))
    assert any("seconds" in t for t in texts)


def test_an_interval_chart_draws_its_reference_line_with_its_label():
    series = {"x": [(30.0, 20.0, 40.0), (35.0, 25.0, 45.0)]}
    with charts.recording() as plain:
        a = _decodes(charts.interval_png(["m1", "m2"], series, title="t", x_label="model", y_label="%"))
    with charts.recording() as texts:
        b = _decodes(charts.interval_png(["m1", "m2"], series, title="t", x_label="model", y_label="%",
                                         reference=("chance 25%", 25.0)))
    assert texts.count("chance 25%") == 1 and "chance 25%" not in plain
    assert (a != b).any()


def test_an_interval_chart_shows_every_seed_beside_the_mean():
    series = {"x": [(30.0, 20.0, 40.0), (35.0, 25.0, 45.0)]}
    with charts.recording() as plain:
        a = _decodes(charts.interval_png(["m1", "m2"], series, title="t", x_label="model", y_label="%",
                                         seeds={"x": [[30.0], [35.0]]}))  # one seed: nothing beside the mean
    with charts.recording() as texts:
        b = _decodes(charts.interval_png(["m1", "m2"], series, title="t", x_label="model", y_label="%",
                                         seeds={"x": [[28.0, 32.0], [20.0, 50.0]]}))
    assert "each seed" in texts and "each seed" not in plain
    assert (a != b).any()
