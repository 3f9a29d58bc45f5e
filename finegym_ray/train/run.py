"""The training job: labels from the manifest, Ray Data input, the recognition task
(``loop.py``) on the training engine (``engine.py``), resume by name.

Runs live at ``config.runs``/``run_name`` (local or s3://): the checkpoints
(``epoch_NNNN/``, format in ``checkpoint.py``), our ``config.yaml`` and Ray Train's own
run state. Running the same config again continues after the newest complete
checkpoint; a worker that dies is replaced and restarts from it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import storage
from ..config import MAX_YAML_BYTES, parse_recorded_yaml
from ..dataset.labels import task_kind
from ..errors import InputError
from . import checkpoint as checkpoints
from .config import TrainConfig, recorded_config, with_absolute_paths
from .data import SplitLabels, check_clip_modality, present_split_labels, recorded_settings, sampled_clips
from .engine import Plan, check_same_settings, history_table, run_uri, train_held

# Settings a resume may change: they change where and how fast, not what is trained.
# epochs is not among them: the cosine schedule spans the run's epochs, so a resume with
# another number would continue on a schedule the run never had.
MUTABLE = {"workers", "cpus_per_worker", "use_gpu", "gpus_per_worker", "max_failures", "val_every", "runs",
           "test_views", "test_crops", "shuffle_buffer", "data", "keep_checkpoints", "keep_best", "mlflow", "wandb",
           "pretrained_strict"}


def class_weights(counts: np.ndarray) -> list[float]:
    """Inverse-frequency loss weights, mean 1 over the classes present (absent classes: 0)."""
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    present = counts > 0
    return (w / w[present].mean()).tolist()


def run_training(config: TrainConfig, *, break_lease: bool = False, say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run of ``config`` on the Ray cluster this process is
    connected to (the entry point connects).

    Returns ``run`` (its URI), ``checkpoint`` (the last one's URI), ``history`` (metrics
    per epoch). Raises InputError for data that cannot train this task or a run that
    cannot resume with these settings or this data, RuntimeError when training fails
    past ``max_failures``. One job trains a run at a time (``lease.py``): another is
    refused with LeaseHeld, and ``break_lease`` removes a lease whose job is gone.
    """
    from ..capacity import train_needs

    def plan() -> Plan:
        absolute = with_absolute_paths(config)  # the run records where its data is, from anywhere
        return training_plan(absolute, *training_labels(absolute, say=say), say=say)

    return train_held(plan, what=f"train {config.run_name}", needs=train_needs(config), break_lease=break_lease,
                      say=say, hint="Ray Data, which feeds training, starts a task only when a whole CPU is free "
                                    "beyond the workers'")


def training_labels(config: TrainConfig, *,
                    say: Callable[[str], None] = print) -> tuple[SplitLabels, SplitLabels | None]:
    """The train and (with ``val_every``) validation labels of ``config``'s task, of the
    clips that exist (``present_split_labels``: a labelled key whose video is missing or
    whose unit failed has none, and is said in the line this says); raises InputError
    when they cannot train it."""
    check_clip_modality(config.data, config.modality)  # the clip kind: load_split_labels checks it
    origin = recorded_settings(config.data).get("origin")  # clips imported rather than cut: from where
    if origin:
        say(f"clips {origin}")
    train = present_split_labels(config.data, config.task, config.train_split)
    if len(train.labels) < config.workers:  # an equal split would hand every worker nothing
        raise InputError(f"{config.data}: {len(train.labels)} {config.train_split} clips of task {config.task} "
                         f"cannot feed {config.workers} workers")
    val = present_split_labels(config.data, config.task, config.val_split) if config.val_every else None
    counts = train.counts()
    clips = "routines" if task_kind(config.task) == "event" else "clips"
    say(f"task {config.task}: {train.num_classes} classes, {len(train.labels)} train {clips} "
        f"({int((counts > 0).sum())} classes present)"
        + (f", {len(val.labels)} val {clips}" if val else ""))
    line = _absent_line(train, val, clips)
    if line:
        say(line)
    return train, val


def _absent_line(train: SplitLabels, val: SplitLabels | None, clips: str) -> str:
    absent = [f"{name} {split.absent_note()} of {split.labelled:,} labelled" for name, split in
              (("train", train), ("val", val)) if split is not None and split.absent]
    return f"training on the {clips} that exist: " + "; ".join(absent) if absent else ""


def absent_line(config: TrainConfig) -> str:
    """The line ``training_labels`` says of the labelled keys of ``config``'s splits that
    have no clip, '' when every one has: for a sweep's driver, before its trials."""
    train = present_split_labels(config.data, config.task, config.train_split)
    val = present_split_labels(config.data, config.task, config.val_split) if config.val_every else None
    return _absent_line(train, val, "routines" if task_kind(config.task) == "event" else "clips")


