"""The paper's studies (Sec. 4.4) as jobs. Each trains its runs with one grid sweep per
training seed (``run_sweep``: resumable, its trials' runs in SWEEPS/<study>/trials/, the
k-th extra seed's in SWEEPS/<study>_seed<k>/trials/), evaluates every trial's run with
the test protocol and the study's test-time variants (``evaluate``: RUN/eval/<variant>/,
reused where metrics.json exists), and writes a table and a chart into
SWEEPS/<study>/study/: ``study.parquet``, ``study.csv``, ``study.png``. Each figure is
the mean over the seeds (``seeds``; each seed's value in ``<figure>_by_seed``) with a
95 % interval over seeds and validation clips (``metrics.over_seeds``: a bootstrap over
the clips, paired for the differences, which are taken seed by seed). Each row says the
validation clips its figures are on (``clips``) of the split's labelled keys
(``labelled``): a key whose video is missing has no clip.

- frames (Table 5): TSN trained and tested with each number of segments.
- order (Fig. 6b): TRN, and TSN as the order-blind contrast, on ordered and shuffled
  test frames.
- test_segments (Fig. 6c): TSM and TSN trained with 3 segments, tested with 3 to 12.
- motion (Fig. 6a): per-class accuracy of RGB and flow TSN.
- pretraining (Fig. 6d): per-class accuracy of I3D initialised from Kinetics and from
  ImageNet (2-D weights inflated): the two values of its ``pretrained`` grid, in that
  order; ``study:TASK`` stands for weights the study trains first on TASK.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from .. import storage
from ..charts import interval_png
from ..config import changed_settings, from_dict, parse_yaml
from ..dataset.labels import TASK_NAMES
from ..errors import InputError
from ..metrics import bootstrap, interval, mean_class_accuracy, over_seeds, per_class_accuracy, top1_accuracy
from ..preprocess.config import PreprocessConfig
from ..store import summary_uri
from ..synth.config import SynthConfig
from ..train.config import TrainConfig, absolute_uri
from ..train.evaluate import evaluate, variant_name
from .config import SweepConfig, seed_sweeps, trial_config
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


class Seeds:
    """One configuration under one test variant: its evaluations, one per training seed
    (in seed order), all on the same validation clips. Its figures are means over the
    seeds with a 95 % interval over seeds and clips (``metrics.over_seeds``); with one
    seed, that evaluation's figures and its interval over the clips."""

    def __init__(self, scored: Sequence[Scored]):
        if not scored:
            raise InputError("a configuration needs at least one evaluation")
        if any(s.keys != scored[0].keys for s in scored):
            raise InputError("every seed of a configuration must be evaluated on the same validation clips")
        self.scored = list(scored)
        self.keys, self.labels = scored[0].keys, scored[0].labels
        self.labelled, self.classes = scored[0].labelled, scored[0].classes

    def values(self, metric: str, c: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each seed's ``metric`` (``per_class``: class ``c``'s recall) and its bootstrap
        draws: (S,) and (S, B)."""
        if c is None:
            return (np.array([s.point[metric] for s in self.scored]),
                    np.stack([s.draws[metric] for s in self.scored]))
        return (np.array([s.point[metric][c] for s in self.scored]),
                np.stack([s.draws[metric][:, c] for s in self.scored]))

    def fields(self) -> dict[str, Any]:
        """clips, the split's labelled keys, seeds, then each metric as :func:`_summary`
        gives it: ``mean_class``, ``mean_class_lo``, ``mean_class_hi``, ``mean_class_by_seed``, ..."""
        out: dict[str, Any] = {"clips": len(self.labels), "labelled": self.labelled, "seeds": len(self.scored)}
        for m in METRICS:
            out.update(_summary(m, *self.values(m)))
        return out

    def diff(self, base: Seeds, prefix: str = "diff_") -> dict[str, Any]:
        """This minus ``base`` for each metric: seed by seed (seed k of both), then
        summarised as :func:`_summary` does; the clips paired, so their interval is the
        paired one."""
        if self.keys != base.keys:
            raise InputError("a paired difference needs the same validation clips in both evaluations")
        if len(self.scored) != len(base.scored):
            raise InputError(f"a paired difference needs as many seeds on both sides, got "
                             f"{len(self.scored)} and {len(base.scored)}")
        out: dict[str, Any] = {}
        for m in METRICS:
            (p, d), (base_p, base_d) = self.values(m), base.values(m)
            out.update(_summary(f"{prefix}{m}", p - base_p, d - base_d))
        return out


def _summary(name: str, points: np.ndarray, draws: np.ndarray) -> dict[str, Any]:
    """``name``: the mean of the seeds' ``points``; ``name_lo``, ``name_hi``: its 95 %
    interval over seeds and clips from their ``draws``; ``name_by_seed``: each seed's."""
    mean, combined = over_seeds(points, draws)
    lo, hi = interval(combined)
    return {name: mean, f"{name}_lo": lo, f"{name}_hi": hi, f"{name}_by_seed": [float(v) for v in points]}


