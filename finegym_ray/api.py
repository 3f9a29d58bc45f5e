"""The Python API: each command of ``finegym-ray`` as a function that returns what it
made, for a notebook or a script: ``import finegym_ray.api as fgr; fgr.train(...)``. (Not
at the package's top level, where ``train``, ``tune``, ``preprocess`` and ``localize``
name its subpackages: a function there would hide them, and ``import
finegym_ray.train.config as c`` would fail.)

Each function takes what its command takes: a config (a YAML file, the name of a preset
in ``configs/`` such as ``"tsm_flow_demo.yaml"``, or the config dataclass itself), then
keyword arguments only: ``overrides`` (``KEY=VALUE`` strings as ``--set`` takes them, or a
mapping of keys to Python values) and the command's common options (``data=``,
``runs=``, ``name=``, ...), which win over both. Bad input raises the library's own
errors (:class:`~finegym_ray.errors.BadInput`: :class:`~finegym_ray.config.ConfigError`
for a setting, :class:`~finegym_ray.errors.InputError` for a refused value or state) with
the one-line message the command prints, a missing file FileNotFoundError; nothing here
exits the process.

Ray: a function that needs it starts or joins one when this process has none
(``runtime.connect.init_ray``, as the commands do: ``address`` None joins the cluster
recorded on this machine, else starts a local Ray) and leaves it running for the next
call; a Ray this process connected to already (its own ``ray.init()``) is used as it is.
Progress lines are printed as the commands print them, Ray's own lines go to its log
files; ``quiet=True`` prints none. Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import ConfigError, load_config
from .errors import BadInput, InputError
from .runtime import connect, output

if TYPE_CHECKING:
    import pyarrow as pa

    from .localize.config import ExtractConfig, LocalizeConfig
    from .localize.metric import MapResult
    from .pose.config import PoseConfig
    from .preprocess.config import PreprocessConfig
    from .train.config import TrainConfig
    from .tune.config import SweepConfig
    from .tune.results import TrialRecord

__all__ = ["BadInput", "ConfigError", "EvaluateResult", "ExtractResult", "InputError", "LocalizeResult",
           "PreprocessResult", "Scores", "StudyResult", "TrainResult", "TuneResult", "evaluate",
           "extract_features", "localize", "preprocess", "study", "train", "train_poses", "tune"]

T = TypeVar("T")
# ``--set`` strings (one or several), or a mapping of keys (dotted for nesting) to values.
Overrides = str | Sequence[str] | Mapping[str, Any]
PathLike = str | os.PathLike


# -- results ------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


@dataclass(frozen=True, repr=False)
class PreprocessResult:
    """What :func:`preprocess` left in ``out``. Counts are of this call's work units
    (``units``: planned, skipped (done before), done, failed) and clips; ``output`` is the
    state of the whole output over the plan (planned, with_clips, without_clips,
    with_errors): a unit without clips has no shard, and training reads none of it."""

    out: str  # the store: folder or s3:// URI
    clips: str  # OUT/clips/, one Parquet shard per work unit
    summary: str  # OUT/summary.json: every run's figures
    config: str  # OUT/config.yaml: every setting of this run
    errors: str | None  # OUT/errors/, a record per failed unit or clip; None when nothing failed
    units: dict[str, int]
    clips_written: int
    clips_failed: int
    video_s: float  # seconds of video cut into clips by this call
    wall_s: float  # seconds this call took
    output: dict[str, int]

    def __repr__(self) -> str:
        u = self.units
        return (f"PreprocessResult(out={self.out!r}, units {u['done']} done, {u['skipped']} skipped, "
                f"{u['failed']} failed of {u['planned']}, {self.clips_written} clips written)")


@dataclass(frozen=True, repr=False)
class TrainResult:
    """A run that :func:`train` trained or resumed. ``history``: one dict per epoch of
    the whole run, as its checkpoints record it: ``epoch`` (counted from 0), ``lr``,
    ``train_loss``, ``train_top1``, ``train_mean_class``, ``val_loss``, ``val_top1``,
    ``val_mean_class`` (accuracies as fractions, 0.41 is 41 %; ``val_*`` on validating
    epochs only), ``epoch_s`` and ``data_wait_s`` (seconds)."""

    run: str  # RUNS/NAME: folder or s3:// URI
    checkpoint: str  # its newest complete checkpoint, RUN/epoch_NNNN
    config: str  # RUN/config.yaml: every setting of the run
    history: list[dict[str, Any]]
    class_names: list[str]

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        shown = [f"train_loss={last['train_loss']:.4g}"] if last.get("train_loss") is not None else []
        shown += [f"{k}={_percent(last[k])}" for k in ("val_top1", "val_mean_class") if last.get(k) is not None]
        return f"TrainResult(run={self.run!r}, epochs={len(self.history)}{''.join(', ' + s for s in shown)})"

    def __str__(self) -> str:
        from .train.run import format_history

        return f"{format_history(self.history)}\nrun:        {self.run}\ncheckpoint: {self.checkpoint}"


@dataclass(frozen=True, repr=False)
class Scores:
    """One scored run, or the two-stream fusion, on its validation clips. Accuracies are
    fractions (0.41 is 41 %), each with its 95 % interval (a percentile bootstrap over the
    clips), as ``evaluate`` prints them."""

    checkpoint: str | None  # the checkpoint scored; None for the fusion
    out: str  # the folder of metrics.json, scores.parquet, confusion.png and per_class.png
    clips: int
    top1: float
    top1_interval: tuple[float, float]
    mean_class: float
    mean_class_interval: tuple[float, float]
    variant: str  # the test-time variant ("" for the paper's protocol), as RUN/eval/VARIANT/ names it
    metrics: dict[str, Any]  # metrics.json as written: per-class accuracy, levels, test settings

    @classmethod
    def of(cls, m: dict[str, Any]) -> Scores:
        return cls(m.get("checkpoint"), m["out"], m["clips"], m["top1"], (m["top1_lo"], m["top1_hi"]),
                   m["mean_class"], (m["mean_class_lo"], m["mean_class_hi"]), m.get("variant") or "", m)

    def __repr__(self) -> str:
        lo, hi = self.mean_class_interval
        return (f"Scores(mean class {_percent(self.mean_class)} [{100 * lo:.1f}, {100 * hi:.1f}], top-1 "
                f"{_percent(self.top1)}, {self.clips} clips, out={self.out!r})")


@dataclass(frozen=True, repr=False)
class EvaluateResult:
    """What :func:`evaluate` scored: ``run``, and with ``fuse`` the second run (``other``)
    and their late fusion (``fused``)."""

    run: Scores
    other: Scores | None = None
    fused: Scores | None = None

    def __repr__(self) -> str:
        parts = [f"{name}: mean class {_percent(s.mean_class)}, top-1 {_percent(s.top1)}"
                 for name, s in (("run", self.run), ("other", self.other), ("fused", self.fused)) if s is not None]
        return f"EvaluateResult({'; '.join(parts)})"

    def __str__(self) -> str:
        from .train.evaluate import format_results

        return format_results({name: s.metrics for name, s in (("run", self.run), ("other", self.other),
                                                               ("fused", self.fused)) if s is not None})


@dataclass(frozen=True, repr=False)
class TuneResult:
    """A sweep that :func:`tune` ran or resumed. ``table``: one row per trial, best first
    (``tune/results.py`` names its columns: best_<metric>, best_epoch counted from 1,
    train_s in seconds, ...); ``outputs``: results, csv, best_config (best.yaml, None while
    no trial has the metric), plots (a PNG per swept setting)."""

    folder: str  # SWEEPS/NAME
    metric: str  # the metric that ranks the trials
    mode: str  # max or min
    table: pa.Table
    trials: list[TrialRecord]
    outputs: dict[str, Any]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best trial's row of ``table``, or None when no trial has the metric."""
        rows = self.table.to_pylist()
        return rows[0] if rows and rows[0][f"best_{self.metric}"] is not None else None

    @property
    def errored(self) -> int:
        """Trials that failed (the command exits 1 for any)."""
        return sum(t.status == "errored" for t in self.trials)

    def __repr__(self) -> str:
        best, shown = self.best, ""
        if best:
            value = best[f"best_{self.metric}"]
            shown = (f", best {self.metric} {format(value, '.4g') if self.metric.endswith('loss') else _percent(value)}"
                     f" ({best['trial_id']})")
        return f"TuneResult(folder={self.folder!r}, {len(self.trials)} trials, {self.errored} errored{shown})"

    def __str__(self) -> str:
        from .tune.sweep import format_sweep

        return format_sweep({"table": self.table, "folder": self.folder, "outputs": self.outputs}, self.metric)


