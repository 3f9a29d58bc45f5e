"""Sweep results: a record per trial, the table ranking them, and the files a sweep
leaves in its folder. This module alone owns their format:

- ``results.parquet`` and ``results.csv``: :func:`results_table`, best trial first;
- ``best.yaml``: the best trial's TrainConfig, named ``<sweep>_best``, its run under
  the base config's ``runs``, so that ``finegym-ray train --config best.yaml`` trains it anew;
- ``<param>.png``: the metric against each swept value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from ..charts import scatter_png
from ..config import to_yaml
from ..errors import InputError
from ..storage import join, write_bytes, write_parquet, write_text
from ..train.config import TrainConfig
from .config import SweepConfig, trial_config

STATUSES = ("finished", "stopped", "errored", "running", "pending")  # stopped: by ASHA, before its last epoch


@dataclass
class TrialRecord:
    """One trial as Tune left it. ``history``: what training reported, one dict per epoch
    with ``epoch`` (0-based), the metrics of that epoch and ``epoch_s`` (seconds)."""

    trial_id: str
    run: str  # the trial's training run (folder or URI)
    params: dict[str, Any]  # the swept values, by TrainConfig field
    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InputError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")


def results_table(trials: list[TrialRecord], *, metric: str, mode: str, params: list[str]) -> pa.Table:
    """One row per trial: trial_id, status, each of ``params``, best_<metric>,
    best_epoch (counted from 1, as logs and checkpoint folders count), last_<metric>,
    epochs_run, stopped, train_s (seconds), run.
    Best ``best_<metric>`` (in ``mode``) first, then errored trials by it, then trials
    without it. Missing values are null; list values (``blocks``) are JSON text, which
    CSV can hold."""
    best, last = f"best_{metric}", f"last_{metric}"
    rows = []
    for t in trials:
        # A worker restart resumes from a checkpoint and reports the epochs after it
        # again: the newest report of each epoch is the one the run kept.
        epochs = [m for _, m in sorted({m["epoch"]: m for m in t.history}.items())]
        scored = [(m[metric], m["epoch"]) for m in epochs if m.get(metric) is not None and math.isfinite(m[metric])]
        top = (max if mode == "max" else min)(scored, key=lambda s: s[0], default=(None, None))  # ties: earliest
        rows.append({"trial_id": t.trial_id, "status": t.status,
                     **{p: json.dumps(v) if isinstance(v := t.params.get(p), (list, dict)) else v for p in params},
                     best: top[0], "best_epoch": None if top[1] is None else top[1] + 1,
                     last: scored[-1][0] if scored else None,
                     "epochs_run": len(epochs), "stopped": t.status == "stopped",
                     "train_s": float(sum(m.get("epoch_s", 0.0) for m in epochs)), "run": t.run})
    sign = -1 if mode == "max" else 1
    # Errored trials rank after the clean ones: the best must be one that can run again.
    rows.sort(key=lambda r: (r[best] is None, r["status"] == "errored", sign * (r[best] or 0.0), r["trial_id"]))
    types = {"trial_id": pa.string(), "status": pa.string(), best: pa.float64(), "best_epoch": pa.int64(),
             last: pa.float64(), "epochs_run": pa.int64(), "stopped": pa.bool_(), "train_s": pa.float64(),
             "run": pa.string()}
    schema = pa.schema([(c, types[c] if c in types else pa.array([r[c] for r in rows]).type)
                        for c in ("trial_id", "status", *params, *list(types)[2:])])
    return pa.Table.from_pylist(rows, schema=schema)


def best_trial_id(table: pa.Table, *, metric: str) -> str | None:
    """The best trial of ``table`` (as :func:`results_table` sorts it); None when no
    trial that did not error has the metric."""
    top = table.slice(0, 1).to_pylist()
    ok = top and top[0][f"best_{metric}"] is not None and top[0]["status"] != "errored"
    return top[0]["trial_id"] if ok else None


def format_table(table: pa.Table, *, metric: str) -> str:
    """``table`` (as :func:`results_table` sorts it) as aligned text, the best row marked
    ``*``: accuracies in percent, losses to 3 decimals, train_s in seconds."""
    best, last = f"best_{metric}", f"last_{metric}"
    fixed = {"trial_id", "status", best, "best_epoch", last, "epochs_run", "stopped", "train_s", "run"}
    cols = ["trial_id", "status", *(c for c in table.column_names if c not in fixed), best, "best_epoch", last,
            "epochs_run", "train_s"]

    def cell(col: str, v: Any) -> str:
        if v is None:
            return "-"
        if col in (best, last):
            return f"{v:.3f}" if metric.endswith("loss") else f"{v:.1%}"
        if col == "train_s":
            return f"{v:.1f}"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    rows = table.to_pylist()
    cells = [cols] + [[cell(c, r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    top = best_trial_id(table, metric=metric)
    marks = [" "] + ["*" if r["trial_id"] == top else " " for r in rows]
    return "\n".join(mark + " " + "  ".join(text.ljust(w) if i < 2 else text.rjust(w)
                                            for i, (text, w) in enumerate(zip(row, widths)))
                     for mark, row in zip(marks, cells))


def write_results(out: str, trials: list[TrialRecord], *, sweep: SweepConfig, base: TrainConfig) -> dict[str, Any]:
    """Write the files of the module docstring into the folder or URI ``out``; returns
    their URIs: results, csv, best_config (None while no trial has the metric), plots
    (one per swept param with a finished or stopped trial that has the metric)."""
    params = list(sweep.space)
    table = results_table(trials, metric=sweep.metric, mode=sweep.mode, params=params)
    uris: dict[str, Any] = {"results": join(out, "results.parquet"), "csv": join(out, "results.csv"),
                            "best_config": None, "plots": []}
    write_parquet(table, uris["results"])
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    write_bytes(uris["csv"], sink.getvalue().to_pybytes())

    best = f"best_{sweep.metric}"
    score = {r["trial_id"]: r[best] for r in table.select(["trial_id", best]).to_pylist()}
    by_id = {t.trial_id: t for t in trials}
    top = best_trial_id(table, metric=sweep.metric)
    if top is not None:
        uris["best_config"] = join(out, "best.yaml")
        config = trial_config(base, by_id[top].params, runs=base.runs, name=f"{sweep.name}_best",
                              resources=sweep.resources)
        write_text(uris["best_config"], to_yaml(config))

    percent = not sweep.metric.endswith("loss")
    # Errored trials are left out, and running or pending ones, whose best is not final yet.
    drawn = [t for t in trials if t.status in ("finished", "stopped") and score[t.trial_id] is not None]
    for p in params:
        points = [(t.params[p], score[t.trial_id] * (100 if percent else 1), t.status == "stopped")
                  for t in drawn if p in t.params]
        if not points:
            continue
        ((kind, args),) = sweep.space[p].items()
        # A list's values in its own order; numbers on a numeric axis, anything else by name.
        values = args if kind in ("grid", "choice") else [v for v, _, _ in points]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        label = (lambda v: v) if numeric else (lambda v: v if isinstance(v, str) else json.dumps(v))
        png = scatter_png([label(v) for v, _, _ in points], [y for _, y, _ in points], [h for _, _, h in points],
                          title=f"best {sweep.metric} by {p} ({len(points)} trials)", x_label=p,
                          y_label=sweep.metric + (" (%)" if percent else ""), log_x=kind == "loguniform",
                          categories=None if numeric else list(dict.fromkeys(map(label, values))),
                          legend=("finished", "stopped by ASHA"))
        uris["plots"].append(join(out, f"{p}.png"))
        write_bytes(uris["plots"][-1], png)
    return uris