# Table builders: evaluations in, one pyarrow table out (no Ray; tested on made-up scores).

def frames_table(scored: dict[int, Seeds]) -> pa.Table:
    """One row per trained (and tested) segment count, with the paper's Gym99 figure."""
    return pa.Table.from_pylist([{"segments": n, **s.fields(), "paper_gym99_mean_class": PAPER_FRAMES.get(n)}
                                 for n, s in sorted(scored.items())])


def order_table(scored: dict[str, tuple[Seeds, Seeds]]) -> pa.Table:
    """Per model (ordered, shuffled) evaluations: a row each, the shuffled row with its
    difference to the ordered one (shuffled minus ordered)."""
    rows = []
    for model, (ordered, shuffled) in scored.items():
        rows.append({"model": model, "test": "ordered", **ordered.fields(), **_no_diff()})
        rows.append({"model": model, "test": "shuffled", **shuffled.fields(), **shuffled.diff(ordered)})
    return pa.Table.from_pylist(rows)


def test_segments_table(scored: dict[str, dict[int, Seeds]], trained: int) -> pa.Table:
    """Per model, a row per test segment count, with its difference to testing as
    trained (``trained`` segments; that row's difference is 0)."""
    return pa.Table.from_pylist([{"model": model, "trained_segments": trained, "test_segments": n, **s.fields(),
                                  **s.diff(by_count[trained])}
                                 for model, by_count in scored.items() for n, s in sorted(by_count.items())])


def motion_table(rgb: Seeds, flow: Seeds, class_names: list[str]) -> pa.Table:
    """A row per class present in the clips: its RGB and flow accuracy (recall) and
    flow minus RGB (seed by seed), with intervals; a first row (class null) with the
    mean class accuracy and the split's labelled keys (``labelled``, null on the rows of
    a class)."""
    return per_class_table({"rgb": rgb, "flow": flow}, ("flow", "rgb"), class_names)


def pretraining_table(kinetics: Seeds, imagenet: Seeds, class_names: list[str]) -> pa.Table:
    """As :func:`motion_table`, for I3D initialised from Kinetics (``kinetics``) and from
    ImageNet (``imagenet``), and ``kinetics_minus_imagenet``."""
    return per_class_table({"kinetics": kinetics, "imagenet": imagenet}, ("kinetics", "imagenet"), class_names)


def per_class_table(configs: dict[str, Seeds], minus: tuple[str, str], class_names: list[str]) -> pa.Table:
    """A row per class present in the clips: the accuracy (recall) of each of the two
    ``configs`` (name -> evaluations, a column each) and A_minus_B for ``minus`` = (A, B),
    seed by seed, with intervals; a first row (class null) with the mean class accuracy
    and the split's labelled keys (``labelled``, null on the rows of a class)."""
    (name_a, a), (name_b, b) = ((m, configs[m]) for m in minus)
    names = " and ".join(configs)
    if a.keys != b.keys:
        raise InputError(f"{names} evaluations must cover the same validation clips")
    if len(a.scored) != len(b.scored):
        raise InputError(f"{names} need as many seeds, got {[len(s.scored) for s in configs.values()]}")

    def metric(s: Seeds, c: int | None) -> tuple[np.ndarray, np.ndarray]:  # class c's recall; None: mean class
        return s.values("mean_class") if c is None else s.values("per_class", c)

    rows = []
    for c in [None, *(int(c) for c in np.unique(a.labels))]:
        row = {"class": c, "name": "all (mean class)" if c is None else class_names[c],
               "clips": len(a.labels) if c is None else int((a.labels == c).sum()),
               "labelled": a.labelled if c is None else None, "seeds": len(a.scored)}
        for name, s in configs.items():
            row.update(_summary(name, *metric(s, c)))
        (p_a, d_a), (p_b, d_b) = metric(a, c), metric(b, c)
        rows.append({**row, **_summary(f"{name_a}_minus_{name_b}", p_a - p_b, d_a - d_b)})
    return pa.Table.from_pylist(rows)