@dataclass(frozen=True, repr=False)
class StudyResult:
    """One of the paper's studies that :func:`study` ran: its ``table`` (metrics as
    fractions, each the mean over ``seeds`` training seeds with ``_lo``/``_hi``, its 95 %
    interval over seeds and validation clips, and ``_by_seed``, each seed's), ``outputs``
    (table: study.parquet, csv: study.csv, chart: study.png), the sweep that trained its
    first seed's runs (``sweep``) and every seed's (``sweeps``, in seed order)."""

    name: str
    table: pa.Table
    outputs: dict[str, str]
    sweep: TuneResult
    sweeps: tuple[TuneResult, ...] = ()

    def __repr__(self) -> str:
        return f"StudyResult({self.name}, {self.table.num_rows} rows, chart={self.outputs['chart']!r})"

    def __str__(self) -> str:
        from .tune.studies import format_study

        return format_study(self.table) + "".join(f"\n{k + ':':<7}{v}" for k, v in self.outputs.items())


@dataclass(frozen=True, repr=False)
class ExtractResult:
    """What :func:`extract_features` wrote. ``items``: planned, skipped (complete
    before), written, failed (a record each in ``errors``)."""

    out: str
    level: str  # action or subaction
    checkpoint: str  # the backbone's checkpoint
    features: str  # OUT/<level>/, one Parquet file per video (action) or routine (subaction)
    elements: str | None  # OUT/elements/, per-instance features of the run's element clips
    errors: str | None  # OUT/errors/; None when nothing failed
    summary: str  # OUT/summary.json
    items: dict[str, int]
    snippets: int  # snippets embedded by this call
    extract_s: float  # seconds of extraction on Ray
    snippets_per_s: float | None

    def __repr__(self) -> str:
        i = self.items
        return (f"ExtractResult(features={self.features!r}, {i['written']} written, {i['skipped']} skipped, "
                f"{i['failed']} failed of {i['planned']})")

    def __str__(self) -> str:
        from .localize.extract import format_summary

        return format_summary({"items": self.items, "snippets": self.snippets, "extract_wall_s": self.extract_s,
                               "snippets_per_s": self.snippets_per_s, "level": self.level}, self.out)


