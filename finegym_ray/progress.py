"""Progress lines: how far, how fast, how long to go. Plain text, no Ray or torch here."""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """``seconds`` as people read it: 42 s, 3 min 5 s, 2 h 07 min."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def rate_eta(done: float, total: float | None, elapsed_s: float, unit: str) -> str:
    """``done/total UNIT, R UNIT/s, ETA T`` (``elapsed_s``: seconds spent on ``done``);
    the ETA assumes the rate so far, and is left out while nothing is done or the total
    is unknown."""
    text = f"{done:g}/{total:g} {unit}" if total else f"{done:g} {unit}"
    if done <= 0 or elapsed_s <= 0:
        return text
    rate = done / elapsed_s
    text += f", {rate:.3g} {unit}/s"
    if total and total > done:
        text += f", ETA {duration((total - done) / rate)}"
    return text


class Ticker:
    """True from :meth:`due` at most once every ``every_s`` seconds (the first time after
    ``every_s``), for progress lines within a long loop."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._next = time.monotonic() + every_s

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        return True


def epoch_line(metrics: dict, *, epochs: int, train_s: float, eta_s: float | None) -> str:
    """The log line of one finished training epoch (``metrics`` as the loop reports them,
    ``epoch`` 0-based and shown from 1): losses, accuracies in percent, clips per second
    of training (``train_s`` seconds), time blocked on input, and the ETA of the run."""
    def pct(key: str) -> str:
        return f"{metrics[key]:.1%}"

    parts = [f"loss {metrics['train_loss']:.3f}"]
    if "train_top1" in metrics:
        parts.append(f"top1 {pct('train_top1')}, mean class {pct('train_mean_class')}")
    if metrics.get("val_loss") is not None:
        parts.append(f"val loss {metrics['val_loss']:.3f}, val top1 {pct('val_top1')}, "
                     f"val mean class {pct('val_mean_class')}")
    clips = metrics.get("train_samples", 0)
    speed = f"{clips} clips in {train_s:.1f} s ({clips / train_s:.3g} clips/s" if train_s > 0 else f"{clips} clips ("
    speed += f", input wait {metrics.get('data_wait_s', 0):.1f} s)"
    parts.append(speed)
    done = f"epoch {metrics['epoch'] + 1}/{epochs}: " + "; ".join(parts)
    if eta_s is not None and metrics["epoch"] + 1 < epochs:
        done += f"; run ETA {duration(eta_s)}"
    return done


# The settings in the one line a command starts with (all of them: in a file).
TRAIN_SETTINGS_SHOWN = ("task", "modality", "model", "segments", "epochs", "batch_size", "lr", "workers",
                        "cpus_per_worker", "use_gpu")
PREPROCESS_SETTINGS_SHOWN = ("short_side", "flow.method", "unit_seconds", "events", "subactions", "workers")


def settings_line(config, keys: tuple[str, ...]) -> str:
    """``key=value`` of the dataclass ``config``'s ``keys`` (dotted for a nested
    dataclass, ``flow.method``), for the one line of settings a command starts with; the
    full settings go to a file whose path that line names."""
    def value(name: str):
        v = config
        for part in name.split("."):
            v = getattr(v, part)
        return "null" if v is None else v

    return " ".join(f"{k}={value(k)}" for k in keys)