def _no_diff() -> dict[str, None]:
    return {f"diff_{m}{s}": None for m in METRICS for s in ("", "_lo", "_hi", "_by_seed")}


# The studies: finished trials in (a list per seed, in seed order), (table, PNG) out.

def _value(trial: TrialRecord, base: TrainConfig, key: str) -> Any:
    return trial.params.get(key, getattr(base, key))


def _configs(seeds: list[list[TrialRecord]], base: TrainConfig, key: str) -> dict[Any, list[TrialRecord]]:
    """The trials by their value of ``key`` (in the first seed's order), each value's
    trials one per seed in seed order."""
    by_value: dict[Any, list[TrialRecord]] = {}
    for trials in seeds:
        for t in trials:
            by_value.setdefault(_value(t, base, key), []).append(t)
    uneven = {v: len(ts) for v, ts in by_value.items() if len(ts) != len(seeds)}
    if uneven:
        raise InputError(f"every {key} needs one trial per seed ({len(seeds)}), got {uneven}")
    return by_value


def _seeds(trials: list[TrialRecord], samples: int, *, say: Callable[[str], None], **variant: Any) -> Seeds:
    """:class:`Seeds` of the trials' runs (one per seed) under the test ``variant``."""
    return Seeds([scored_run(t.run, samples, say=say, **variant) for t in trials])


def _series(table: pa.Table, where: Callable[[dict], bool], metric: str = "mean_class") -> list[tuple]:
    return [tuple(100 * (r[k] if r[k] is not None else np.nan) for k in (metric, f"{metric}_lo", f"{metric}_hi"))
            for r in table.to_pylist() if where(r)]


def _by_seed(table: pa.Table, where: Callable[[dict], bool], metric: str = "mean_class") -> list[list[float]]:
    return [[100 * v for v in r[f"{metric}_by_seed"]] for r in table.to_pylist() if where(r)]


def _on_seeds(table: pa.Table) -> str:
    """What a chart's title says of its seeds: ``1 seed``, ``3 seeds``."""
    n = max(table.column("seeds").to_pylist())
    return f"{n} seed{'s' * (n > 1)}"


def frames(seeds, base, *, samples, say, **_) -> tuple[pa.Table, bytes]:
    table = frames_table({n: _seeds(ts, samples, say=say) for n, ts in _configs(seeds, base, "segments").items()})
    counts = table.column("segments").to_pylist()
    paper = [(100 * PAPER_FRAMES[n], np.nan, np.nan) if n in PAPER_FRAMES else (np.nan,) * 3 for n in counts]
    png = interval_png([str(n) for n in counts], {base.task: _series(table, lambda r: True), "paper (Gym99)": paper},
                       title=f"TSN mean class accuracy by segments ({base.modality}, {base.task}; {_on_seeds(table)})",
                       x_label="segments (trained and tested)", y_label="mean class (%)",
                       seeds={base.task: _by_seed(table, lambda r: True)})
    return table, png


def order(seeds, base, *, samples, say, **_) -> tuple[pa.Table, bytes]:
    scored = {model: (_seeds(ts, samples, say=say), _seeds(ts, samples, shuffle_frames=True, say=say))
              for model, ts in _configs(seeds, base, "model").items()}
    table = order_table(scored)
    models = list(dict.fromkeys(table.column("model").to_pylist()))
    # A guess among k classes scores 1/k mean class accuracy: shuffled frames that fall to
    # it have lost everything the model saw.
    chance = 100.0 / next(iter(scored.values()))[0].classes
    tests = ("ordered", "shuffled")
    png = interval_png(models, {test: _series(table, lambda r, test=test: r["test"] == test) for test in tests},
                       title=f"ordered against shuffled test frames ({base.task}; {_on_seeds(table)})",
                       x_label="model", y_label="mean class (%)", lines=False,
                       reference=(f"chance {chance:.3g} %", chance),
                       seeds={test: _by_seed(table, lambda r, test=test: r["test"] == test) for test in tests})
    return table, png