def split_coverage(train: SplitLabels, val: SplitLabels | None) -> dict:
    """What a run's checkpoints record of its clips (meta.json's ``coverage``): per split,
    the ``clips`` used and the ``labelled`` keys of the split."""
    return {name: {"clips": len(split.labels), "labelled": split.labelled}
            for name, split in (("train", train), ("val", val)) if split is not None}


def training_plan(config: TrainConfig, train: SplitLabels, val: SplitLabels | None, *,
                  say: Callable[[str], None] = print) -> Plan:
    """The engine's plan of ``config``'s run: Ray Data input of the ``train`` (and
    ``val``) labels, ``config.workers`` DDP workers, run state at
    ``config.runs``/``run_name``, ``config.pretrained`` checked (``pretrained_record``).
    A Tune trial fits it under its sweep's lease."""
    from ..store import recorded_hash as settings_hash
    from .loop import Recognition  # torch: imported once a run trains, not with this module

    config = with_absolute_paths(config)
    uri = run_uri(config)
    data_hash = settings_hash(config.data)

    def check_resume(resumed: checkpoints.Checkpoint) -> None:
        _check_same_config(uri, config)
        _check_same_data(resumed, config.data, data_hash)

    def datasets() -> dict:
        made = {"train": sampled_clips(config, train, train=True)}
        if val:
            made["val"] = sampled_clips(config, val, train=False, one_view=True)
        return made

    task = Recognition(config, class_names=list(train.class_names), train_clips=len(train.labels),
                       class_weights=class_weights(train.counts()) if config.class_balance == "loss" else None,
                       data_hash=data_hash, coverage=split_coverage(train, val),
                       pretrained=pretrained_record(config, uri, train.num_classes, say=say))
    # Only train is split: validation runs whole on rank 0 so that no clip is dropped to
    # even out the shards. One worker needs no split: without it the train input runs in
    # the worker, as validation does, instead of in a coordinator actor that took 0.2-0.4
    # of a core on 2 cores.
    return Plan(config, task, check_resume, datasets=datasets, split=("train",) if config.workers > 1 else (),
                gpus_per_worker=config.gpus_per_worker)


def pretrained_record(config: TrainConfig, uri: str, num_classes: int, *,
                      say: Callable[[str], None] = print) -> dict | None:
    """What the run at ``uri`` records of ``config.pretrained`` (its SHA-256 and load
    counts, ``weights.LoadReport.record``; None without one): a run that has a
    checkpoint keeps its own record, as its weights replace these; a fresh one loads
    them here once, on the driver, saying the load report, so that weights that would
    be refused are refused in one line before any worker starts."""
    if not config.pretrained:
        return None
    latest = checkpoints.find_latest(uri)
    if latest is not None:
        return latest.meta.get("pretrained")
    from .loop import check_pretrained

    return check_pretrained(config, num_classes, say=say)


def _check_same_config(uri: str, config: TrainConfig) -> None:
    """Refuse to resume a run with settings that change the model or its data."""
    where = storage.join(uri, "config.yaml")
    saved = recorded_config(parse_recorded_yaml(storage.read_text(where, max_bytes=MAX_YAML_BYTES), where), where)
    # A run recorded before lr_schedule, backbone or ActionVLAD's settings existed trained
    # on the cosine schedule over a ResNet, with those settings at their defaults.
    before = {"lr_schedule": "cosine", "backbone": "resnet", "vlad_clusters": 64, "vlad_centres": "kmeans",
              "freeze_vlad_epochs": 0, "freeze_backbone_before": ""}
    check_same_settings(uri, config, {**before, **saved}, mutable=MUTABLE)


def _check_same_data(checkpoint: checkpoints.Checkpoint, data: str, data_hash: str | None) -> None:
    """Refuse to resume on clips cut with other preprocessing settings than the run's."""
    theirs = checkpoint.meta.get("data_hash")
    if theirs != data_hash:
        raise InputError(f"{checkpoint.uri} was trained on clips with preprocessing settings hash {theirs}, "
                         f"but {data} holds hash {data_hash}: resume on the same clips, or use another name")


def checkpoint_config(checkpoint: checkpoints.Checkpoint) -> TrainConfig:
    """The TrainConfig a checkpoint was written with; ConfigError for one recorded by
    another version (``recorded_config``)."""
    from ..config import from_dict

    where = f"{checkpoint.uri}/config.yaml"
    return from_dict(TrainConfig, recorded_config(parse_recorded_yaml(checkpoint.config_yaml, where), where), where)


def load_checkpoint_model(checkpoint: checkpoints.Checkpoint):
    """(model on CPU in eval mode, TrainConfig, class names) from a verified checkpoint."""
    from .loop import model_for

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
    # Stored 0-based; counted from 1 as the log and folders count.
    return history_table([{**m, "epoch": m["epoch"] + 1} for m in history], cols, width=10)