@dataclass(frozen=True, repr=False)
class LocalizeResult:
    """A detector run of :func:`localize` and, when evaluated, its mAP on the validation
    sequences. ``history``: one dict per epoch (``epoch`` from 0, losses, ``iterations``,
    ``epoch_s`` in seconds); ``map``: mAP per tIoU threshold (fractions),
    ``average_map_interval`` its average's 95 % interval (a bootstrap over the validation
    videos); ``outputs``: metrics,
    detections, timeline (RUN/eval/)."""

    run: str
    checkpoint: str
    config: str  # RUN/config.yaml
    level: str
    history: list[dict[str, Any]]
    map: MapResult | None = None
    average_map_interval: tuple[float, float] | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # RUN/eval/metrics.json as written

    def __repr__(self) -> str:
        shown = f", average_map={_percent(self.map.average_map)}" if self.map is not None else ""
        return f"LocalizeResult(run={self.run!r}, epochs={len(self.history)}{shown})"

    def __str__(self) -> str:
        from .localize.evaluate import format_results
        from .localize.train import format_history

        text = f"{format_history(self.history)}\nrun:        {self.run}\ncheckpoint: {self.checkpoint}"
        if self.map is None:
            return text
        return text + "\n" + format_results({"result": self.map, "intervals": self.metrics["interval_95"],
                                             "metrics": self.metrics, "outputs": self.outputs,
                                             "level": self.level, "run": self.run})