def test_segments(seeds, base, *, samples, say, test_segments=TEST_SEGMENTS, **_) -> tuple[pa.Table, bytes]:
    trained = {_value(t, base, "segments") for ts in seeds for t in ts}
    if len(trained) != 1:
        raise InputError(f"test_segments compares models trained with one number of segments, got {sorted(trained)}")
    (n_trained,) = trained
    counts = sorted({n_trained, *test_segments})
    scored = {model: {n: _seeds(ts, samples, segments=None if n == n_trained else n, say=say) for n in counts}
              for model, ts in _configs(seeds, base, "model").items()}
    table = test_segments_table(scored, n_trained)
    png = interval_png([str(n) for n in counts], {m: _series(table, lambda r, m=m: r["model"] == m) for m in scored},
                       title=f"trained with {n_trained} segments, tested with N ({base.task}; {_on_seeds(table)})",
                       x_label="test segments", y_label="mean class (%)",
                       seeds={m: _by_seed(table, lambda r, m=m: r["model"] == m) for m in scored})
    return table, png


def motion(seeds, base, *, samples, say, **_) -> tuple[pa.Table, bytes]:
    by_modality = _configs(seeds, base, "modality")
    if set(by_modality) != {"rgb", "flow"}:
        raise InputError(f"motion compares an rgb and a flow run, got {sorted(by_modality)}")
    rgb, flow = (_seeds(by_modality[m], samples, say=say) for m in ("rgb", "flow"))
    table = motion_table(rgb, flow, _class_names(by_modality["rgb"][0].run))
    return table, _per_class_png(table, ("rgb", "flow"),
                                 f"per-class accuracy, RGB against flow TSN ({base.task}; {_on_seeds(table)})")


def pretraining(seeds, base, *, sweep, samples, say, **_) -> tuple[pa.Table, bytes]:
    kinetics_weights, imagenet_weights = pretraining_grid(sweep)
    by_weights = _configs(seeds, base, "pretrained")
    if set(by_weights) != {kinetics_weights, imagenet_weights}:
        raise InputError(f"pretraining compares the runs of its two initialisations, got "
                         f"{sorted(map(str, by_weights))}")
    kinetics, imagenet = (_seeds(by_weights[w], samples, say=say) for w in (kinetics_weights, imagenet_weights))
    table = pretraining_table(kinetics, imagenet, _class_names(by_weights[kinetics_weights][0].run))
    return table, _per_class_png(table, ("kinetics", "imagenet"),
                                 f"per-class accuracy, {base.model} from Kinetics against ImageNet "
                                 f"({base.task}; {_on_seeds(table)})")


def _class_names(run: str) -> list[str]:
    """The class names of ``run``'s task, as its evaluation's metrics.json lists them."""
    metrics = json.loads(storage.read_text(storage.join(run, "eval", "metrics.json")))
    return [c["name"] for c in metrics["per_class"]]


def _per_class_png(table: pa.Table, series: tuple[str, str], title: str) -> bytes:
    """A per-class table's chart: each of the ``series`` columns per class, by name."""
    classes = ["all" if c is None else name for c, name in zip(table.column("class").to_pylist(),
                                                                 table.column("name").to_pylist())]
    return interval_png(classes, {m: _series(table, lambda r: True, m) for m in series}, title=title,
                        x_label="class", y_label="accuracy (%)", lines=False,
                        seeds={m: _by_seed(table, lambda r: True, m) for m in series})


# The pretraining study's initialisations: its ``pretrained`` grid, Kinetics's weights
# then ImageNet's. A value ``study:TASK`` names weights that the study trains first, from
# the base config on TASK (SynGym's stand-in for Kinetics, which no fresh clone holds).
INITIALISATIONS = ("kinetics", "imagenet")
TRAINED_FIRST = "study:"


def pretraining_grid(sweep: SweepConfig) -> list[Any]:
    """The two values of the pretraining study's ``pretrained`` grid (Kinetics's weights,
    ImageNet's: a local path, s3://, ``study:TASK`` or null for none); InputError for a
    space that is not such a grid, or an unknown TASK."""
    grid = sweep.space.get("pretrained", {}).get("grid")
    if set(sweep.space) != {"pretrained"} or not isinstance(grid, list) or len(grid) != 2 or grid[0] == grid[1]:
        raise InputError(f"pretraining compares two initialisations: space.pretrained.grid=[KINETICS, IMAGENET] "
                         f"(weights, local or s3://; study:TASK: weights the study trains first on TASK; null: "
                         f"none), got space {sweep.space}")
    for value in grid:
        if isinstance(value, str) and value.startswith(TRAINED_FIRST) \
                and value.removeprefix(TRAINED_FIRST) not in TASK_NAMES:
            raise InputError(f"pretraining: {value} names no task; tasks: {', '.join(TASK_NAMES)}")
    return list(grid)


