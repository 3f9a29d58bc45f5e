"""The training job: labels from the manifest, Ray Data input, a TorchTrainer, resume by name.

Runs live at ``config.runs``/``run_name`` (local or s3://): the checkpoints
(``epoch_NNNN/``, format in ``checkpoint.py``), our ``config.yaml`` and Ray Train's own
run state. Running the same config again continues after the newest complete
checkpoint; a worker that dies is replaced and restarts from it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Callable

import numpy as np

from .. import storage
from ..config import MAX_YAML_BYTES, parse_recorded_yaml, to_yaml
from ..dataset.labels import task_kind
from ..lease import writer_lease
from . import checkpoint as checkpoints
from .config import TrainConfig, recorded_config, recorded_paths, with_absolute_paths
from .data import SplitLabels, check_clip_modality, load_split_labels, sampled_clips


def run_uri(config: TrainConfig) -> str:
    """The run's folder or URI; a local one absolute, since Ray Train's workers may run
    in another working directory than the driver (the demo's checkpoints went there)."""
    runs = config.runs if storage.parse_uri(config.runs).is_s3 else os.path.abspath(config.runs)
    return storage.join(runs, config.run_name)


def class_weights(counts: np.ndarray) -> list[float]:
    """Inverse-frequency loss weights, mean 1 over the classes present (absent classes: 0)."""
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    present = counts > 0
    return (w / w[present].mean()).tolist()


def run_training(config: TrainConfig, *, break_lease: bool = False, say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run of ``config`` on the Ray cluster this process is
    connected to (the entry point connects).

    Returns ``run`` (its URI), ``checkpoint`` (the last one's URI), ``history`` (metrics
    per epoch). Raises ValueError for data that cannot train this task or a run that
    cannot resume with these settings or this data, RuntimeError when training fails
    past ``max_failures``. One job trains a run at a time (``lease.py``): another is
    refused with LeaseHeld, and ``break_lease`` removes a lease whose job is gone.
    """
    from ..capacity import StallWatchdog, check_capacity, train_needs

    # Before anything is read or written: a cluster too small would wait forever.
    check_capacity(train_needs(config), what=f"train {config.run_name}")
    config = with_absolute_paths(config)  # the run records where its data is, from anywhere
    train, val = training_labels(config, say=say)  # before the lease: bad data leaves no run folder
    uri = run_uri(config)
    with writer_lease(uri, what=f"train {config.run_name}", break_lease=break_lease, say=say), \
            StallWatchdog(f"train {config.run_name}", say=say,
                          probe=lambda: sum(len(f.names) for f in checkpoints.listing(uri)),
                          hint="Ray Data, which feeds training, starts a task only when a whole CPU is free "
                               "beyond the workers'"):
        return train_run(config, train, val, say=say)


def training_labels(config: TrainConfig, *,
                    say: Callable[[str], None] = print) -> tuple[SplitLabels, SplitLabels | None]:
    """The train and (with ``val_every``) validation labels of ``config``'s task; raises
    ValueError when they cannot train it, or when the run exists under a task name that
    has changed meaning since (``refuse_renamed_task``)."""
    refuse_renamed_task(config)
    check_clip_modality(config.data, config.modality)  # the clip kind: load_split_labels checks it
    train = load_split_labels(config.data, config.task, config.train_split)
    if len(train.labels) < config.workers:  # an equal split would hand every worker nothing
        raise ValueError(f"{config.data}: {len(train.labels)} {config.train_split} clips of task {config.task} "
                         f"cannot feed {config.workers} workers")
    val = load_split_labels(config.data, config.task, config.val_split) if config.val_every else None
    counts = train.counts()
    clips = "routines" if task_kind(config.task) == "event" else "clips"
    say(f"task {config.task}: {train.num_classes} classes, {len(train.labels)} train {clips} "
        f"({int((counts > 0).sum())} classes present)"
        + (f", {len(val.labels)} val {clips}" if val else ""))
    return train, val


def refuse_renamed_task(config: TrainConfig) -> None:
    """Raise ValueError when ``config``'s run exists, recorded with a task name that meant
    another task then (a run of the old ``event``, the sub-action task now called
    ``subaction_event``, asked to resume as ``event``): its checkpoints hold another
    task's model, trained on other clips. Checked before the labels, whose own refusals
    (no event clips in the store) would not name the cause."""
    uri = storage.join(run_uri(config), "config.yaml")
    try:
        raw = parse_recorded_yaml(storage.read_text(uri, max_bytes=MAX_YAML_BYTES), uri)
    except FileNotFoundError:
        return
    if not isinstance(raw, dict):
        return  # not a config we wrote: _check_same_config refuses it on resume
    saved, renamed = recorded_config(raw, uri)
    if renamed and config.task == raw.get("task") != saved["task"]:
        raise ValueError(f"{run_uri(config)} was trained on task {saved['task']!r}, recorded under its old name "
                         f"{config.task!r}; {config.task!r} is now routine-level event recognition (10 events): "
                         f"resume the run with --set task={saved['task']} --set name={config.run_name}, or train "
                         f"{config.task!r} under another name (--set name=...)")


def train_run(config: TrainConfig, train: SplitLabels, val: SplitLabels | None, *, callbacks: tuple = (),
              say: Callable[[str], None] = print) -> dict:
    """:func:`run_training` without the lease, for a caller that owns the run folder
    already (a Tune trial, under its sweep's lease). ``callbacks``: Ray Train run
    callbacks (Tune's ``TuneReportCallback``)."""
    from ..preprocess.pipeline import settings_hash

    config = with_absolute_paths(config)
    uri = run_uri(config)
    data_hash = settings_hash(config.data)
    resumed = checkpoints.find_latest(uri, say=say, verify_state=True)
    if resumed:
        # Unpickled here once, so that a state that would run code is refused in one line
        # before any worker starts (the workers load it again, as safely).
        resumed.load_state()
        _check_same_config(uri, config)
        _check_same_data(resumed, config.data, data_hash)
        if resumed.epoch + 1 >= config.epochs:
            say(f"{uri} has trained all {config.epochs} epochs")
            return _result(uri, resumed)
        say(f"resuming {uri} after {resumed.uri.rsplit('/', 1)[-1]}")  # a format-1 folder keeps its name
    else:
        storage.write_text(storage.join(uri, "config.yaml"), to_yaml(config))
    trainer = make_trainer(config, train, val, data_hash=data_hash, callbacks=callbacks)
    from .runs import clear_failure, record_failure

    clear_failure(uri)
    try:
        result = trainer.fit()
    except Exception as e:
        record_failure(uri, e)  # what `finegym-ray runs` reports as failed (runs.py)
        raise
    if result.error:
        raise RuntimeError(f"training {uri} failed: {result.error}")
    last = checkpoints.find_latest(uri, say=say)
    if last is None or last.epoch + 1 < config.epochs:
        raise RuntimeError(f"training {uri} finished without the checkpoint of its last epoch")
    return _result(uri, last)


def make_trainer(config: TrainConfig, train: SplitLabels, val: SplitLabels | None, *, data_hash: str | None,
                 callbacks: tuple = ()):
    """The TorchTrainer of ``config``'s run: Ray Data input of the ``train`` (and ``val``)
    labels, ``config.workers`` DDP workers, run state at ``config.runs``/``run_name``.
    ``data_hash`` (the clips' preprocessing settings hash) goes into every checkpoint."""
    datasets = {"train": sampled_clips(config, train, train=True)}
    if val:
        datasets["val"] = sampled_clips(config, val, train=False, one_view=True)
    return torch_trainer(
        _train_fn,
        {"config": asdict(config), "class_names": list(train.class_names),
         "class_weights": class_weights(train.counts()) if config.class_balance == "loss" else None,
         "run": run_uri(config), "data_hash": data_hash, "train_clips": len(train.labels)},
        name=config.run_name, runs=config.runs, workers=config.workers, cpus_per_worker=config.cpus_per_worker,
        use_gpu=config.use_gpu, gpus_per_worker=config.gpus_per_worker, max_failures=config.max_failures,
        datasets=datasets,
        # Only train is split: validation runs whole on rank 0 so that no clip is dropped
        # to even out the shards. One worker needs no split: without it the train input
        # runs in the worker, as validation does, instead of in a coordinator actor that
        # took 0.2-0.4 of a core on 2 cores.
        datasets_to_split=["train"] if config.workers > 1 else [], callbacks=callbacks)


def torch_trainer(train_fn: Callable[[dict], None], loop_config: dict, *, name: str, runs: str, workers: int,
                  cpus_per_worker: float, use_gpu: bool | None, max_failures: int, datasets: dict | None = None,
                  datasets_to_split: list[str] | None = None, callbacks: tuple = (),
                  gpus_per_worker: float = 1.0):
    """A TorchTrainer of ``workers`` DDP workers running ``train_fn(loop_config)``, its
    Ray Train state at ``runs``/``name`` (local or s3://), GPUs when ``use_gpu`` (None:
    when the cluster has them), and a Ctrl-C that stops the run and raises
    KeyboardInterrupt (``trainer.py``). The one place trainers are made: recognition
    (:func:`make_trainer`), Tune's trials through it, and localization."""
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
                             # Our checkpoints are not reported to Ray (see loop.py).
                             checkpoint_config=CheckpointConfig(num_to_keep=None), callbacks=list(callbacks)),
        datasets=datasets or {},
        dataset_config=DataConfig(datasets_to_split=datasets_to_split if datasets_to_split is not None else []),
    )


def _result(uri: str, checkpoint: checkpoints.Checkpoint) -> dict:
    return {"run": uri, "checkpoint": checkpoint.uri, "history": checkpoint.meta["history"],
            "class_names": checkpoint.meta["class_names"]}


def _train_fn(args: dict) -> None:
    # Imported here so the driver does not load torch models before Ray starts the workers.
    from .loop import train_loop_per_worker
    train_loop_per_worker(args)


def _check_same_config(uri: str, config: TrainConfig) -> None:
    """Refuse to resume a run with settings that change the model or its data."""
    where = storage.join(uri, "config.yaml")
    saved, _ = recorded_config(parse_recorded_yaml(storage.read_text(where, max_bytes=MAX_YAML_BYTES), where), where)
    # A run recorded with relative paths (before they were recorded absolute) compares
    # as the absolute paths they meant, as this config's are.
    saved, _ = recorded_paths(saved, uri)
    # epochs is not among them: the cosine schedule spans the run's epochs, so a resume
    # with another number would continue on a schedule the run never had.
    mutable = {"workers", "cpus_per_worker", "use_gpu", "gpus_per_worker", "max_failures", "val_every", "runs",
               "test_views", "test_crops", "shuffle_buffer", "data", "keep_checkpoints", "keep_best"}
    changed = sorted(k for k, v in asdict(config).items() if k not in mutable and saved.get(k) != v)
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise ValueError(f"{uri} was trained with other settings ({was}): use another name, "
                         f"or the same settings to resume")


def _check_same_data(checkpoint: checkpoints.Checkpoint, data: str, data_hash: str | None) -> None:
    """Refuse to resume on clips cut with other preprocessing settings than the run's."""
    theirs = checkpoint.meta.get("data_hash")
    if theirs != data_hash:
        raise ValueError(f"{checkpoint.uri} was trained on clips with preprocessing settings hash {theirs}, "
                         f"but {data} holds hash {data_hash}: resume on the same clips, or use another name")


def checkpoint_config(checkpoint: checkpoints.Checkpoint, *, say: Callable[[str], None] | None = None) -> TrainConfig:
    """The TrainConfig a checkpoint was written with, in today's task names
    (``recorded_config``: a run recorded with the old ``event`` task is read as
    ``subaction_event``, the task it trained; ``say`` hears of it) and with absolute
    paths (``recorded_paths``: relative ones of an older run resolved against the folder
    it was trained in; ``say`` hears how)."""
    from ..config import from_dict

    where = f"{checkpoint.uri}/config.yaml"
    data, renamed = recorded_config(parse_recorded_yaml(checkpoint.config_yaml, where), where)
    data, relative = recorded_paths(data, checkpoints.run_of(checkpoint.uri))
    for note in (renamed, relative):
        if note and say is not None:
            say(note)
    return from_dict(TrainConfig, data, where)


def model_for(config: TrainConfig, num_classes: int, *, pretrained: bool = True):
    """The model ``config`` names, initialised from ``config.pretrained`` when given and
    ``pretrained`` (weights about to be replaced by a checkpoint's need no download)."""
    from .steps import build_model

    return build_model(config.model, pretrained=config.pretrained if pretrained else None,
                       **config.model_kwargs(num_classes))


def load_checkpoint_model(checkpoint: checkpoints.Checkpoint):
    """(model on CPU in eval mode, TrainConfig, class names) from a verified checkpoint."""
    config = checkpoint_config(checkpoint)
    model = model_for(config, len(checkpoint.meta["class_names"]), pretrained=False)
    model.load_state_dict(checkpoint.load_state()["model"])
    return model.eval(), config, checkpoint.meta["class_names"]


def format_history(history: list[dict]) -> str:
    """The metrics of each epoch as a table (accuracies in percent)."""
    cols = [("epoch", "epoch", "{:d}"), ("train_loss", "loss", "{:.3f}"), ("train_top1", "train top1", "{:.1%}"),
            ("train_mean_class", "train mean", "{:.1%}"), ("val_top1", "val top1", "{:.1%}"),
            ("val_mean_class", "val mean", "{:.1%}"), ("epoch_s", "s", "{:.1f}"),
            ("data_wait_s", "wait s", "{:.1f}")]
    lines = ["  ".join(f"{title:>10}" for _, title, _ in cols)]
    for m in history:
        m = {**m, "epoch": m["epoch"] + 1}  # stored 0-based; counted from 1 as the log and folders count
        lines.append("  ".join(f"{(fmt.format(m[k]) if m.get(k) is not None else '-'):>10}" for k, _, fmt in cols))
    return "\n".join(lines)
