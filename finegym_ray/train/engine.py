"""One engine for resumable Ray Train runs. Recognition (``run.py`` with its task in
``loop.py``), localization (``localize/train.py``) and Tune's trials (recognition under a
sweep's lease) plug in a :class:`Task`; the rest is written once, here.

Driver side (:func:`train_held`, :func:`fit`): the capacity check, the run's lease and
stall watchdog, the run folder at ``config.runs``/``run_name`` (local or s3://), its
``config.yaml``, the resume point (the newest complete checkpoint, its state loaded
once so that one that would run code is refused in one line before any worker starts,
its settings and data checked by the task), Ray Train's fit with the trainer of
``trainer.py``, and the check that the last epoch's checkpoint is there.

Worker side (:func:`train_loop_per_worker`): the seed, the model, optimizer and
schedule, the restore, DDP, then per epoch the task's training and validation, a
checkpoint (rank 0), pruning, the epoch's metrics to MLflow and W&B where the config
names them (rank 0, ``trackers.py``; the driver sets their runs up) and the report of
the epoch's metrics.

Checkpoints are written by ``checkpoint.py`` straight into the run folder rather than
handed to Ray Train: Ray's upload is not atomic and its own bookkeeping cannot tell a
complete checkpoint from a half-uploaded one, while ours writes a manifest last. A
worker that dies is replaced and restarts from the newest one (``max_failures``);
running the same config again continues after it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

from .. import storage
from ..config import parse_recorded_yaml, to_yaml
from ..errors import InputError
from ..lease import writer_lease
from . import checkpoint as checkpoints, trackers

Say = Callable[[str], None]


class Task(Protocol):
    """What one kind of run trains, as the engine's workers call it. Made on the driver
    and sent to every worker, so it pickles (torch is imported where it is used).
    ``config`` holds the engine's settings: ``epochs``, ``lr``, ``warmup_epochs``
    (``lr_schedule`` and ``lr_steps`` where it has them: else cosine), ``optimizer``,
    ``momentum``, ``weight_decay``, ``seed``, ``cpus_per_worker``, ``val_every`` and
    ``keep_checkpoints``."""

    label: ClassVar[str]  # the tag of the workers' lines: "[train] ..."
    config: Any

    @property
    def meta(self) -> dict:
        """What every checkpoint's meta.json holds before ``history`` (``class_names``,
        ``data_hash``: the input's settings hash, ...)."""

    @property
    def keep_best(self) -> bool:
        """Whether pruning keeps the checkpoint of the best ``val_mean_class``."""

    def setup(self, *, rank: int, world: int, device) -> None:
        """This worker's input, before anything else runs on it."""

    def build_model(self, *, pretrained: bool):
        """The model on CPU (``pretrained``: with pretrained weights, when the task has
        them; False when a checkpoint's weights replace them)."""

    def train_epoch(self, model, optimizer, epoch: int, *, bare, say: Say | None) -> Any:
        """One epoch's steps on ``model`` (DDP-wrapped when there are several workers;
        ``bare``: the module itself). Returns what :meth:`train_metrics` and
        :meth:`input_wait_s` read. ``say``: for lines within the epoch (rank 0), else None."""

    def train_metrics(self, trained: Any) -> dict:
        """The epoch's ``train_*`` metrics, the same on every worker (reduced over them)."""

    def input_wait_s(self, trained: Any) -> float | None:
        """Seconds the epoch was blocked on its input; None for input held in memory."""

    def validate(self, model) -> dict:
        """The ``val_*`` metrics on rank 0, of the bare module (so that DDP starts no
        collective)."""

    def epoch_line(self, metrics: dict, *, train_s: float, eta_s: float) -> str:
        """The log line of a finished epoch (``train_s``: seconds of its training steps,
        ``eta_s``: seconds left in the run at this pace)."""

    def after_checkpoint(self, run: str, history: list[dict], *, say: Say) -> None:
        """Whatever rank 0 writes beside each checkpoint, from the run's history."""


def run_uri(config: Any) -> str:
    """The run's folder or URI, ``config.runs``/``config.run_name``; a local one absolute,
    since Ray Train's workers may run in another working directory than the driver (the
    demo's checkpoints went there)."""
    runs = config.runs if storage.parse_uri(config.runs).is_s3 else os.path.abspath(config.runs)
    return storage.join(runs, config.run_name)