def with_initialisations(sweep: SweepConfig, base: TrainConfig, *, break_lease: bool = False,
                         say: Callable[[str], None] = print) -> SweepConfig:
    """``sweep`` with its ``pretrained`` grid as every trial can read it: ``study:TASK``
    trained first (:func:`trained_first`) and replaced by its weights' URI, a local path
    made absolute (trials run in folders of their own). InputError for weights that are
    not there, before anything trains."""
    grid = pretraining_grid(sweep)
    for which, value in zip(INITIALISATIONS, grid):
        if value and not value.startswith(TRAINED_FIRST) and not storage.exists(absolute_uri(value)):
            raise InputError(f"pretraining: the {which} weights {value} are not there; give both with "
                             f"--set space.pretrained.grid=[KINETICS,IMAGENET] (local paths or s3://)")
    values = []
    for which, value in zip(INITIALISATIONS, grid):
        if value and value.startswith(TRAINED_FIRST):
            value = trained_first(sweep, base, value.removeprefix(TRAINED_FIRST), break_lease=break_lease, say=say)
        elif value:
            value = absolute_uri(value)
        say(f"{which} initialisation: {value or 'none (random)'}")
        values.append(value)
    return replace(sweep, space={"pretrained": {**sweep.space["pretrained"], "grid": values}})


def trained_first(sweep: SweepConfig, base: TrainConfig, task: str, *, break_lease: bool = False,
                  say: Callable[[str], None] = print) -> str:
    """URI of the weights (its last checkpoint's state.pt) of ``base`` trained on ``task``
    with a trial's resources, as run SWEEPS/<study>_source/<task>: trained, or resumed,
    unless it has run all its epochs. One run for every seed of the study."""
    from ..train import checkpoint as checkpoints
    from ..train.run import run_training

    runs = absolute_uri(storage.join(sweep.sweeps, f"{sweep.name}_source"))
    config = trial_config(base, {"task": task}, runs=runs, name=task, resources=sweep.resources)
    run = storage.join(runs, task)
    last = checkpoints.find_latest(run)
    if last is None or len(last.meta["history"]) < config.epochs:
        say(f"training the weights the study starts from: {base.model} on {task}, run {run}")
        run_training(config, break_lease=break_lease, say=say)
        last = checkpoints.find_latest(run)
    return storage.join(last.uri, "state.pt")


class TrialsFailed(RuntimeError):
    """A study's sweep left trials unfinished (errored), so its table would have holes."""


STUDIES = {"frames": frames, "order": order, "test_segments": test_segments, "motion": motion,
           "pretraining": pretraining}


def check_study(name: str, sweep: SweepConfig) -> None:
    """Refuse, before Ray starts, a sweep that study ``name`` cannot compare (InputError)."""
    if name == "pretraining":
        pretraining_grid(sweep)


def run_study(name: str, sweep: SweepConfig, base: TrainConfig, *, test_segments: tuple[int, ...] = TEST_SEGMENTS,
              samples: int = SAMPLES, break_lease: bool = False, say: Callable[[str], None] = print) -> dict:
    """Run (or resume) study ``name`` (a key of STUDIES) as ``sweep`` from ``base`` on
    the Ray cluster this process is connected to: a sweep per seed (``seed_sweeps``),
    then the evaluations (pretraining: first its initialisations,
    ``with_initialisations``). Returns ``table`` (pyarrow), ``outputs`` (URIs of
    study.parquet, study.csv, study.png, in the first seed's sweep folder), ``sweeps``
    (run_sweep's result per seed, in seed order) and ``sweep`` (the first of them).
    Raises TrialsFailed (a RuntimeError) when a trial did not finish."""
    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    if name == "pretraining":
        sweep = with_initialisations(sweep, base, break_lease=break_lease, say=say)
    results = []
    for k, (one, seeded) in enumerate(seed_sweeps(sweep, base)):
        if sweep.seeds > 1:
            say(f"seed {seeded.seed} ({k + 1} of {sweep.seeds}): sweep {one.name}")
        results.append(run_sweep(one, seeded, break_lease=break_lease, say=say))
    unfinished = [f"{t.trial_id} ({t.status})" for r in results for t in r["trials"] if t.status != "finished"]
    if unfinished:
        folders = ", ".join(r["folder"] for r in results)
        raise TrialsFailed(f"study {name}: trials did not finish: {', '.join(unfinished)} (see {folders})")
    table, png = STUDIES[name]([r["trials"] for r in results], base, sweep=sweep, samples=samples, say=say,
                               test_segments=test_segments)
    out = storage.join(results[0]["folder"], "study")
    outputs = {"table": storage.join(out, "study.parquet"), "csv": storage.join(out, "study.csv"),
               "chart": storage.join(out, "study.png")}
    storage.write_parquet(table, outputs["table"])
    sink = pa.BufferOutputStream()
    pacsv.write_csv(_lists_as_json(table), sink)
    storage.write_bytes(outputs["csv"], sink.getvalue().to_pybytes())
    storage.write_bytes(outputs["chart"], png)
    return {"table": table, "outputs": outputs, "sweeps": results, "sweep": results[0]}


