"""PNG charts of evaluation results, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def confusion_png(cm: np.ndarray, title: str) -> bytes:
    """Row-normalised confusion matrix (true class down, predicted across) as a heat map;
    each cell 2 to 24 pixels so that 530 classes still fit in about 1,000 pixels."""
    k = cm.shape[0]
    cell = int(np.clip(1000 // max(k, 1), 2, 24))
    rows = cm.sum(1, keepdims=True)
    share = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    heat = cv2.applyColorMap((share * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    heat = cv2.resize(heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST)
    top, left = 40, 40
    img = np.full((top + k * cell + 30, left + k * cell + 20, 3), 255, np.uint8)
    img[top:top + k * cell, left:left + k * cell] = heat
    cv2.putText(img, title, (left, 25), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "predicted ->", (left, top + k * cell + 20), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "true", (2, top + 12), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return _png(img)


def per_class_png(accuracy: np.ndarray, counts: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """One horizontal bar per class: recall (NaN: no instance, drawn grey), with the class
    id, its instance count and the start of its name."""
    k = len(accuracy)
    bar_h, label_w, bar_w = 14, 330, 400
    img = np.full((40 + k * bar_h + 10, label_w + bar_w + 60, 3), 255, np.uint8)
    cv2.putText(img, title, (5, 25), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (acc, n, name) in enumerate(zip(accuracy, counts, names)):
        y = 40 + i * bar_h
        cv2.putText(img, f"{i:3d} ({n}) {name[:40]}", (5, y + 11), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        if np.isnan(acc):
            cv2.rectangle(img, (label_w, y + 2), (label_w + bar_w, y + bar_h - 2), (220, 220, 220), -1)
            continue
        cv2.rectangle(img, (label_w, y + 2), (label_w + int(bar_w * acc), y + bar_h - 2), (180, 120, 40), -1)
        cv2.putText(img, f"{acc:.0%}", (label_w + bar_w + 5, y + 11), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return _png(img)


def _ticks(lo: float, hi: float, *, log: bool) -> list[float]:
    """Round values within [lo, hi] to label an axis: steps of 1, 2 or 5 times a power of
    ten; ``log``: lo, hi and the ticks are log10 values, at 1, 2, 5 per decade (decades
    alone when that makes more than 6)."""
    if log:
        ticks = [t for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
                 if lo <= (t := k + math.log10(m)) <= hi]
        if len(ticks) > 6:
            ticks = [t for t in ticks if t == round(t)]
        if len(ticks) >= 2:
            return ticks
    step = (hi - lo) / 5
    step = next(m * 10.0 ** math.floor(math.log10(step)) for m in (1, 2, 5, 10)
                if m * 10.0 ** math.floor(math.log10(step)) >= step)
    return list(np.arange(math.ceil(lo / step) * step, hi, step))


def scatter_png(x: Sequence[float] | Sequence[str], y: Sequence[float], hollow: Sequence[bool], *, title: str,
                x_label: str, y_label: str, log_x: bool = False, categories: Sequence[str] | None = None,
                legend: tuple[str, str] = ("finished", "stopped early")) -> bytes:
    """Points (x, y), filled or, where ``hollow``, an open circle with a cross; a legend
    names the two kinds (``legend``) that occur. ``categories``: x are strings placed in
    that order, repeats spread sideways; else x are numbers (``log_x``: positive, on a
    log axis). Tick labels with 3 significant digits; 640 x 420 pixels."""
    width, height, left, right, top, bottom = 640, 420, 70, 620, 45, 360
    img = np.full((height, width, 3), 255, np.uint8)
    ink, grid, colours = (0, 0, 0), (225, 225, 225), ((180, 120, 40), (40, 40, 200))

    def scale(values: np.ndarray) -> tuple[float, float]:
        lo, hi = float(values.min()), float(values.max())
        pad = (hi - lo) * 0.08 or max(abs(lo) * 0.1, 0.5)  # one distinct value: still a range
        return lo - pad, hi + pad

    yv = np.asarray(y, np.float64)
    y_lo, y_hi = scale(yv)
    py = (bottom - (yv - y_lo) / (y_hi - y_lo) * (bottom - top)).astype(int)
    for t in _ticks(y_lo, y_hi, log=False):
        row = int(bottom - (t - y_lo) / (y_hi - y_lo) * (bottom - top))
        cv2.line(img, (left, row), (right, row), grid, 1)
        cv2.putText(img, f"{t:.3g}", (5, row + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    if categories is not None:
        slot = (right - left) / max(len(categories), 1)
        index = [list(categories).index(v) for v in x]
        seen = [index[:i].count(c) for i, c in enumerate(index)]  # earlier points in the same category
        count = [index.count(c) for c in index]
        px = [int(left + (c + 0.5) * slot + (s - (n - 1) / 2) * min(8.0, slot / (n + 1)))
              for c, s, n in zip(index, seen, count)]
        for i, name in enumerate(categories):
            text = str(name)[:max(3, int(slot // 7))]
            (tw, _), _ = cv2.getTextSize(text, _FONT, 0.35, 1)
            cv2.putText(img, text, (int(left + (i + 0.5) * slot - tw / 2), bottom + 16), _FONT, 0.35, ink, 1,
                        cv2.LINE_AA)
    else:
        xv = np.log10(np.asarray(x, np.float64)) if log_x else np.asarray(x, np.float64)
        x_lo, x_hi = scale(xv)
        px = list((left + (xv - x_lo) / (x_hi - x_lo) * (right - left)).astype(int))
        for t in _ticks(x_lo, x_hi, log=log_x):
            col = int(left + (t - x_lo) / (x_hi - x_lo) * (right - left))
            cv2.line(img, (col, top), (col, bottom), grid, 1)
            text = f"{10 ** t if log_x else t:.3g}"
            (tw, _), _ = cv2.getTextSize(text, _FONT, 0.4, 1)
            cv2.putText(img, text, (col - tw // 2, bottom + 16), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), ink, 1)

    def marker(cx: int, cy: int, open_: bool) -> None:
        cv2.circle(img, (cx, cy), 5, colours[open_], 1 if open_ else -1, cv2.LINE_AA)
        if open_:
            cv2.drawMarker(img, (cx, cy), colours[open_], cv2.MARKER_CROSS, 8, 1)

    for cx, cy, open_ in zip(px, py, hollow):
        marker(int(cx), int(cy), bool(open_))
    for row, open_ in enumerate(sorted(set(map(bool, hollow)))):
        cx, cy = right - 130, 12 + row * 16  # above the plot, where no point can hide under it
        marker(cx, cy, open_)
        cv2.putText(img, legend[open_], (cx + 12, cy + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    cv2.putText(img, y_label, (5, top - 8), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    label = x_label + (" (log scale)" if log_x else "")
    (tw, _), _ = cv2.getTextSize(label, _FONT, 0.45, 1)
    cv2.putText(img, label, ((left + right - tw) // 2, bottom + 45), _FONT, 0.45, ink, 1, cv2.LINE_AA)
    return _png(img)


def interval_png(categories: Sequence[str], series: dict[str, Sequence[tuple[float, float, float]]], *, title: str,
                 x_label: str, y_label: str, lines: bool = True) -> bytes:
    """Points with error bars: ``series`` name -> one (y, lo, hi) per category (NaN y:
    no point), each series in its own colour and nudged sideways so that bars do not
    hide each other; ``lines`` joins a series' points. A legend names the series;
    860 x 440 pixels."""
    width, height, left, right, top, bottom = 860, 440, 60, 840, 50, 370
    img = np.full((height, width, 3), 255, np.uint8)
    ink, grid = (0, 0, 0), (225, 225, 225)
    colours = ((180, 120, 40), (40, 40, 200), (60, 150, 60), (150, 60, 150))
    values = np.array([v for points in series.values() for p in points for v in p], np.float64)
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.5
    lo, hi = lo - pad, hi + pad

    def row(v: float) -> int:
        return int(bottom - (v - lo) / (hi - lo) * (bottom - top))

    for t in _ticks(lo, hi, log=False):
        cv2.line(img, (left, row(t)), (right, row(t)), grid, 1)
        cv2.putText(img, f"{t:.3g}", (5, row(t) + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    slot = (right - left) / max(len(categories), 1)
    for i, name in enumerate(categories):
        text = str(name)[:max(3, int(slot // 7))]
        (tw, _), _ = cv2.getTextSize(text, _FONT, 0.35, 1)
        cv2.putText(img, text, (int(left + (i + 0.5) * slot - tw / 2), bottom + 16), _FONT, 0.35, ink, 1, cv2.LINE_AA)
    nudge = min(10.0, slot / (len(series) + 1))
    for s, (name, points) in enumerate(series.items()):
        colour = colours[s % len(colours)]
        xs = [int(left + (i + 0.5) * slot + (s - (len(series) - 1) / 2) * nudge) for i in range(len(points))]
        drawn = [(x, p) for x, p in zip(xs, points) if np.isfinite(p[0])]
        for (x0, p0), (x1, p1) in zip(drawn, drawn[1:]) if lines else ():
            cv2.line(img, (x0, row(p0[0])), (x1, row(p1[0])), colour, 1, cv2.LINE_AA)
        for x, (y, y_lo, y_hi) in drawn:
            if np.isfinite(y_lo) and np.isfinite(y_hi):
                cv2.line(img, (x, row(y_lo)), (x, row(y_hi)), colour, 1)
                for end in (y_lo, y_hi):
                    cv2.line(img, (x - 3, row(end)), (x + 3, row(end)), colour, 1)
            cv2.circle(img, (x, row(y)), 4, colour, -1, cv2.LINE_AA)
        cx, cy = right - 200, 12 + s * 14
        cv2.circle(img, (cx, cy), 4, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (cx + 10, cy + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), ink, 1)
    cv2.putText(img, title[:80], (left, 20), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    cv2.putText(img, y_label, (5, top - 8), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize(x_label, _FONT, 0.45, 1)
    cv2.putText(img, x_label, ((left + right - tw) // 2, bottom + 45), _FONT, 0.45, ink, 1, cv2.LINE_AA)
    return _png(img)