# -- the commands -------------------------------------------------------------------------


def preprocess(config: PathLike | PreprocessConfig | None = None, *, annotations: PathLike, videos: PathLike,
               out: PathLike, overrides: Overrides = (), prune: bool = False, break_lease: bool = False,
               address: str | None = None, quiet: bool = False) -> PreprocessResult:
    """``finegym-ray preprocess``: clips with optical flow from ``videos`` (a folder of
    ``<video_id>.mp4``, local or s3://) for the ``annotations`` (a FineGym annotation
    folder or JSON), into the store ``out``. A second call resumes. ``prune`` deletes the
    shards of an earlier plan instead of refusing them; ``break_lease`` removes the lease
    of a job that is gone."""
    from . import storage
    from .preprocess.config import PreprocessConfig
    from .preprocess.pipeline import run_preprocess
    from .progress import PREPROCESS_SETTINGS_SHOWN, settings_line
    from .store import clips_dir, config_uri, errors_dir, summary_uri
    from .video.files import require_videos

    settings = _load(PreprocessConfig, config, overrides)
    annotations, videos, out = os.fspath(annotations), os.fspath(videos), os.fspath(out).rstrip("/")
    require_videos(videos)  # before Ray starts
    say = _printer("preprocess", quiet)
    say(f"{settings_line(settings, PREPROCESS_SETTINGS_SHOWN)}; all settings in {config_uri(out)}")
    _connect(address, quiet)
    with _held(quiet):
        s = run_preprocess(settings, annotations, videos, out, prune=prune, break_lease=break_lease, say=say)
    return PreprocessResult(out, clips_dir(out), summary_uri(out), config_uri(out),
                            errors_dir(out) if storage.list_uris(errors_dir(out)) else None, dict(s["units"]),
                            s["clips"]["written"], s["clips"]["failed"], s["video_seconds"], s["wall_s"],
                            dict(s["output"]))


def train(config: PathLike | TrainConfig | None = None, *, overrides: Overrides = (), data: PathLike | None = None,
          runs: PathLike | None = None, name: str | None = None, break_lease: bool = False,
          address: str | None = None, quiet: bool = False) -> TrainResult:
    """``finegym-ray train``: a recognition model on the clips of the store ``data``,
    checkpointed every epoch to ``runs``/``name``; a second call with the same name
    resumes after its newest complete checkpoint (one that has trained all its epochs
    returns at once)."""
    from . import storage
    from .progress import TRAIN_SETTINGS_SHOWN, settings_line
    from .train.config import TrainConfig, with_absolute_paths
    from .train.data import check_data_settings
    from .train.trackers import require as require_trackers

    settings = with_absolute_paths(_load(TrainConfig, config, overrides, data=data, runs=runs, name=name))
    require_trackers(settings)  # before Ray starts, as the data's settings
    check_data_settings(settings.data, settings.task, settings.modality)
    say = _printer("train", quiet)
    _connect(address, quiet)
    from .train.engine import run_uri
    from .train.run import run_training

    say(f"{settings_line(settings, TRAIN_SETTINGS_SHOWN)}; all settings in {run_uri(settings)}/config.yaml")
    with _held(quiet):
        r = run_training(settings, break_lease=break_lease, say=say)
    return TrainResult(r["run"], r["checkpoint"], storage.join(r["run"], "config.yaml"), r["history"],
                       r["class_names"])