def _lists_as_json(table: pa.Table) -> pa.Table:
    """``table`` with its list columns (the per-seed values) as JSON text, which CSV can hold."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type):
            text = [None if v is None else json.dumps(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, f.name, pa.array(text, pa.string()))
    return table


def format_study(table: pa.Table) -> str:
    """``table`` as aligned text: a metric with ``_lo``/``_hi`` columns as
    ``61.4 [58.2, 64.5]`` (percent), other floats in percent, the rest as they are;
    the per-seed lists left out (they are in study.parquet). A last line says what the
    figures rest on: how many seeds, and what the intervals cover."""
    names = table.column_names
    cols = [c for c in names if not (c.endswith(("_lo", "_hi")) and c[:-3] in names)
            and not pa.types.is_list(table.schema.field(c).type)]

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
    lines = ["  ".join(t.rjust(w) for t, w in zip(r, widths)) for r in rows]
    seeds = max(table.column("seeds").to_pylist(), default=1) if "seeds" in names else 1
    lines.append(f"each figure: the mean over {seeds} training seeds, 95 % interval over the seeds and the "
                 f"validation clips" if seeds > 1 else
                 "each figure: 1 training seed, 95 % interval over the validation clips (--seeds N for more)")
    return "\n".join(lines)


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


def _store_changes(record: dict, mine: dict) -> list[str]:
    """What differs between a study store's recorded settings and ``mine`` (settings
    added since the store was made count as their defaults: ``config.changed_settings``)."""
    defaults = {"made_by": mine["made_by"], "synth": asdict(SynthConfig()), "preprocess": asdict(PreprocessConfig())}
    return changed_settings(record if isinstance(record, dict) else {"made_by": None}, mine, defaults)


def make_study_store(store: str, synth: SynthConfig, preprocess: PreprocessConfig, *,
                     say: Callable[[str], None] = print) -> str:
    """Make the SynGym store the study preset trains on, unless it is there: SynGym in
    STORE/../syngym (videos rendered as Ray tasks), clips in ``store`` (a local folder),
    marked with STORE_MARKER. Refuses (ValueError) a non-empty ``store`` without the
    mark, or one made with other settings, which the studies' runs were trained on."""
    from ..demo import make_syngym
    from ..preprocess.pipeline import run_preprocess

    mine = {"made_by": STORE_MADE_BY, "synth": asdict(synth), "preprocess": asdict(preprocess)}
    marker = storage.join(store, STORE_MARKER)
    try:
        record = parse_yaml(storage.read_text(marker))
    except FileNotFoundError:
        record = None
    if record is None and storage.list_uris(store):
        raise InputError(f"{store} is not empty and was not made by the study preset (no {STORE_MARKER}): "
                         f"give --data STORE or another train.data")
    changed = _store_changes(record, mine) if record is not None else []
    if changed:
        raise InputError(f"{store} was made with other synth or preprocess settings than {STORE_MARKER} records "
                         f"({'; '.join(changed[:3])}): delete it to make it anew, or give --data")
    if record is not None and storage.exists(summary_uri(store)):
        return store
    data = os.path.join(os.path.dirname(os.path.abspath(store)), "syngym")
    storage.write_text(marker, yaml.safe_dump(mine, sort_keys=False))
    make_syngym(data, synth, say=say)  # minutes at the syngym preset on 2 cores: said, with progress
    say(f"cutting clips into {store}")
    run_preprocess(preprocess, os.path.join(data, "annotations"), os.path.join(data, "videos"), store, prune=True,
                   say=say)
    return store
