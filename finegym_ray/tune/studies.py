"""The paper's studies (Sec. 4.4) as jobs. Each trains its runs with one grid sweep
(``run_sweep``: resumable, its trials' runs in SWEEPS/<study>/trials/), evaluates every
trial's run with the test protocol and the study's test-time variants (``evaluate``:
RUN/eval/<variant>/, reused where metrics.json exists), and writes a table with 95 %
bootstrap intervals over the validation clips (paired for the differences) and a chart
into SWEEPS/<study>/study/: ``study.parquet``, ``study.csv``, ``study.png``. Each row
says the validation clips its figures are on (``clips``) of the split's labelled keys
(``labelled``): a key whose video is missing has no clip.

- frames (Table 5): TSN trained and tested with each number of segments.
- order (Fig. 6b): TRN, and TSN as the order-blind contrast, on ordered and shuffled
  test frames.
- test_segments (Fig. 6c): TSM and TSN trained with 3 segments, tested with 3 to 12.
- motion (Fig. 6a): per-class accuracy of RGB and flow TSN.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from .. import storage
from ..charts import interval_png
from ..config import from_dict, parse_yaml
from ..errors import InputError
from ..metrics import bootstrap, interval, mean_class_accuracy, per_class_accuracy, top1_accuracy
from ..preprocess.config import PreprocessConfig
from ..store import summary_uri
from ..synth.config import SynthConfig
from ..train.config import TrainConfig
from ..train.evaluate import evaluate, variant_name
from .config import SweepConfig
from .results import TrialRecord
from .sweep import run_sweep

# Table 5 of the paper: TSN (RGB) on Gym99, mean class accuracy by training segments.
PAPER_FRAMES = {1: 0.3546, 3: 0.614, 5: 0.708, 7: 0.744, 12: 0.7882}
TEST_SEGMENTS = (3, 5, 7, 9, 12)
SAMPLES = 1000  # bootstrap resamplings of the validation clips
METRICS = ("mean_class", "top1")


def scores_of(run: str, *, segments: int | None = None, shuffle_frames: bool = False,
              say: Callable[[str], None] = print) -> tuple[pa.Table, dict]:
    """``run``'s scores.parquet (key, label, scores) and metrics.json under the test
    variant, evaluated first unless its metrics.json exists (written last, so a crashed
    evaluation reruns) and says how many keys are labelled (one written by an older
    version does not)."""
    out = storage.join(run, "eval", variant_name(segments, shuffle_frames))
    uri = storage.join(out, "metrics.json")
    if not storage.exists(uri) or "labelled" not in json.loads(storage.read_text(uri)):
        evaluate(run, segments=segments, shuffle_frames=shuffle_frames, say=say)
    return storage.read_parquet(storage.join(out, "scores.parquet")), json.loads(storage.read_text(uri))


def scored_run(run: str, samples: int, *, segments: int | None = None, shuffle_frames: bool = False,
               say: Callable[[str], None] = print) -> Scored:
    """:class:`Scored` of ``run``'s evaluation under the test variant (``scores_of``)."""
    table, metrics = scores_of(run, segments=segments, shuffle_frames=shuffle_frames, say=say)
    return Scored(table, samples, labelled=metrics["labelled"])


class Scored:
    """One evaluation's point metrics and bootstrap draws (same seed for every
    evaluation, so that two of the same clips pair up); ``labelled``: the split's
    labelled keys, of which the table's are those with a clip (None: as many)."""

    def __init__(self, table: pa.Table, samples: int = SAMPLES, labelled: int | None = None):
        self.keys = table.column("key").to_pylist()
        scores = np.stack(table.column("scores").to_numpy(zero_copy_only=False)).astype(np.float64)
        self.labels = table.column("label").to_numpy()
        self.classes = scores.shape[1]  # the classes the model chooses among
        y = self.labels
        self.point = {"mean_class": mean_class_accuracy(scores, y), "top1": top1_accuracy(scores, y),
                      "per_class": per_class_accuracy(scores, y)}
        self.draws = bootstrap(scores, self.labels, samples=samples)
        self.labelled = len(self.labels) if labelled is None else labelled

    def fields(self, prefix: str = "") -> dict[str, Any]:
        """clips, the split's labelled keys, then each metric with its interval:
        ``mean_class``, ``mean_class_lo``, ..."""
        out: dict[str, Any] = {f"{prefix}clips": len(self.labels), f"{prefix}labelled": self.labelled}
        for m in METRICS:
            out.update(_with_interval(f"{prefix}{m}", self.point[m], self.draws[m]))
        return out

    def diff(self, base: Scored, prefix: str = "diff_") -> dict[str, Any]:
        """This minus ``base`` for each metric, with the paired interval."""
        if self.keys != base.keys:
            raise InputError("a paired difference needs the same validation clips in both evaluations")
        out: dict[str, Any] = {}
        for m in METRICS:
            out.update(_with_interval(f"{prefix}{m}", self.point[m] - base.point[m], self.draws[m] - base.draws[m]))
        return out