def train_poses(config: PathLike | PoseConfig | None = None, *, overrides: Overrides = (),
                data: PathLike | None = None, runs: PathLike | None = None, name: str | None = None,
                break_lease: bool = False, address: str | None = None, quiet: bool = False) -> TrainResult:
    """``finegym-ray train-poses``: ST-GCN or the PoseC3D-style model on the poses of the
    store ``data`` (``import-poses``), checkpointed every epoch to ``runs``/``name``; a
    second call with the same name resumes. :func:`evaluate` scores the run and fuses it
    with another."""
    from . import storage
    from .pose.config import PoseConfig, with_absolute_paths
    from .train.trackers import require as require_trackers

    settings = with_absolute_paths(_load(PoseConfig, config, overrides, data=data, runs=runs, name=name))
    require_trackers(settings)
    say = _printer("train-poses", quiet)
    _connect(address, quiet)
    from .pose.train import run_pose_training

    with _held(quiet):
        r = run_pose_training(settings, break_lease=break_lease, say=say)
    return TrainResult(r["run"], r["checkpoint"], storage.join(r["run"], "config.yaml"), r["history"],
                       r["class_names"])


def evaluate(run: PathLike | TrainResult, *, fuse: PathLike | TrainResult | None = None,
             fuse_weights: tuple[float, float] | None = None, checkpoint: str = "last", data: PathLike | None = None,
             rescore: bool = False, out: PathLike | None = None, segments: int | None = None,
             shuffle_frames: bool = False, seed: int = 0, workers: int = 1, cpus_per_worker: int = 1,
             require_complete: bool = False, address: str | None = None, quiet: bool = False) -> EvaluateResult:
    """``finegym-ray evaluate``: ``run`` (a run folder, one of its ``epoch_NNNN`` folders
    or a :class:`TrainResult`) scored on its validation split with its test protocol,
    and with ``fuse`` (a second run) the two-stream late fusion, weighted by
    ``fuse_weights`` (of ``run`` and ``fuse``; None: RGB 1, flow 1.5). ``checkpoint``:
    ``last`` or ``best`` of a run folder. ``segments`` and ``shuffle_frames`` (orders
    fixed by ``seed``) test the paper's variants, into RUN/eval/VARIANT/. Scores already
    there from the same checkpoint, clips and settings are reused unless ``rescore``.
    ``out`` replaces RUN/eval/; ``data`` the run's recorded clips (same preprocessing
    settings only); ``workers`` scoring actors of ``cpus_per_worker`` CPUs each. The
    labelled clips that exist are scored, and the scores say how many have none;
    ``require_complete`` refuses (InputError) a split with any clip missing instead."""
    from .train.evaluate import plan_evaluation, run_evaluation

    for option, value in (("workers", workers), ("cpus_per_worker", cpus_per_worker), ("segments", segments)):
        if value is not None and value < 1:
            raise InputError(f"evaluate {option} must be >= 1, got {value}")
    if checkpoint not in ("last", "best"):
        raise InputError(f"evaluate checkpoint must be last or best, got {checkpoint!r}")
    say = _printer("evaluate", quiet)
    # Every refusal before Ray starts (a run that is not there, outputs that cannot be
    # written, a state that would run code), as the command does.
    plan = plan_evaluation(_run_uri(run), fuse=_run_uri(fuse), fuse_weights=fuse_weights, segments=segments,
                           shuffle_frames=shuffle_frames, seed=seed, checkpoint=checkpoint,
                           data=_fspath(data), rescore=rescore, out=_fspath(out),
                           require_complete=require_complete, say=say)
    _connect(address, quiet)
    with _held(quiet):
        results = run_evaluation(plan, workers=workers, cpus_per_worker=cpus_per_worker, say=say)
    return EvaluateResult(*(Scores.of(results[n]) if n in results else None for n in ("run", "other", "fused")))