@dataclass
class Plan:
    """A run ready to fit. ``config`` names it and its scale (``runs``, ``run_name``,
    ``epochs``, ``workers``, ``cpus_per_worker``, ``use_gpu``, ``max_failures``); ``task``
    runs on the workers; ``check_resume`` raises InputError when the run's newest
    checkpoint cannot go on with these settings or this data; ``datasets`` makes the Ray
    Data input when training starts (those named in ``split`` are split among the
    workers, the others read whole)."""

    config: Any
    task: Task
    check_resume: Callable[[checkpoints.Checkpoint], None]
    datasets: Callable[[], dict] | None = None
    split: tuple[str, ...] = ()
    gpus_per_worker: float = 1.0
    # The state the driver loaded goes to the workers through the object store (a
    # detector's, small); without, each worker loads it again from storage, as safely (a
    # recognizer's, hundreds of MB, would sit in the object store beside Ray Data's
    # blocks for the whole run).
    hand_over_state: bool = False
    # RUN/failed.json when fit fails, which `finegym-ray runs` reports (runs.py).
    record_failures: bool = True


def train_held(plan_of: Callable[[], Plan], *, what: str, needs: list, break_lease: bool, say: Say,
               hint: str = "") -> dict:
    """Check that the cluster can hold ``needs`` (before anything is read or written: a
    cluster too small would wait forever), make the plan (before the lease: data that
    cannot train leaves no run folder), then fit it holding the run's lease
    (``lease.py``: another job is refused with LeaseHeld, ``break_lease`` removes a
    lease whose job is gone) under a stall watchdog (``hint``: what its warning adds).
    ``what`` names the job in those messages ("train NAME")."""
    from ..capacity import StallWatchdog, check_capacity

    check_capacity(needs, what=what)
    plan = plan_of()
    uri = run_uri(plan.config)
    with writer_lease(uri, what=what, break_lease=break_lease, say=say), \
            StallWatchdog(what, say=say, probe=lambda: sum(len(f.names) for f in checkpoints.listing(uri)),
                          hint=hint):
        return fit(plan, say=say)


def fit(plan: Plan, *, callbacks: tuple = (), say: Say = print, scope: trackers.Scope | None = None) -> dict:
    """Train (or resume) ``plan``'s run on the connected Ray cluster, for a caller that
    holds the run folder (:func:`train_held`, or a Tune trial under its sweep's lease).
    ``callbacks``: Ray Train run callbacks (Tune's ``TuneReportCallback``); ``scope``:
    the trackers' group and settings from the user's process (``trackers.py``; None:
    this process's).

    Returns ``run`` (its URI), ``checkpoint`` (the last one's URI), ``history`` (metrics
    per epoch) and ``class_names``. Raises InputError for a run that cannot resume with
    these settings or this data, RuntimeError when training fails past ``max_failures``."""
    from .runs import clear_failure, record_failure

    config = plan.config
    uri = run_uri(config)
    resumed = checkpoints.find_latest(uri, say=say, verify_state=True)
    handed = None
    if resumed:
        state = resumed.load_state()  # refused here, in one line, when it would run code
        plan.check_resume(resumed)
        if resumed.epoch + 1 >= config.epochs:
            say(f"{uri} has trained all {config.epochs} epochs")
            return _result(uri, resumed)
        if plan.hand_over_state:
            import ray

            handed = {"identity": resumed.identity, "state": ray.put(state)}
        say(f"resuming {uri} after {resumed.uri.rsplit('/', 1)[-1]}")
    else:
        storage.write_text(storage.join(uri, "config.yaml"), to_yaml(config))
    with trackers.tracking(config, uri, resumed, scope=scope, say=say) as tracking:
        trainer = torch_trainer(
            train_loop_per_worker, {"task": plan.task, "run": uri, "resume": handed, "tracking": tracking},
            name=config.run_name, runs=config.runs, workers=config.workers, cpus_per_worker=config.cpus_per_worker,
            use_gpu=config.use_gpu, gpus_per_worker=plan.gpus_per_worker, max_failures=config.max_failures,
            datasets=plan.datasets() if plan.datasets else None, datasets_to_split=list(plan.split),
            callbacks=callbacks)
        if plan.record_failures:
            clear_failure(uri)
        try:
            result = trainer.fit()
        except Exception as e:
            if plan.record_failures:
                record_failure(uri, e)
            raise
        if result.error:
            raise RuntimeError(f"training {uri} failed: {result.error}")
    last = checkpoints.find_latest(uri, say=say)
    if last is None or last.epoch + 1 < config.epochs:
        raise RuntimeError(f"training {uri} finished without the checkpoint of its last epoch")
    return _result(uri, last)


