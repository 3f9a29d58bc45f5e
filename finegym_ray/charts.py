"""PNG charts of evaluation results, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


_recorders: list[list[str]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """The texts that the charts drawn in the block put on their images, in order: what
    a chart says in words."""
    texts: list[str] = []
    _recorders.append(texts)
    try:
        yield texts
    finally:
        _recorders.remove(texts)


def _put(img: np.ndarray, text: str, *args) -> None:
    """``cv2.putText``, told to ``recording``."""
    for texts in _recorders:
        texts.append(text)
    cv2.putText(img, text, *args)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# What the colours of confusion.png are: said in its title, so a reader need not guess.
CONFUSION_NOTE = "rows normalised: each true class's clips sum to 100 %"


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def confusion_image(cm: np.ndarray, title: str,
                    class_names: Sequence[str] | None = None) -> tuple[np.ndarray, dict]:
    """The row-normalised confusion matrix (true class down, predicted across) as a
    heat map with class names as tick labels on both axes, a colour bar (0 to 100 % of
    the true class's clips), each cell's percentage when there are at most 20 classes,
    and ``CONFUSION_NOTE`` under the title. Cells are 2 to 24 pixels, so 530 classes
    still fit in about 1,000 pixels; with cells under 10 pixels every n-th class is
    labelled. Returns the BGR image and its layout: ``labelled`` (the class ids whose
    labels it drew), the matrix's ``left`` and ``top`` edge and ``cell`` size, and the
    colour bar's ``bar_x`` (pixels)."""
    k = cm.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    cell = int(np.clip(1000 // max(k, 1), 2, 24))
    every = max(1, math.ceil(10 / cell))  # a label needs about 10 pixels of height
    labelled = list(range(0, k, every))
    scale = 0.35
    texts = {i: (f"{i}: {names[i]}" if class_names is not None else names[i])[:32] for i in labelled}
    margin = min(260, max([_text_width(t, scale) for t in texts.values()] + [20]) + 8)
    rows = cm.sum(1, keepdims=True)
    share = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    n = k * cell
    top, left = 62, margin + 24
    bar_x, bar_h = left + n + 24, max(n, 120)
    width = max(bar_x + 16 + 60, _text_width(title[:120], 0.5) + 20, _text_width(CONFUSION_NOTE, 0.42) + 20)
    img = np.full((top + max(n, bar_h) + margin + 40, width, 3), 255, np.uint8)
    heat = cv2.applyColorMap((share * 255).round().astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    img[top:top + n, left:left + n] = cv2.resize(heat, (n, n), interpolation=cv2.INTER_NEAREST)
    ink = (0, 0, 0)
    # Row labels, right-aligned against the matrix; column labels drawn the same way in
    # a block turned a quarter anticlockwise, so they read upwards and end at the matrix.
    columns = np.full((n, margin, 3), 255, np.uint8)
    for i, text in texts.items():
        y = top + i * cell + (cell + 8) // 2
        _put(img, text, (left - 4 - _text_width(text, scale), y), _FONT, scale, ink, 1, cv2.LINE_AA)
        _put(columns, text, (margin - 4 - _text_width(text, scale), i * cell + (cell + 8) // 2), _FONT,
                    scale, ink, 1, cv2.LINE_AA)
    img[top + n + 2:top + n + 2 + margin, left:left + n] = cv2.rotate(columns, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if k <= 20:
        for t in range(k):
            for p in range(k):
                if share[t, p] >= 0.005:
                    text = f"{share[t, p]:.0%}".rstrip("%")
                    colour = ink if share[t, p] > 0.6 else (255, 255, 255)  # viridis: dark low, yellow high
                    _put(img, text, (left + p * cell + (cell - _text_width(text, 0.28)) // 2,
                                            top + t * cell + cell // 2 + 4), _FONT, 0.28, colour, 1, cv2.LINE_AA)
    gradient = np.linspace(255, 0, bar_h).round().astype(np.uint8)[:, None].repeat(16, 1)
    img[top:top + bar_h, bar_x:bar_x + 16] = cv2.applyColorMap(gradient, cv2.COLORMAP_VIRIDIS)
    cv2.rectangle(img, (bar_x, top), (bar_x + 15, top + bar_h - 1), ink, 1)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(top + (1 - frac) * (bar_h - 1))
        cv2.line(img, (bar_x + 16, y), (bar_x + 19, y), ink, 1)
        _put(img, f"{frac:.0%}", (bar_x + 22, y + 4), _FONT, 0.35, ink, 1, cv2.LINE_AA)
    _put(img, title[:120], (10, 22), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    _put(img, CONFUSION_NOTE, (10, 42), _FONT, 0.42, ink, 1, cv2.LINE_AA)
    _put(img, "true class", (4, top - 6), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    _put(img, "predicted class", (left, top + n + margin + 24), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    return img, {"labelled": labelled, "left": left, "top": top, "cell": cell, "bar_x": bar_x}


def confusion_png(cm: np.ndarray, title: str, class_names: Sequence[str] | None = None) -> bytes:
    """:func:`confusion_image` as PNG bytes."""
    return _png(confusion_image(cm, title, class_names)[0])


def per_class_png(accuracy: np.ndarray, counts: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """One horizontal bar per class: recall (NaN: no instance, drawn grey), with the class
    id, its instance count and the start of its name."""
    k = len(accuracy)
    bar_h, label_w, bar_w, head = 14, 330, 400, 56
    img = np.full((head + k * bar_h + 10, label_w + bar_w + 60, 3), 255, np.uint8)
    _put(img, title, (5, 25), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    _put(img, "id (clips) class", (5, head - 6), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    _put(img, "accuracy of the class's clips (recall), 0-100 %; grey: no clip", (label_w, head - 6), _FONT, 0.35,
         (0, 0, 0), 1, cv2.LINE_AA)
    for i, (acc, n, name) in enumerate(zip(accuracy, counts, names)):
        y = head + i * bar_h
        _put(img, f"{i:3d} ({n}) {name[:40]}", (5, y + 11), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        if np.isnan(acc):
            cv2.rectangle(img, (label_w, y + 2), (label_w + bar_w, y + bar_h - 2), (220, 220, 220), -1)
            continue
        cv2.rectangle(img, (label_w, y + 2), (label_w + int(bar_w * acc), y + bar_h - 2), (180, 120, 40), -1)
        _put(img, f"{acc:.0%}", (label_w + bar_w + 5, y + 11), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
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
        _put(img, f"{t:.3g}", (5, row + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
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
            _put(img, text, (int(left + (i + 0.5) * slot - tw / 2), bottom + 16), _FONT, 0.35, ink, 1,
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
            _put(img, text, (col - tw // 2, bottom + 16), _FONT, 0.4, ink, 1, cv2.LINE_AA)
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
        _put(img, legend[open_], (cx + 12, cy + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    _put(img, title, (left, 20), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    _put(img, y_label, (5, top - 8), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    label = x_label + (" (log scale)" if log_x else "")
    (tw, _), _ = cv2.getTextSize(label, _FONT, 0.45, 1)
    _put(img, label, ((left + right - tw) // 2, bottom + 45), _FONT, 0.45, ink, 1, cv2.LINE_AA)
    return _png(img)


def interval_png(categories: Sequence[str], series: dict[str, Sequence[tuple[float, float, float]]], *, title: str,
                 x_label: str, y_label: str, lines: bool = True,
                 reference: tuple[str, float] | None = None,
                 seeds: dict[str, Sequence[Sequence[float]]] | None = None) -> bytes:
    """Points with error bars: ``series`` name -> one (y, lo, hi) per category (NaN y:
    no point), each series in its own colour and nudged sideways so that bars do not
    hide each other; ``lines`` joins a series' points. ``reference``: (label, y) of a
    dashed horizontal line (chance, say). ``seeds``: series name -> per category the
    values whose mean y is (one per training seed), drawn as small open circles beside
    its point where there are two or more. A legend names the series; 860 x 440 pixels."""
    width, height, left, right, top, bottom = 860, 440, 60, 840, 50, 370
    img = np.full((height, width, 3), 255, np.uint8)
    ink, grid = (0, 0, 0), (225, 225, 225)
    colours = ((180, 120, 40), (40, 40, 200), (60, 150, 60), (150, 60, 150))
    seeds = {name: [list(v) for v in per] for name, per in (seeds or {}).items()}
    several = any(len(v) > 1 for per in seeds.values() for v in per)
    values = np.array([v for points in series.values() for p in points for v in p]
                      + [v for per in seeds.values() for vs in per for v in vs], np.float64)
    if reference is not None:
        values = np.append(values, reference[1])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.5
    lo, hi = lo - pad, hi + pad

    def row(v: float) -> int:
        return int(bottom - (v - lo) / (hi - lo) * (bottom - top))

    for t in _ticks(lo, hi, log=False):
        cv2.line(img, (left, row(t)), (right, row(t)), grid, 1)
        _put(img, f"{t:.3g}", (5, row(t) + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    if reference is not None:
        for x in range(left, right, 12):  # dashed
            cv2.line(img, (x, row(reference[1])), (min(x + 6, right), row(reference[1])), (120, 120, 120), 1)
        _put(img, reference[0], (left + 4, row(reference[1]) - 4), _FONT, 0.35, (120, 120, 120), 1, cv2.LINE_AA)
    slot = (right - left) / max(len(categories), 1)
    for i, name in enumerate(categories):
        text = str(name)[:max(3, int(slot // 7))]
        (tw, _), _ = cv2.getTextSize(text, _FONT, 0.35, 1)
        _put(img, text, (int(left + (i + 0.5) * slot - tw / 2), bottom + 16), _FONT, 0.35, ink, 1, cv2.LINE_AA)
    nudge = min(16.0 if several else 10.0, slot / (len(series) + 1))  # seed circles need room beside the bars
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
        for x, values_of_seeds in zip(xs, seeds.get(name, [])):
            for v in values_of_seeds if len(values_of_seeds) > 1 else ():
                if np.isfinite(v):
                    cv2.circle(img, (x + 6, row(v)), 2, colour, 1, cv2.LINE_AA)
        cx, cy = right - 200, 12 + s * 14
        cv2.circle(img, (cx, cy), 4, colour, -1, cv2.LINE_AA)
        _put(img, name, (cx + 10, cy + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    if several:
        cx, cy = right - 200, 12 + len(series) * 14  # under the series' names
        cv2.circle(img, (cx, cy), 2, ink, 1, cv2.LINE_AA)
        _put(img, "each seed", (cx + 8, cy + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), ink, 1)
    _put(img, title[:80], (left, 20), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    _put(img, y_label, (5, top - 8), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize(x_label, _FONT, 0.45, 1)
    _put(img, x_label, ((left + right - tw) // 2, bottom + 45), _FONT, 0.45, ink, 1, cv2.LINE_AA)
    return _png(img)


def timeline_png(truth: dict[str, Sequence[tuple[str, float, float]]],
                 detected: dict[str, Sequence[tuple[str, float, float, float]]],
                 spans: dict[str, tuple[float, float]], *, class_names: Sequence[str], title: str,
                 max_detections: int = 12) -> bytes:
    """Per video (one band each, in ``truth``'s order): true segments (label, start s,
    end s) in a row above the detected ones (label, start s, end s, score), coloured by
    class; detections are the ``max_detections`` best, drawn as bars whose height is the
    score, the best on top. ``spans``: each video's (start, end) seconds, the x axis.
    960 pixels wide; a legend names the classes."""
    palette = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
               (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(class_names)}
    ink, grid = (0, 0, 0), (225, 225, 225)
    width, left, right, band, row_h = 960, 150, 940, 84, 26
    legend_rows = -(-len(class_names) // 6)
    top = 34 + 16 * legend_rows
    img = np.full((top + band * max(len(truth), 1) + 10, width, 3), 255, np.uint8)
    _put(img, title[:110], (5, 18), _FONT, 0.45, ink, 1, cv2.LINE_AA)
    for i, name in enumerate(class_names):
        x, y = 5 + (i % 6) * 155, 32 + (i // 6) * 16
        cv2.rectangle(img, (x, y - 9), (x + 12, y + 1), colour[name], -1)
        _put(img, str(name)[:20], (x + 16, y), _FONT, 0.35, ink, 1, cv2.LINE_AA)
    for v, video in enumerate(truth):
        y0 = top + v * band
        lo, hi = spans.get(video, (0.0, 1.0))
        hi = hi if hi > lo else lo + 1.0

        def x_of(t: float, lo: float = lo, hi: float = hi) -> int:
            return int(round(left + (right - left) * (min(max(t, lo), hi) - lo) / (hi - lo)))

        _put(img, str(video)[:22], (5, y0 + 18), _FONT, 0.35, ink, 1, cv2.LINE_AA)
        _put(img, "true", (100, y0 + 18), _FONT, 0.33, ink, 1, cv2.LINE_AA)
        _put(img, "detected", (90, y0 + 20 + row_h + 16), _FONT, 0.33, ink, 1, cv2.LINE_AA)
        for t in _ticks(lo, hi, log=False):
            cv2.line(img, (x_of(t), y0 + 4), (x_of(t), y0 + 8 + 2 * row_h + 8), grid, 1)
            _put(img, f"{t:.4g}", (x_of(t) - 10, y0 + 2 * row_h + 28), _FONT, 0.3, ink, 1, cv2.LINE_AA)
        for label, s, e in truth[video]:
            cv2.rectangle(img, (x_of(s), y0 + 6), (max(x_of(e), x_of(s) + 1), y0 + 6 + row_h),
                          colour.get(label, ink), -1)
        best = sorted(detected.get(video, []), key=lambda d: -d[3])[:max_detections]
        base = y0 + 12 + 2 * row_h
        for label, s, e, score in reversed(best):  # the best drawn last, on top
            h = max(2, int(round(row_h * min(max(score, 0.0), 1.0))))
            c = colour.get(label, ink)
            cv2.rectangle(img, (x_of(s), base - h), (max(x_of(e), x_of(s) + 1), base), c, -1)
            cv2.rectangle(img, (x_of(s), base - h), (max(x_of(e), x_of(s) + 1), base), ink, 1)
        cv2.line(img, (left, base), (right, base), ink, 1)
        _put(img, "seconds", (right - 50, y0 + 2 * row_h + 40), _FONT, 0.3, ink, 1, cv2.LINE_AA)
    return _png(img)


def _line_panel(img: np.ndarray, box: tuple[int, int, int, int], lines: dict[str, list[tuple[float, float]]], *,
                title: str, colours: Sequence[tuple[int, int, int]], fixed: tuple[float, float] | None,
                x_max: int) -> None:
    """One chart drawn into ``img`` within ``box`` (left, top, right, bottom, pixels):
    each of ``lines`` a name -> [(x, y), ...] polyline with its points marked (a single
    point stays visible), x from 1 to ``x_max``; ``fixed``: the y range, else the data's."""
    left, top, right, bottom = box
    ink, grid = (0, 0, 0), (225, 225, 225)
    ys = [y for points in lines.values() for _, y in points if math.isfinite(y)]
    if fixed is not None:
        lo, hi = fixed
    else:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (hi - lo) * 0.08 or max(abs(lo) * 0.1, 0.5)
        lo, hi = max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad

    def px(x: float, y: float) -> tuple[int, int]:
        col = left + (x - 1) / max(x_max - 1, 1) * (right - left) if x_max > 1 else (left + right) / 2
        return int(col), int(bottom - (y - lo) / (hi - lo) * (bottom - top))

    for t in _ticks(lo, hi, log=False):
        row = px(1, t)[1]
        cv2.line(img, (left, row), (right, row), grid, 1)
        _put(img, f"{t:.3g}", (left - 45, row + 4), _FONT, 0.38, ink, 1, cv2.LINE_AA)
    step = max(1, math.ceil(x_max / 10))
    for x in range(1, x_max + 1, step):
        col = px(x, lo)[0]
        cv2.line(img, (col, bottom), (col, bottom + 4), ink, 1)
        (tw, _), _ = cv2.getTextSize(str(x), _FONT, 0.38, 1)
        _put(img, str(x), (col - tw // 2, bottom + 17), _FONT, 0.38, ink, 1, cv2.LINE_AA)
    for i, (name, points) in enumerate(lines.items()):
        colour = colours[i % len(colours)]
        drawn = [px(x, y) for x, y in points if math.isfinite(y)]
        for a, b in zip(drawn, drawn[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in drawn:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        cy = top + 12 + i * 15
        cv2.line(img, (right - 150, cy), (right - 130, cy), colour, 2)
        _put(img, name, (right - 125, cy + 4), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), ink, 1)
    _put(img, title, (left, top - 10), _FONT, 0.5, ink, 1, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize("epoch", _FONT, 0.42, 1)
    _put(img, "epoch", ((left + right - tw) // 2, bottom + 36), _FONT, 0.42, ink, 1, cv2.LINE_AA)


def curves_png(history: Sequence[dict], *, title: str) -> bytes:
    """Training curves from a run's history (one dict per epoch, ``epoch`` counted from
    0 and drawn from 1): loss (train, validation) on the left, accuracy (train top-1,
    validation top-1 and mean class, 0 to 100 %) on the right; 1,000 x 420 pixels.
    Epochs without validation leave a gap in its lines' points, not a zero."""
    width, height = 1000, 420
    img = np.full((height, width, 3), 255, np.uint8)
    x_max = max([int(m["epoch"]) + 1 for m in history] or [1])

    def points(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(int(m["epoch"]) + 1, float(m[key]) * scale) for m in history
                if isinstance(m.get(key), (int, float))]

    colours = ((180, 120, 40), (40, 40, 200), (60, 150, 60), (150, 60, 150))
    loss = {"train": points("train_loss"), "val": points("val_loss")}
    accuracy = {"train top-1": points("train_top1", 100), "val top-1": points("val_top1", 100),
                "val mean class": points("val_mean_class", 100)}
    _line_panel(img, (60, 60, 470, 360), {k: v for k, v in loss.items() if v}, title="loss (cross-entropy)",
                colours=colours, fixed=None, x_max=x_max)
    _line_panel(img, (570, 60, 980, 360), {k: v for k, v in accuracy.items() if v}, title="accuracy (%)",
                colours=colours, fixed=(0.0, 100.0), x_max=x_max)
    _put(img, title[:110], (10, 22), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return _png(img)