def tune(config: PathLike | SweepConfig, *, overrides: Overrides = (), data: PathLike | None = None,
         name: str | None = None, sweeps: PathLike | None = None, break_lease: bool = False,
         address: str | None = None, quiet: bool = False) -> TuneResult:
    """``finegym-ray tune``: the trials of a sweep (a sweep YAML such as
    ``"sweeps/tsm_rgb_gym99.yaml"``, or a :class:`~finegym_ray.tune.config.SweepConfig`
    whose ``base`` is relative to the current directory), each training its base config
    with the swept values. ``overrides`` take the sweep's keys, ``train.KEY`` and
    ``space.KEY.KIND``; ``data`` is the trials' store (``train.data``), ``name`` and
    ``sweeps`` where the sweep lives (``sweeps``/``name``). A second call resumes it. Its
    trials' own lines are not printed: a line per trial event is."""
    from .train.trackers import require as require_trackers
    from .tune.config import SweepConfig, load_sweep

    given = config if isinstance(config, SweepConfig) else _config_file(config)
    sweep, base = _one_line(load_sweep, given, _overrides(overrides, name=name, sweeps=sweeps,
                                                          **{"train.data": data}))
    require_trackers(base)  # before Ray starts
    say = _printer("tune", quiet)
    _connect(address, quiet)
    from .tune.sweep import run_sweep

    say(f"sweep {sweep.name}: {sweep.space or 'no search space'}, metric {sweep.metric} ({sweep.mode}), "
        f"scheduler {sweep.scheduler}")
    with output.worker_lines_held():
        r = run_sweep(sweep, base, break_lease=break_lease, say=say)
    return TuneResult(r["folder"], sweep.metric, sweep.mode, r["table"], r["trials"], r["outputs"])


def study(name: str, *, preset: str = "finegym", config: PathLike | None = None, data: PathLike | None = None,
          overrides: Overrides = (), seeds: int | None = None, break_lease: bool = False,
          address: str | None = None, quiet: bool = False) -> StudyResult:
    """``finegym-ray study NAME``: one of the paper's studies (frames, order,
    test_segments, motion), a grid sweep per seed and then an evaluation grid over its
    runs. ``preset``: ``finegym`` (configs/studies/NAME.yaml, give ``data``) or
    ``syngym`` (sized for 2 CPU cores; without ``data`` it makes its SynGym store once);
    ``config``: another sweep file; ``seeds``: train each config that many times (None:
    the file's, 3 for finegym, 1 for syngym). Raises ``tune.studies.TrialsFailed`` (a
    RuntimeError) when a trial did not finish."""
    from . import presets
    from .tune.config import load_sweep
    from .tune.studies import STUDIES, TEST_SEGMENTS, make_study_store, run_study, store_settings

    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    if preset not in ("finegym", "syngym"):
        raise InputError(f"study preset must be finegym or syngym, got {preset!r}")
    folder = presets.path("studies/syngym" if preset == "syngym" else "studies")
    path = _config_file(config) if config is not None else str(folder / f"{name}.yaml")
    sweep, base = _one_line(load_sweep, path, _overrides(overrides, **{"train.data": data, "seeds": seeds}))
    say = _printer("study", quiet)
    _connect(address, quiet)
    if preset == "syngym" and data is None:
        make_study_store(base.data, *store_settings(str(folder / "store.yaml")), say=say)
    with output.worker_lines_held():
        r = run_study(name, sweep, base, test_segments=TEST_SEGMENTS, break_lease=break_lease, say=say)
    sweeps = tuple(TuneResult(s["folder"], sweep.metric, sweep.mode, s["table"], s["trials"], s["outputs"])
                   for s in r["sweeps"])
    return StudyResult(name, r["table"], r["outputs"], sweeps[0], sweeps)


