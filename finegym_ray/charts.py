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