def _with_interval(name: str, point: float, draws: np.ndarray) -> dict[str, float]:
    lo, hi = interval(draws)
    return {name: float(point), f"{name}_lo": lo, f"{name}_hi": hi}


# Table builders: evaluations in, one pyarrow table out (no Ray; tested on made-up scores).

def frames_table(scored: dict[int, Scored]) -> pa.Table:
    """One row per trained (and tested) segment count, with the paper's Gym99 figure."""
    return pa.Table.from_pylist([{"segments": n, **s.fields(), "paper_gym99_mean_class": PAPER_FRAMES.get(n)}
                                 for n, s in sorted(scored.items())])


def order_table(scored: dict[str, tuple[Scored, Scored]]) -> pa.Table:
    """Per model (ordered, shuffled) evaluations: a row each, the shuffled row with its
    difference to the ordered one (shuffled minus ordered)."""
    rows = []
    for model, (ordered, shuffled) in scored.items():
        rows.append({"model": model, "test": "ordered", **ordered.fields(), **_no_diff()})
        rows.append({"model": model, "test": "shuffled", **shuffled.fields(), **shuffled.diff(ordered)})
    return pa.Table.from_pylist(rows)


def test_segments_table(scored: dict[str, dict[int, Scored]], trained: int) -> pa.Table:
    """Per model, a row per test segment count, with its difference to testing as
    trained (``trained`` segments; that row's difference is 0)."""
    return pa.Table.from_pylist([{"model": model, "trained_segments": trained, "test_segments": n, **s.fields(),
                                  **s.diff(by_count[trained])}
                                 for model, by_count in scored.items() for n, s in sorted(by_count.items())])


def motion_table(rgb: Scored, flow: Scored, class_names: list[str]) -> pa.Table:
    """A row per class present in the clips: its RGB and flow accuracy (recall) and
    flow minus RGB, with intervals; a first row (class null) with the mean class accuracy
    and the split's labelled keys (``labelled``, null on the rows of a class)."""
    if rgb.keys != flow.keys:
        raise InputError("RGB and flow evaluations must cover the same validation clips")

    def metric(s: Scored, c: int | None) -> tuple[float, np.ndarray]:  # class c's recall; None: mean class
        return (s.point["mean_class"], s.draws["mean_class"]) if c is None else \
            (s.point["per_class"][c], s.draws["per_class"][:, c])

    rows = []
    for c in [None, *(c for c in range(len(class_names)) if np.isfinite(rgb.point["per_class"][c]))]:
        (pr, dr), (pf, df) = metric(rgb, c), metric(flow, c)
        rows.append({"class": c, "name": "all (mean class)" if c is None else class_names[c],
                     "clips": len(rgb.labels) if c is None else int((rgb.labels == c).sum()),
                     "labelled": rgb.labelled if c is None else None,
                     **_with_interval("rgb", pr, dr), **_with_interval("flow", pf, df),
                     **_with_interval("flow_minus_rgb", pf - pr, df - dr)})
    return pa.Table.from_pylist(rows)


def _no_diff() -> dict[str, None]:
    return {f"diff_{m}{s}": None for m in METRICS for s in ("", "_lo", "_hi")}


# The studies: finished trials in, (table, PNG) out.

def _value(trial: TrialRecord, base: TrainConfig, key: str) -> Any:
    return trial.params.get(key, getattr(base, key))


def _series(table: pa.Table, where: Callable[[dict], bool], metric: str = "mean_class") -> list[tuple]:
    return [tuple(100 * (r[k] if r[k] is not None else np.nan) for k in (metric, f"{metric}_lo", f"{metric}_hi"))
            for r in table.to_pylist() if where(r)]


