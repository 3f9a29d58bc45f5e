"""Sweep settings: one YAML naming a training config, the values to search and how.

Ray-free so that the CLI checks a sweep file before it starts a cluster: every problem
this module finds is a one-line ConfigError naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import NAME_MAX_CHARS, ConfigError, check_name, check_range, from_dict, load_config, parse_yaml
from ..errors import InputError
from ..storage import join
from ..train.config import TrainConfig

# What training reports every epoch (train/engine.py, from train/loop.py); val_* only on validating epochs.
METRICS = ("train_loss", "train_top1", "train_mean_class", "val_loss", "val_top1", "val_mean_class")
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
# TrainConfig fields every trial gets from the sweep, so sweeping them would be ignored.
OWNED = {"runs": "each trial's run lives in the sweep's folder", "name": "the sweep names each trial",
         "workers": "set resources.workers", "cpus_per_worker": "set resources.cpus_per_worker",
         "use_gpu": "set resources.gpus_per_worker", "gpus_per_worker": "set resources.gpus_per_worker"}


@dataclass(frozen=True)
class TrialResources:
    """What one trial's Ray Train run takes from the cluster."""

    workers: int = 1  # Ray Train workers (DDP processes)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # > 0: trials train on GPU (fractions share a GPU)

    def __post_init__(self) -> None:
        problems: list[str] = []
        check_range(problems, "workers", self.workers, ge=1)
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "gpus_per_worker", self.gpus_per_worker, ge=0, le=1)  # TrainConfig's bounds
        if 0 < self.gpus_per_worker < 1 and self.workers > 1:
            problems.append("gpus_per_worker below 1 needs workers=1 (NCCL refuses two ranks of a run on one GPU)")
        if problems:
            raise InputError("; ".join(problems))


