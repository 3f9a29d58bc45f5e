"""The sweep job: Ray Tune runs one small driver per trial, which trains the trial's
config on the training engine (``train/engine.py``, recognition's plan of
``train/run.py``) and reports every epoch's metrics to Tune through Ray Train's
``TuneReportCallback``.

A sweep lives at ``sweeps/NAME``: ``sweep.yaml`` (its settings, checked on resume),
Tune's experiment state, signed (``tune/state.py``: Tune restores only state that the
user's key signed), and per-trial logs (TensorBoard event files among them),
``trials/<trial id>/`` (each trial's training run, checkpoints in ``checkpoint.py``'s
format) and ``results/`` (``tune/results.py``). Running the same sweep again restores
it: finished and stopped trials stay as they are, unfinished ones continue from their
own newest checkpoint, since a trial's run is named after its trial id.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import yaml
from ray import tune

from .. import storage
from ..config import parse_yaml
from ..errors import BadInput, InputError
from ..lease import writer_lease
from ..runtime.internals import dashboard_running
from ..train import trackers
from ..train.config import TrainConfig, recorded_config, with_absolute_paths
from .config import OWNED, SweepConfig, TrialResources, check_one_seed, trial_config, trial_count
from .results import TrialRecord, format_table, results_table, write_results
from .state import SignedTuneState

# Settings a resumed sweep may change: they decide where trials run, not what they train
# (``seeds``: a sweep trains one seed, always; a study with more runs a sweep per seed).
MUTABLE = {"max_concurrent_trials", "resources", "sweeps", "seeds"}
# What a trial driver itself asks for: no CPU, so that its TorchTrainer's workers and
# their input get every CPU (even 0.01 CPU leaves a 2-CPU machine with one worker no
# whole CPU for a Ray Data task, and the trial waits forever). Tune needs a non-empty
# request: memory for the driver process (bytes), which nodes have plenty of.
TRIAL_DRIVER = {"CPU": 0, "memory": 256 * 2**20}


def search_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tune's param_space of the sweep's ``space`` (kinds as in ``tune/config.py``)."""
    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {key: make[kind](args) for key, spec in space.items() for kind, args in spec.items()}