def frames(trials, base, *, samples, say, **_) -> tuple[pa.Table, bytes]:
    table = frames_table({_value(t, base, "segments"): scored_run(t.run, samples, say=say) for t in trials})
    counts = table.column("segments").to_pylist()
    paper = [(100 * PAPER_FRAMES[n], np.nan, np.nan) if n in PAPER_FRAMES else (np.nan,) * 3 for n in counts]
    png = interval_png([str(n) for n in counts], {base.task: _series(table, lambda r: True), "paper (Gym99)": paper},
                       title=f"TSN mean class accuracy by segments ({base.modality}, {base.task})",
                       x_label="segments (trained and tested)", y_label="mean class (%)")
    return table, png


def order(trials, base, *, samples, say, **_) -> tuple[pa.Table, bytes]:
    scored = {_value(t, base, "model"): (scored_run(t.run, samples, say=say),
                                         scored_run(t.run, samples, shuffle_frames=True, say=say))
              for t in trials}
    table = order_table(scored)
    models = list(dict.fromkeys(table.column("model").to_pylist()))
    # A guess among k classes scores 1/k mean class accuracy: shuffled frames that fall to
    # it have lost everything the model saw.
    chance = 100.0 / next(iter(scored.values()))[0].classes
    png = interval_png(models, {test: _series(table, lambda r, test=test: r["test"] == test)
                                for test in ("ordered", "shuffled")},
                       title=f"ordered against shuffled test frames ({base.task})", x_label="model",
                       y_label="mean class (%)", lines=False, reference=(f"chance {chance:.3g} %", chance))
    return table, png


def test_segments(trials, base, *, samples, say, test_segments=TEST_SEGMENTS, **_) -> tuple[pa.Table, bytes]:
    trained = {_value(t, base, "segments") for t in trials}
    if len(trained) != 1:
        raise InputError(f"test_segments compares models trained with one number of segments, got {sorted(trained)}")
    (n_trained,) = trained
    counts = sorted({n_trained, *test_segments})
    scored = {_value(t, base, "model"): {n: scored_run(t.run, samples, segments=None if n == n_trained else n, say=say)
                                         for n in counts} for t in trials}
    table = test_segments_table(scored, n_trained)
    png = interval_png([str(n) for n in counts], {m: _series(table, lambda r, m=m: r["model"] == m) for m in scored},
                       title=f"trained with {n_trained} segments, tested with N ({base.task})",
                       x_label="test segments", y_label="mean class (%)")
    return table, png


def motion(trials, base, *, samples, say, **_) -> tuple[pa.Table, bytes]:
    by_modality = {_value(t, base, "modality"): t for t in trials}
    if set(by_modality) != {"rgb", "flow"}:
        raise InputError(f"motion compares an rgb and a flow run, got {sorted(by_modality)}")
    rgb, flow = (scored_run(by_modality[m].run, samples, say=say) for m in ("rgb", "flow"))
    metrics = json.loads(storage.read_text(storage.join(by_modality["rgb"].run, "eval", "metrics.json")))
    table = motion_table(rgb, flow, [c["name"] for c in metrics["per_class"]])
    classes = ["all" if c is None else name for c, name in zip(table.column("class").to_pylist(),
                                                                 table.column("name").to_pylist())]
    png = interval_png(classes, {m: _series(table, lambda r: True, m) for m in ("rgb", "flow")},
                       title=f"per-class accuracy, RGB against flow TSN ({base.task})", x_label="class",
                       y_label="accuracy (%)", lines=False)
    return table, png


class TrialsFailed(RuntimeError):
    """A study's sweep left trials unfinished (errored), so its table would have holes."""


STUDIES = {"frames": frames, "order": order, "test_segments": test_segments, "motion": motion}


def run_study(name: str, sweep: SweepConfig, base: TrainConfig, *, test_segments: tuple[int, ...] = TEST_SEGMENTS,
              samples: int = SAMPLES, break_lease: bool = False, say: Callable[[str], None] = print) -> dict:
    """Run (or resume) study ``name`` (a key of STUDIES) as ``sweep`` from ``base`` on
    the Ray cluster this process is connected to. Returns ``table`` (pyarrow),
    ``outputs`` (URIs of study.parquet, study.csv, study.png) and ``sweep`` (run_sweep's
    result). Raises RuntimeError when a trial did not finish."""
    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    result = run_sweep(sweep, base, break_lease=break_lease, say=say)
    unfinished = [f"{t.trial_id} ({t.status})" for t in result["trials"] if t.status != "finished"]
    if unfinished:
        raise TrialsFailed(f"study {name}: trials did not finish: {', '.join(unfinished)} (see {result['folder']})")
    table, png = STUDIES[name](result["trials"], base, samples=samples, say=say, test_segments=test_segments)
    out = storage.join(result["folder"], "study")
    outputs = {"table": storage.join(out, "study.parquet"), "csv": storage.join(out, "study.csv"),
               "chart": storage.join(out, "study.png")}
    storage.write_parquet(table, outputs["table"])
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    storage.write_bytes(outputs["csv"], sink.getvalue().to_pybytes())
    storage.write_bytes(outputs["chart"], png)
    return {"table": table, "outputs": outputs, "sweep": result}