def _result(uri: str, checkpoint: checkpoints.Checkpoint) -> dict:
    return {"run": uri, "checkpoint": checkpoint.uri, "history": checkpoint.meta["history"],
            "class_names": checkpoint.meta["class_names"]}


def saved_settings(checkpoint: checkpoints.Checkpoint) -> dict:
    """The settings in a checkpoint's config.yaml, read as data from others is
    (``config.parse_recorded_yaml``); InputError naming it when it is not a YAML mapping."""
    where = f"{checkpoint.uri}/config.yaml"
    saved = parse_recorded_yaml(checkpoint.config_yaml, where)
    if not isinstance(saved, dict):
        raise InputError(f"{where}: not a mapping of settings")
    return saved


def check_same_settings(uri: str, config: Any, saved: dict, *, mutable: set[str]) -> None:
    """Refuse to resume the run at ``uri`` with settings that change the model or its
    data: every field of the dataclass ``config`` outside ``mutable`` must equal the
    run's ``saved`` settings."""
    changed = sorted(k for k, v in asdict(config).items() if k not in mutable and saved.get(k) != v)
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise InputError(f"{uri} was trained with other settings ({was}): use another name, "
                         f"or the same settings to resume")


def torch_trainer(train_fn: Callable[[dict], None], loop_config: dict, *, name: str, runs: str, workers: int,
                  cpus_per_worker: float, use_gpu: bool | None, max_failures: int, datasets: dict | None = None,
                  datasets_to_split: list[str] | None = None, callbacks: tuple = (),
                  gpus_per_worker: float = 1.0):
    """A TorchTrainer of ``workers`` DDP workers running ``train_fn(loop_config)``, its
    Ray Train state at ``runs``/``name`` (local or s3://), GPUs when ``use_gpu`` (None:
    when the cluster has them), and a Ctrl-C that stops the run and raises
    KeyboardInterrupt (``trainer.py``). The one place trainers are made."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

    from .trainer import StoppableTorchTrainer

    use_gpu = use_gpu if use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    fs, path = storage.pyarrow_filesystem(runs)
    return StoppableTorchTrainer(
        train_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if use_gpu else {})}),
        run_config=RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             # Our checkpoints are not reported to Ray (see the module docstring).
                             checkpoint_config=CheckpointConfig(num_to_keep=None), callbacks=list(callbacks)),
        datasets=datasets or {},
        dataset_config=DataConfig(datasets_to_split=datasets_to_split if datasets_to_split is not None else []),
    )


def history_table(history: list[dict], columns: list[tuple[str, str, str]], *, width: int) -> str:
    """``history`` (metrics per epoch) as a table, a column of ``width`` characters per
    (key, title, format); '-' where an epoch has no value."""
    lines = ["  ".join(f"{title:>{width}}" for _, title, _ in columns)]
    for m in history:
        lines.append("  ".join(f"{(fmt.format(m[k]) if m.get(k) is not None else '-'):>{width}}"
                               for k, _, fmt in columns))
    return "\n".join(lines)


def line_writer(tag: str) -> Say:
    """``say`` for code that Ray runs (a Train worker, a Tune trial): ``[tag] message``
    on stdout. Not print(): Ray Train patches it to log *and* echo, which shows every
    line twice."""
    def say(message: str) -> None:
        sys.stdout.write(f"[{tag}] {message}\n")
        sys.stdout.flush()

    return say


# -- what each Ray Train worker runs ---------------------------------------------------------


def train_loop_per_worker(args: dict) -> None:
    """Ray Train entry point. ``args``: ``task`` (the run's :class:`Task`), ``run`` (the
    run's URI), ``resume`` (the checkpoint the driver loaded and hands over, see
    :func:`_resume_point`; None: each worker loads it), ``tracking`` (the run's tracker
    runs, ``trackers.py``, which rank 0 logs to; None: no tracker)."""
    import ray.train
    import ray.train.torch
    import torch

    from . import steps

    task, run = args["task"], args["run"]
    config = task.config
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()
    say = line_writer(task.label)
    task.setup(rank=rank, world=world, device=device)

    # Every worker, after a restart too, resumes from what storage holds, not from Ray's
    # record of reported checkpoints (see the module docstring).
    resumed = _resume_point(run, args["resume"], say=say if rank == 0 else None)
    # Before the model is built, so that the seed sets its initial weights: the same on
    # every worker and in every fresh run with this seed.
    torch.manual_seed(config.seed)
    # On the device before the optimizer exists: a resumed optimizer state is loaded onto
    # its parameters' device, which must be the one they train on.
    model = task.build_model(pretrained=resumed is None).to(device)
    optimizer = steps.make_optimizer(model.parameters(), name=config.optimizer, lr=config.lr,
                                     momentum=config.momentum, weight_decay=config.weight_decay)
    # A recognition config names its schedule; the localization detector's is cosine.
    schedule = {"epochs": config.epochs, "warmup_epochs": config.warmup_epochs,
                "lr_schedule": getattr(config, "lr_schedule", "cosine"),
                "lr_steps": tuple(getattr(config, "lr_steps", None) or ())}
    scheduler = steps.make_scheduler(optimizer, **schedule)
    start_epoch, history = checkpoints.restore(resumed, model=model, optimizer=optimizer, scheduler=scheduler)
    if resumed is not None and rank == 0:
        say(f"resuming after {resumed[0].uri} ({start_epoch} of {config.epochs} epochs done)")
    tracker = trackers.logger(args["tracking"], history=history, resumed_meta=resumed and resumed[0].meta,
                              say=say) if rank == 0 else None
    model = ray.train.torch.prepare_model(model)
    bare = model.module if hasattr(model, "module") else model

    # The run's ETA from this session's whole epochs so far: checkpoint writes and
    # reports count, which outweigh the training of a small model's epoch.
    session_t0 = time.time()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.time()
        model.train()
        trained = task.train_epoch(model, optimizer, epoch, bare=bare, say=say if rank == 0 else None)
        train_s = time.time() - t0
        scheduler.step()
        metrics = {"epoch": epoch, "lr": config.lr * steps.lr_factor(epoch, **schedule),
                   **task.train_metrics(trained)}
        if rank == 0 and config.val_every and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            metrics.update(task.validate(bare))
        metrics["epoch_s"] = round(time.time() - t0, 2)
        waited = task.input_wait_s(trained)
        if waited is not None:
            metrics["data_wait_s"] = round(waited, 2)  # blocked on input: near 0 when data keeps up
        history.append(metrics)
        if rank == 0:  # one copy of the (DDP-identical) state; the others report metrics only
            eta = (time.time() - session_t0) / (epoch + 1 - start_epoch) * (config.epochs - epoch - 1)
            say(task.epoch_line(metrics, train_s=train_s, eta_s=eta))
            checkpoints.write(run, epoch, config_yaml=to_yaml(config),
                              state={"model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "epoch": epoch,
                                     "rng": checkpoints.rng_state()},
                              meta={**task.meta, "history": history, **trackers.checkpoint_meta(args["tracking"])})
            checkpoints.prune(run, keep_last=config.keep_checkpoints, keep_best=task.keep_best)
            task.after_checkpoint(run, history, say=say)
            if tracker is not None:
                tracker.log(metrics)
        ray.train.report(metrics)
    if tracker is not None:
        tracker.close()


def _resume_point(run: str, handed: dict | None, *, say: Say | None) -> tuple | None:
    """(checkpoint, state) a worker resumes from: the driver's (``handed``: the identity
    of the checkpoint it loaded and an ObjectRef of that state) while that is the run's
    newest checkpoint; else (none handed over, or a worker group restarted past a
    checkpoint this job wrote) the newest one, loaded here (``checkpoints.load_latest``).
    None: a fresh run."""
    if handed is not None:
        import ray

        latest = checkpoints.find_latest(run)
        if latest is not None and latest.identity == handed["identity"]:
            return latest, ray.get(handed["state"])
    return checkpoints.load_latest(run, say=say)