def trials_that_fit(trial: TrialResources, resources: dict[str, float]) -> int:
    """How many trials ``resources`` (the cluster's) hold at once, at least one: each
    holds what ``capacity.sweep_needs`` counts (its workers, one CPU for its input)."""
    from ..capacity import sweep_needs, totals

    one = totals(sweep_needs(trial))
    return max(1, min(int(resources.get(kind, 0) // amount) for kind, amount in one.items()))


def _trial_size(trial: TrialResources) -> str:
    from ..capacity import sweep_needs, totals

    return " + ".join(f"{amount:g} {kind}" for kind, amount in totals(sweep_needs(trial)).items())


def concurrent_trials(sweep: SweepConfig, resources: dict[str, float], *, autoscaling: bool = False) -> int:
    """As many trials at once as ``resources`` (the cluster's) hold, or fewer when
    ``max_concurrent_trials`` says so. More than fit would deadlock on a fixed cluster:
    Tune starts every trial, their workers take the CPUs, and no trial's input pipeline
    finds one. An ``autoscaling`` cluster adds nodes for them, so it gets what was asked."""
    fit = trials_that_fit(sweep.resources, resources)
    if not sweep.max_concurrent_trials:
        return fit
    return sweep.max_concurrent_trials if autoscaling else min(sweep.max_concurrent_trials, fit)


def run_sweep(sweep: SweepConfig, base: TrainConfig, *, break_lease: bool = False,
              say: Callable[[str], None] = print) -> dict:
    """Run (or resume) ``sweep`` from ``base`` on the Ray cluster this process is
    connected to. Returns ``table`` (pyarrow, best first), ``trials`` (TrialRecords),
    ``outputs`` (where results went) and ``folder``. Raises InputError when the sweep's
    folder holds a sweep with other settings, or Tune state that the user's key did not
    sign (``tune/state.py``)."""
    check_one_seed(sweep)
    if sweep.scheduler == "asha" and not dashboard_running():
        raise InputError("scheduler asha needs the Ray dashboard on the cluster: a trial that ASHA stops gets its "
                         "CPUs back through the dashboard's State API, and without it the next trials wait "
                         "forever (start Ray with the dashboard, which ray[default] brings, or use scheduler none)")
    from ..capacity import StallWatchdog, autoscales, check_capacity, sweep_needs

    check_capacity(sweep_needs(sweep.resources), what=f"tune {sweep.name} (one trial)")
    folder = _absolute(sweep.folder)
    # Trials run in folders of their own (Tune's trial directories): a path relative to
    # here would name nothing there. The results' best.yaml then trains from anywhere.
    base = with_absolute_paths(base)
    from ..train.run import absent_line

    try:
        absent = absent_line(base)  # the trials train on the clips that exist: said once here
    except (BadInput, OSError):
        absent = ""  # data a trial cannot read: each trial's error record says why
    if absent:
        say(absent)
    # Every line of the sweep (a trial event) is progress; the watchdog's own are not.
    watchdog = StallWatchdog(f"tune {sweep.name}", say=say)
    say = _Ticking(say)
    # Tune's newer console output prints its own header and hints (a TensorBoard path
    # in Ray's temp folder) whatever the verbosity; Progress prints what matters.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Epochs without validation (val_every > 1) report no val_* metric; Tune would end
    # the sweep at the first of them.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    with writer_lease(folder, what=f"tune {sweep.name}", break_lease=break_lease, say=say), watchdog:
        _WATCHDOGS.append(watchdog)
        try:
            # Before anything is written: a folder holding state this machine did not sign is refused untouched.
            state = SignedTuneState.open(folder, sweep=sweep.name)
            restoring = _record_settings(folder, sweep, base)
            fs, path = state.filesystem, state.path
            trainable = tune.with_resources(
                tune.with_parameters(_trial, base=dataclasses.asdict(base), runs=storage.join(folder, "trials"),
                                     resources=dataclasses.asdict(sweep.resources),
                                     # Made here: trials run in Tune's processes, without this one's environment.
                                     scope=trackers.Scope(group=sweep.name)),
                TRIAL_DRIVER)
            if restoring and state.holds_experiment_state():
                say(f"resuming the sweep in {folder}")
                tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                           storage_filesystem=fs)
            else:
                asked = sweep.max_concurrent_trials
                concurrent = concurrent_trials(sweep, ray.cluster_resources(), autoscaling=bool(asked) and autoscales())
                capped = (f" (not max_concurrent_trials {asked}: this cluster holds {concurrent} trial(s) of "
                          f"{_trial_size(sweep.resources)} at once)") if asked and concurrent < asked else ""
                say(f"{trial_count(sweep)} trials, {concurrent} at a time{capped}, into {folder}")
                tuner = tune.Tuner(
                    trainable, param_space=search_space(sweep.space),
                    tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                                max_concurrent_trials=concurrent, scheduler=_scheduler(sweep),
                                                trial_dirname_creator=_trial_dirname),
                    run_config=tune.RunConfig(name=os.path.basename(path), storage_path=os.path.dirname(path),
                                              storage_filesystem=fs, verbose=0,
                                              callbacks=[Progress(base, trial_count(sweep), say)],
                                              failure_config=tune.FailureConfig(max_failures=0)))
            grid = tuner.fit()
            trials = [_record(r, base, folder, sweep.resources) for r in grid]
            table = results_table(trials, metric=sweep.metric, mode=sweep.mode, params=list(sweep.space))
            outputs = write_results(storage.join(folder, "results"), trials, sweep=sweep, base=base)
        finally:
            _WATCHDOGS.remove(watchdog)
    return {"table": table, "trials": trials, "outputs": outputs, "folder": folder}


# The running sweeps' watchdogs. Tune pickles its callbacks (Progress holds ``say``) into
# the sweep's folder, and a watchdog holds a thread and its lock: so ``say`` reaches them
# through this module rather than holding one.
_WATCHDOGS: list = []


class _Ticking:
    """``say`` that also tells the running sweeps' watchdogs that the sweep moved."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def __call__(self, message: str) -> None:
        for watchdog in _WATCHDOGS:
            watchdog.progress()
        self.say(message)


def _absolute(uri: str) -> str:
    # Trial drivers and train workers may run in another working directory.
    return uri if storage.parse_uri(uri).is_s3 else os.path.abspath(uri)


def _record_settings(folder: str, sweep: SweepConfig, base: TrainConfig) -> bool:
    """Write FOLDER/sweep.yaml, or check it against these settings; True if the folder
    held this sweep already (so that it resumes)."""
    uri = storage.join(folder, "sweep.yaml")
    mine = {"sweep": dataclasses.asdict(sweep), "base": dataclasses.asdict(base)}
    try:
        saved = parse_yaml(storage.read_text(uri))
    except FileNotFoundError:
        storage.write_text(uri, yaml.safe_dump(mine, sort_keys=False))
        return False
    recorded_config(saved["base"], f"{uri} base")  # another version's task names may mean other tasks
    changed = sorted([k for k in mine["sweep"] if k not in MUTABLE and saved["sweep"].get(k) != mine["sweep"][k]]
                     + [f"train.{k}" for k in mine["base"] if k not in OWNED  # every trial sets these
                        and k not in trackers.OPTIONS  # where trials log, not what they train
                        and saved["base"].get(k) != mine["base"][k]])
    if changed:
        raise InputError(f"{folder} holds sweep {sweep.name!r} with other settings ({', '.join(changed)}): "
                         f"use another name, or the same settings to resume")
    return True


def _scheduler(sweep: SweepConfig):
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Rungs count finished epochs (see _EpochReport), which survive a trial's restart;
    # Tune's training_iteration starts again from 1 when a trial resumes.
    return ASHAScheduler(time_attr="epochs_done", grace_period=sweep.grace_period,
                         reduction_factor=sweep.reduction_factor, max_t=10**9)


def _trial_dirname(trial) -> str:
    return trial.trial_id  # what _record reads back


def _trial(params: dict[str, Any], *, base: dict, runs: str, resources: dict, scope: trackers.Scope) -> None:
    """One trial: train ``base`` with the swept ``params`` as run ``runs``/<trial id>,
    under the sweep's lease (the engine's fit without a lease of its own), its tracker
    runs (where ``base`` names trackers) in ``scope``: grouped by the sweep's name."""
    from ..config import from_dict
    from ..train.engine import fit, line_writer
    from ..train.run import training_labels, training_plan

    trial_id = tune.get_context().get_trial_id()
    config = trial_config(from_dict(TrainConfig, base), _plain(params), runs=runs, name=trial_id,
                          resources=TrialResources(**resources))
    say = line_writer(f"trial {trial_id}")  # into the trial's log (Ray's worker log files)
    fit(training_plan(config, *training_labels(config, say=say)), callbacks=(_epoch_report(),), say=say, scope=scope)