def format_study(table: pa.Table) -> str:
    """``table`` as aligned text: a metric with ``_lo``/``_hi`` columns as
    ``61.4 [58.2, 64.5]`` (percent), other floats in percent, the rest as they are."""
    names = table.column_names
    cols = [c for c in names if not (c.endswith(("_lo", "_hi")) and c[:-3] in names)]

    def cell(row: dict, c: str) -> str:
        v = row[c]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        if not isinstance(v, float):
            return str(v)
        if f"{c}_lo" in names and row[f"{c}_lo"] is not None:
            return f"{100 * v:.1f} [{100 * row[f'{c}_lo']:.1f}, {100 * row[f'{c}_hi']:.1f}]"
        return f"{100 * v:.1f}"

    rows = [cols] + [[cell(r, c) for c in cols] for r in table.to_pylist()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(t.rjust(w) for t, w in zip(r, widths)) for r in rows)


STORE_MARKER = "study_store.yaml"
STORE_MADE_BY = "finegym-ray study"


def store_settings(path: str) -> tuple[SynthConfig, PreprocessConfig]:
    """The ``synth`` and ``preprocess`` sections of a study store file (configs/studies/syngym/store.yaml)."""
    data = parse_yaml(storage.read_text(path)) or {}
    unknown = set(data) - {"synth", "preprocess"}
    if unknown:
        raise InputError(f"{path}: unknown sections {', '.join(sorted(unknown))}; expected synth, preprocess")
    return (from_dict(SynthConfig, data.get("synth") or {}, f"{path}: synth"),
            from_dict(PreprocessConfig, data.get("preprocess") or {}, f"{path}: preprocess"))


def make_study_store(store: str, synth: SynthConfig, preprocess: PreprocessConfig, *,
                     say: Callable[[str], None] = print) -> str:
    """Make the SynGym store the study preset trains on, unless it is there: SynGym in
    STORE/../syngym (videos rendered as Ray tasks), clips in ``store`` (a local folder),
    marked with STORE_MARKER. Refuses (ValueError) a non-empty ``store`` without the
    mark, or one made with other settings, which the studies' runs were trained on."""
    from ..demo import ray_map, synth_is_current
    from ..preprocess.pipeline import run_preprocess
    from ..progress import rate_eta
    from ..synth.generate import generate

    mine = {"made_by": STORE_MADE_BY, "synth": asdict(synth), "preprocess": asdict(preprocess)}
    marker = storage.join(store, STORE_MARKER)
    try:
        record = parse_yaml(storage.read_text(marker))
    except FileNotFoundError:
        record = None
    if record is None and storage.list_uris(store):
        raise InputError(f"{store} is not empty and was not made by the study preset (no {STORE_MARKER}): "
                         f"give --data STORE or another train.data")
    if record is not None and record != mine:
        raise InputError(f"{store} was made with other synth or preprocess settings than {STORE_MARKER} records: "
                         f"delete it to make it anew, or give --data")
    if record is not None and storage.exists(summary_uri(store)):
        return store
    data = os.path.join(os.path.dirname(os.path.abspath(store)), "syngym")
    storage.write_text(marker, yaml.safe_dump(mine, sort_keys=False))
    if not synth_is_current(data, synth):
        # Minutes at the syngym preset on 2 cores: said, with progress, not silent.
        say(f"rendering SynGym into {data} as Ray tasks ({synth.videos} videos; once: later studies reuse it)")
        t0 = time.monotonic()

        def progress(done: int, total: int) -> None:
            say(rate_eta(done, total, time.monotonic() - t0, "videos"))

        say(generate(synth, data, map_fn=lambda fn, *it: ray_map(fn, *it, progress=progress)).describe())
    say(f"cutting clips into {store}")
    run_preprocess(preprocess, os.path.join(data, "annotations"), os.path.join(data, "videos"), store, prune=True,
                   say=say)
    return store