def extract_features(run: PathLike | TrainResult, *, videos: PathLike, annotations: PathLike, out: PathLike,
                     level: str | None = None, config: PathLike | ExtractConfig | None = None,
                     overrides: Overrides = (),
                     address: str | None = None, quiet: bool = False) -> ExtractResult:
    """``finegym-ray extract-features``: snippet features of ``videos`` with the backbone
    of the trained ``run`` (a run folder, an ``epoch_NNNN`` folder or a
    :class:`TrainResult`), over whole videos (``level`` action) or each routine
    (subaction), into ``out``, for :func:`localize`. A second call skips complete files.
    Ray starts only when there is something to extract."""
    from . import storage
    from .config import to_yaml
    from .localize.config import ExtractConfig
    from .localize.extract import check_inputs, run_extract
    from .localize.features import ELEMENTS
    from .store import errors_dir, summary_uri

    settings = _load(ExtractConfig, config, overrides, level=level)
    run, videos, annotations, out = _run_uri(run), os.fspath(videos), os.fspath(annotations), os.fspath(out)
    check_inputs(settings, run, videos, annotations)  # before Ray starts
    say = _printer("extract", quiet)
    say(f"settings:\n{to_yaml(settings)}")
    s = run_extract(settings, run, videos, annotations, out, connect=lambda: _connect(address, quiet), say=say)
    elements = storage.join(out, ELEMENTS)
    return ExtractResult(out, s["level"], s["checkpoint"], storage.join(out, s["level"]),
                         elements if storage.list_uris(elements) else None,
                         errors_dir(out) if storage.list_uris(errors_dir(out)) else None, summary_uri(out),
                         dict(s["items"]), s["snippets"], s["extract_wall_s"], s["snippets_per_s"])


def localize(config: PathLike | LocalizeConfig | None = None, *, overrides: Overrides = (),
             features: PathLike | None = None, annotations: PathLike | None = None, runs: PathLike | None = None,
             name: str | None = None, train: bool = True, evaluate: bool = True, break_lease: bool = False,
             address: str | None = None, quiet: bool = False) -> LocalizeResult:
    """``finegym-ray localize train`` then ``localize evaluate``: a temporal detector on
    the feature sequences ``features`` (extract-features' OUT) with the ground truth of
    ``annotations``, trained (or resumed) on Ray Train into ``runs``/``name``, then its
    newest checkpoint scored by mAP on the validation sequences into RUN/eval/.
    ``train=False`` only evaluates (no Ray needed), ``evaluate=False`` only trains."""
    from .config import to_yaml
    from .localize.config import LocalizeConfig
    from .localize.evaluate import evaluate_run
    from .localize.train import prepare, run_localize_training
    from .train import checkpoint as checkpoints
    from .train.engine import run_uri
    from .train.trackers import require as require_trackers

    flags = {"features": features, "annotations": annotations, "runs": runs, "name": name}
    if config is None and not overrides and all(v is None for v in flags.values()):
        raise InputError("localize needs a config (a YAML file such as 'localize/syngym_action.yaml' or a "
                         "LocalizeConfig), overrides or features= and annotations=")
    if not (train or evaluate):
        raise InputError("localize with train=False and evaluate=False has nothing to do")
    settings = _load(LocalizeConfig, config, overrides, **flags)
    say = _printer("localize", quiet)
    say(f"settings:\n{to_yaml(settings)}")
    uri = run_uri(settings)
    if train:
        require_trackers(settings)
        prepare(settings, say=lambda _m: None)  # bad data or settings: refused before Ray starts
        _connect(address, quiet)
        with _held(quiet):
            run_localize_training(settings, break_lease=break_lease, say=say)
    if not evaluate:
        return _localize_result(settings, uri, checkpoints.find_latest(uri))
    e = evaluate_run(settings, say=say)
    average = e["intervals"].get("average_map")
    return _localize_result(settings, uri, checkpoints.find_latest(uri), map=e["result"],
                            average_map_interval=tuple(average) if average else None, outputs=e["outputs"],
                            metrics=e["metrics"])


# -- helpers ------------------------------------------------------------------------------


