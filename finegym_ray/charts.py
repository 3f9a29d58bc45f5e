"""PNG charts of evaluation results, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

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