@dataclass(frozen=True)
class SweepConfig:
    """A search over TrainConfig values; epochs and metrics as training counts and reports them."""

    # The sweep's name: the same name resumes it. Empty: the sweep file's stem.
    name: str = ""
    # A TrainConfig YAML; relative: to the sweep file's folder, else the current directory.
    base: str | None = None
    # TrainConfig values applied on top of ``base`` (or of TrainConfig's defaults).
    train: dict[str, Any] = field(default_factory=dict)
    # TrainConfig field -> exactly one of {grid|choice: [v, ...]}, {uniform|loguniform:
    # [lo, hi]} (floats), {randint: [lo, hi]} (ints, hi excluded, as in Tune).
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Trials per grid point (each samples the random kinds anew); no grid: trials in all.
    num_samples: int = 1
    metric: str = "val_mean_class"  # one of METRICS; its best epoch ranks the trials
    mode: str = "max"  # max | min
    # "asha" stops trials whose metric trails after ``grace_period`` epochs, keeping
    # 1/``reduction_factor`` of them at each rung.
    scheduler: str = "none"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_concurrent_trials: int = 0  # 0: as many as the cluster holds; never more on a fixed cluster
    resources: TrialResources = field(default_factory=TrialResources)
    # Where sweeps live (folder or s3://); this one lives at ``sweeps/name``.
    sweeps: str = "./finegym_sweeps"
    # Studies only: each config trained with seeds train.seed + 0 .. seeds - 1, each seed
    # a sweep of its own (:func:`seed_sweeps`). ``finegym-ray tune`` trains each config once.
    seeds: int = 1

    def __post_init__(self) -> None:
        problems = []
        # "": the sweep file's stem (load_sweep). Its best run is named NAME_best (results.py).
        check_name(problems, "name", self.name, max_chars=NAME_MAX_CHARS - len("_best"))
        for key, allowed in (("metric", METRICS), ("mode", ("max", "min")), ("scheduler", ("none", "asha"))):
            if getattr(self, key) not in allowed:
                problems.append(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        check_range(problems, "num_samples", self.num_samples, ge=1)
        check_range(problems, "grace_period", self.grace_period, ge=1)
        check_range(problems, "reduction_factor", self.reduction_factor, gt=1)
        check_range(problems, "max_concurrent_trials", self.max_concurrent_trials, ge=0)
        check_range(problems, "seeds", self.seeds, ge=1)
        if isinstance(self.seeds, int) and self.seeds > 1:
            longest = f"{self.name}{seed_suffix(self.seeds - 1)}"
            if self.name and len(longest) > NAME_MAX_CHARS - len("_best"):
                problems.append(f"name {self.name!r} is too long for {self.seeds} seeds (its last sweep: {longest})")
            if isinstance(self.space, dict) and "seed" in self.space:
                problems.append("seeds above 1 train every config with seeds of their own: drop space.seed")
        # load_config does not look inside dict fields: their shape is checked here.
        if not isinstance(self.train, dict):
            problems.append(f"train must be a mapping of TrainConfig values, got {self.train!r}")
        if not isinstance(self.space, dict) or not all(isinstance(s, dict) for s in self.space.values()):
            problems.append(f"space must map TrainConfig fields to {{kind: values}}, got {self.space!r}")
        if problems:
            raise InputError("sweep config: " + "; ".join(problems))

    @property
    def folder(self) -> str:
        """This sweep's folder or URI: ``sweeps/name``."""
        return join(self.sweeps, self.name)


def load_sweep(path: str | Path | SweepConfig | None, overrides: list[str]) -> tuple[SweepConfig, TrainConfig]:
    """The sweep at ``path`` (or the SweepConfig given, its ``base`` relative to the
    current directory) with ``overrides`` applied (name and base resolved) and the
    TrainConfig its trials start from; ConfigError for any problem.

    ``train.KEY=V`` sets one training value, ``space.KEY.KIND=V`` replaces KEY's search
    (``space.KEY=null`` drops it); both apply after the other overrides.
    """
    given = path if isinstance(path, SweepConfig) else None
    path = None if given is not None else path
    where = str(path) if path is not None else "sweep"
    # apply_overrides only changes keys that exist, and these dicts start empty.
    dotted = [o for o in overrides if re.match(r"(train|space)\.[^=]*=", o)]
    sweep = load_config(SweepConfig, path, [o for o in overrides if o not in dotted], base=given)
    if dotted:
        sweep = from_dict(SweepConfig, _set_dict_keys(dataclasses.asdict(sweep), dotted), where)
    name = sweep.name or (Path(path).stem if path is not None else "")
    if not name:
        raise ConfigError(f"{where}: the sweep has no name: set name=... or load it from a file")
    base_path = _resolve_base(sweep.base, path, where)
    owned = sorted(set(sweep.train) & (OWNED.keys() - {"runs"}))
    if owned:
        raise ConfigError(f"{where}: train.{owned[0]}: set by the sweep ({OWNED[owned[0]]})")
    base = from_dict(TrainConfig, {**dataclasses.asdict(load_config(TrainConfig, base_path)), **sweep.train},
                     f"{where}: train")
    sweep = dataclasses.replace(sweep, name=name, base=base_path)
    try:
        check_space(sweep.space, base)
        _check_schedule(sweep, base)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return sweep, base


def _set_dict_keys(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with ``train.KEY=V`` and ``space.KEY[.KIND]=V`` overrides applied."""
    for item in overrides:
        key, _, raw = item.partition("=")
        section, *parts = key.split(".")
        if len(parts) > (2 if section == "space" else 1):
            raise ConfigError(f"override {item!r}: expected {section}.KEY{'.KIND' * (section == 'space')}=VALUE")
        try:
            value = parse_yaml(raw) if raw else ""
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"override {item!r}: not a YAML value: {' '.join(str(e).split())}") from None
        if len(parts) == 2:
            value = {parts[1]: value}  # a new kind replaces the old: one kind per key
        if value is None and section == "space":
            data["space"].pop(parts[0], None)
        else:
            data[section][parts[0]] = value
    return data


def _resolve_base(base: str | None, sweep_path: str | Path | None, where: str) -> str | None:
    if base is None or Path(base).is_absolute():
        return base
    beside = Path(sweep_path).parent / base if sweep_path is not None else None
    if beside is not None and beside.is_file():
        return str(beside)
    if Path(base).is_file():
        return base
    raise ConfigError(f"{where}: base {base!r}: no such file"
                      + (f" in {beside.parent} or the current directory" if beside is not None else ""))


def check_space(space: dict[str, dict[str, Any]], base: TrainConfig) -> None:
    """ConfigError unless every key of ``space`` is a sweepable TrainConfig field and
    every value it can take (grid/choice: each; ranges: both ends) gives a valid config
    with ``base``. Values are checked one key at a time, not in combination."""
    hints = typing.get_type_hints(TrainConfig)
    for key, spec in space.items():
        where = f"space.{key}"
        if key in OWNED:
            raise ConfigError(f"{where}: not sweepable: {OWNED[key]}")
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(hints.keys() - OWNED.keys()))}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"{where}: expected exactly one of {', '.join(KINDS)} with its values, got {spec!r}")
        ((kind, args),) = spec.items()
        for value in _candidates(f"{where}.{kind}", key, kind, args, hints[key]):
            try:
                from_dict(TrainConfig, {**dataclasses.asdict(base), key: value})
            except ConfigError as e:
                raise ConfigError(f"{where}.{kind}: {value!r} does not fit: {e}") from None


def _candidates(where: str, key: str, kind: str, args: Any, tp: Any) -> list[Any]:
    """The values to validate: a list's every item, a range's lowest and highest."""
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: expected a non-empty list of {key} values, got {args!r}")
        return args
    want = int if kind == "randint" else float
    if tp is not want:
        fits = {int: "randint or ", float: "uniform, loguniform or "}.get(tp, "")
        raise ConfigError(f"{where}: {kind} draws {want.__name__}s but {key} takes {getattr(tp, '__name__', tp)} "
                          f"values; use {fits}grid/choice")
    ok = (isinstance(args, list) and len(args) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in args)
          and args[0] < args[1] and (kind != "loguniform" or args[0] > 0)
          and (kind != "randint" or all(isinstance(v, int) for v in args)))
    if not ok:
        need = {"uniform": "finite numbers", "loguniform": "finite numbers, lo > 0", "randint": "ints, hi excluded"}
        raise ConfigError(f"{where}: expected [lo, hi] with lo < hi ({need[kind]}), got {args!r}")
    return [args[0], args[1] - 1] if kind == "randint" else [float(args[0]), float(args[1])]


def _check_schedule(sweep: SweepConfig, base: TrainConfig) -> None:
    def values(key: str) -> list[Any]:  # what ``key`` takes over the sweep (ranges: their ends)
        spec = sweep.space.get(key)
        if spec is None:
            return [getattr(base, key)]
        ((kind, args),) = spec.items()
        return _candidates(key, key, kind, args, int)  # check_space passed it; both keys are ints

    problems = []
    if sweep.metric.startswith("val_"):
        if 0 in values("val_every"):
            problems.append(f"metric {sweep.metric} is never reported with val_every 0")
        elif sweep.scheduler == "asha" and set(values("val_every")) != {1}:
            # ASHA compares trials at every epoch: an epoch without the metric is a hole.
            problems.append(f"scheduler asha with metric {sweep.metric} needs val_every 1, got "
                            f"{', '.join(map(str, sorted(set(values('val_every')))))}")
    if sweep.scheduler == "asha" and min(values("epochs")) < sweep.grace_period:
        problems.append(f"grace_period {sweep.grace_period} is more than epochs {min(values('epochs'))}")
    if problems:
        raise ConfigError("; ".join(problems))


def trial_config(base: TrainConfig, params: dict[str, Any], *, runs: str, name: str,
                 resources: TrialResources) -> TrainConfig:
    """One trial's TrainConfig: ``base`` with the swept ``params``, its run at ``runs/name``."""
    return from_dict(TrainConfig, {**dataclasses.asdict(base), **params, "runs": runs, "name": name,
                                   "workers": resources.workers, "cpus_per_worker": resources.cpus_per_worker,
                                   "use_gpu": resources.gpus_per_worker > 0,
                                   "gpus_per_worker": resources.gpus_per_worker or 1.0})


def check_one_seed(sweep: SweepConfig) -> None:
    """Refuse a sweep with ``seeds`` above 1: a sweep trains each config once."""
    if sweep.seeds != 1:
        raise InputError(f"seeds {sweep.seeds}: a sweep trains each config once (seeds are for 'finegym-ray study "
                         f"--seeds N'); to train seeds here, sweep them: space.seed.grid=[0,1,2]")


def seed_suffix(offset: int) -> str:
    """What the sweep of a study's seed ``offset`` (1, 2, ...) adds to its name."""
    return f"_seed{offset}"


def seed_sweeps(sweep: SweepConfig, base: TrainConfig) -> list[tuple[SweepConfig, TrainConfig]]:
    """A study's sweeps, one per seed: ``sweep.seeds`` (sweep, base) pairs, the k-th
    training with seed ``base.seed + k``. The first is ``sweep`` itself, its folder that
    of a one-seed study; the k-th (k >= 1) is named NAME_seedK and lives beside it. Each
    resumes as any sweep does, so a rerun with more seeds trains only the new ones. Each
    pair's ``seeds`` is 1."""
    return [(dataclasses.replace(sweep, seeds=1, name=sweep.name + (seed_suffix(k) if k else "")),
             dataclasses.replace(base, seed=base.seed + k)) for k in range(sweep.seeds)]


def grid_size(space: dict[str, dict[str, Any]]) -> int:
    """Grid points: the product of the grid lengths (1 without a grid)."""
    return math.prod(len(spec["grid"]) for spec in space.values() if "grid" in spec)


def trial_count(sweep: SweepConfig) -> int:
    """Trials the sweep runs in all: every grid point ``num_samples`` times."""
    return grid_size(sweep.space) * sweep.num_samples