def _localize_result(settings: LocalizeConfig, uri: str, checkpoint, **evaluation) -> LocalizeResult:
    from . import storage

    if checkpoint is None:
        raise InputError(f"{uri}: no complete checkpoint (train it first: localize with train=True)")
    return LocalizeResult(uri, checkpoint.uri, storage.join(uri, "config.yaml"), settings.level,
                          checkpoint.meta["history"], **evaluation)


def _fspath(path: PathLike | None) -> str | None:
    return None if path is None else os.fspath(path)


def _run_uri(run: PathLike | TrainResult | None) -> str | None:
    """A run given as a path or a :class:`TrainResult`, as the library takes it."""
    return run.run if isinstance(run, TrainResult) else _fspath(run)


def _overrides(overrides: Overrides, **flags: Any) -> list[str]:
    """``overrides`` as ``--set`` strings, then each flag that is not None as one more
    (last: it wins). A mapping's values and the flags are written as JSON, which YAML
    reads back as the same value (a name of digits stays a string)."""
    def text(value: Any) -> str:
        return json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else value, ensure_ascii=False,
                          default=str)

    if isinstance(overrides, str):
        items = [overrides]
    elif isinstance(overrides, Mapping):
        items = [f"{key}={text(value)}" for key, value in overrides.items()]
    else:
        items = list(overrides)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r}: expected a KEY=VALUE string")
    return items + [f"{key}={text(value)}" for key, value in flags.items() if value is not None]


def _config_file(config: PathLike) -> str:
    """``config`` where it names a file; else the preset it names in the package's
    ``configs/`` (``tsm_flow_demo.yaml``, ``configs/tsm_flow_demo.yaml`` or
    ``tsm_flow_demo``), which a notebook outside the checkout finds too; else as given
    (loading it then says that there is no such file)."""
    path = Path(config)
    if path.exists() or path.is_absolute():
        return str(path)
    from . import presets

    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    if parts:
        preset = presets.path(str(Path(*parts)))
        for candidate in (preset, preset.with_name(preset.name + ".yaml")):
            if candidate.is_file():
                return str(candidate)
    return str(path)


def _one_line(load: Callable[..., T], *args: Any) -> T:
    """``load(*args)``, a ConfigError's message on one line as the command prints it (a
    YAML error spans several)."""
    try:
        return load(*args)
    except ConfigError as e:
        raise ConfigError(" ".join(str(e).split())) from None


def _load(cls: type[T], config: PathLike | T | None, overrides: Overrides, **flags: Any) -> T:
    """``cls`` from ``config`` (a YAML file or preset, an instance of ``cls``, or None:
    the defaults), then ``overrides``, then the ``flags`` that are not None."""
    items = _overrides(overrides, **flags)
    if config is None or isinstance(config, cls):
        return _one_line(load_config, cls, None, items, config)
    if not isinstance(config, (str, os.PathLike)):
        raise ConfigError(f"config must be a YAML file, a preset's name or a {cls.__name__}, got "
                          f"{type(config).__name__}")
    return _one_line(load_config, cls, _config_file(config), items)


def _printer(stage: str, quiet: bool) -> Callable[[str], None]:
    """``say`` of a call: ``[stage] message`` at once, as the command prints it."""
    def say(message: str) -> None:
        if not quiet:
            print(f"[{stage}] {message}", flush=True)

    return say


def _connect(address: str | None, quiet: bool) -> None:
    """Ray for a call: the one this process is connected to, else one that
    ``init_ray`` starts or joins (and leaves running for the next call)."""
    import ray

    if ray.is_initialized():
        joined = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", joined):
            raise InputError(f"this process is connected to the Ray cluster at {joined} already: address "
                             f"{address!r} can be joined after ray.shutdown(), or leave address out")
        return
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        connect.init_ray(address)


def _held(quiet: bool) -> contextlib.AbstractContextManager:
    """With ``quiet``, no worker line printed while it runs (output.worker_lines_held)."""
    return output.worker_lines_held() if quiet else contextlib.nullcontext()