def _epoch_report():
    """Ray Train's TuneReportCallback, adding ``epochs_done`` (epochs finished, 1-based)
    to each report for ASHA's rungs."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class _EpochReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            metrics = [{**metrics[0], "epochs_done": metrics[0]["epoch"] + 1}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    return _EpochReport()


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    # Tune's samplers may hand out numpy scalars; the config loader takes Python types.
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}


def _record(result, base: TrainConfig, folder: str, resources) -> TrialRecord:
    """A finished Tune trial as a TrialRecord, its history read from its own run's newest
    checkpoint (which holds every epoch, before and after a resume)."""
    from ..train import checkpoint as checkpoints

    trial_id = os.path.basename(result.path.rstrip("/"))
    params = _plain(result.config or {})
    config = trial_config(base, params, runs=storage.join(folder, "trials"), name=trial_id, resources=resources)
    run = storage.join(config.runs, config.name)
    last = checkpoints.find_latest(run)
    history = last.meta["history"] if last is not None else []
    if result.error is not None:
        status, error = "errored", str(result.error).strip().splitlines()[-1][:300]
    else:
        status, error = ("finished" if len(history) >= config.epochs else "stopped"), None
    return TrialRecord(trial_id=trial_id, run=run, params=params, status=status, history=history, error=error)


class Progress(tune.Callback):
    """A line per trial event (started, each epoch, finished, stopped, errored) with a
    running count, printed by the sweep's driver."""

    def __init__(self, base: TrainConfig, total: int, say: Callable[[str], None]):
        self.base, self.total, self.say = base, total, say

    def _epochs(self, trial) -> int:
        return int(_plain(trial.config).get("epochs", self.base.epochs))

    def _outcome(self, trial) -> str:
        done = (trial.last_result or {}).get("epochs_done", 0)
        return "stopped" if 0 < done < self._epochs(trial) else "finished"

    def _count(self, trials, trial, now: str) -> str:
        # Counted from Tune's own trial list, which a restored sweep fills in too; the
        # trial of this event may not carry its new status yet.
        states = {t.trial_id: ("errored" if t.status == "ERROR" else self._outcome(t) if t.status == "TERMINATED"
                               else "running" if t.status == "RUNNING" else "pending") for t in trials}
        states[trial.trial_id] = now
        n = {s: list(states.values()).count(s) for s in ("finished", "stopped", "errored", "running")}
        done = n["finished"] + n["stopped"] + n["errored"]
        return (f"[{done}/{self.total} done: {n['finished']} finished, {n['stopped']} stopped, "
                f"{n['errored']} errored; {n['running']} running]")

    def on_trial_start(self, iteration, trials, trial, **info):
        values = ", ".join(f"{k}={v}" for k, v in _plain(trial.config).items())
        self.say(f"trial {trial.trial_id} started ({values or 'base config'}) {self._count(trials, trial, 'running')}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        shown = [f"{k} {result[k]:.3f}" if "loss" in k else f"{k} {result[k]:.1%}"
                 for k in ("train_loss", "train_mean_class", "val_loss", "val_mean_class") if k in result]
        self.say(f"trial {trial.trial_id} epoch {result.get('epochs_done', '?')}/{self._epochs(trial)}: "
                 + ", ".join(shown) + (f" ({result['epoch_s']:.1f} s)" if "epoch_s" in result else ""))

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = self._outcome(trial)
        what = (f"stopped by ASHA after {trial.last_result['epochs_done']} of {self._epochs(trial)} epochs"
                if outcome == "stopped" else "finished")
        self.say(f"trial {trial.trial_id} {what} {self._count(trials, trial, outcome)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.say(f"trial {trial.trial_id} errored (its log: {trial.path}) {self._count(trials, trial, 'errored')}")


def format_sweep(result: dict, metric: str) -> str:
    """The results table and where everything went, for the terminal."""
    lines = [format_table(result["table"], metric=metric), f"{'sweep:':<13}{result['folder']}"]
    for name, uri in result["outputs"].items():
        if uri:
            lines.append(f"{name + ':':<13}{', '.join(uri) if isinstance(uri, list) else uri}")
    return "\n".join(lines)
