"""The training job: labels from the manifest, Ray Data input, a TorchTrainer, resume by name.

Runs live at ``config.runs``/``run_name`` (local or s3://): Ray Train's checkpoints
(``epoch_NNNN/``) and our ``config.yaml``. Running the same config again continues
after the last checkpoint; a worker that dies is replaced and restarts from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from typing import Callable

import numpy as np

from .. import storage
from ..config import to_yaml
from .config import TrainConfig
from .data import load_split_labels, sampled_clips

CHECKPOINT_PREFIX = "epoch_"


def run_uri(config: TrainConfig) -> str:
    return storage.join(config.runs, config.run_name)


def class_weights(counts: np.ndarray) -> list[float]:
    """Inverse-frequency loss weights, mean 1 over the classes present (absent classes: 0)."""
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    present = counts > 0
    return (w / w[present].mean()).tolist()


def run_training(config: TrainConfig, *, say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run of ``config`` on the current Ray cluster.

    Returns ``run`` (its URI), ``checkpoint`` (the last one's URI), ``history`` (metrics
    per epoch). Raises ValueError for data that cannot train this task, RuntimeError
    when training fails past ``max_failures``.
    """
    import ray
    import ray.train
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = load_split_labels(config.data, config.task, config.train_split)
    if len(train.labels) < config.workers:  # an equal split would hand every worker nothing
        raise ValueError(f"{config.data}: {len(train.labels)} {config.train_split} clips of task {config.task} "
                         f"cannot feed {config.workers} workers")
    val = load_split_labels(config.data, config.task, config.val_split) if config.val_every else None
    counts = train.counts()
    say(f"task {config.task}: {train.num_classes} classes, {len(train.labels)} train clips "
        f"({int((counts > 0).sum())} classes present)"
        + (f", {len(val.labels)} val clips" if val else ""))
    use_gpu = config.use_gpu if config.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    uri = run_uri(config)
    resumed = latest_checkpoint(uri)
    if resumed:
        _check_same_config(uri, config)
        done = _result(uri, resumed)
        if done["history"][-1]["epoch"] + 1 >= config.epochs:
            say(f"{uri} has trained all {config.epochs} epochs")
            return done
        say(f"resuming {uri} after {resumed.rsplit('/', 1)[-1]}")
    else:
        storage.write_text(storage.join(uri, "config.yaml"), to_yaml(config))

    datasets = {"train": sampled_clips(config, train, train=True)}
    if val:
        datasets["val"] = sampled_clips(config, val, train=False, one_view=True)
    fs, path = storage.pyarrow_filesystem(config.runs)
    trainer = TorchTrainer(
        _train_fn,
        train_loop_config={"config": asdict(config), "class_names": list(train.class_names),
                           "class_weights": class_weights(counts) if config.class_balance == "loss" else None},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker}),
        run_config=RunConfig(name=config.run_name, storage_path=path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=None)),
        datasets=datasets,
        # Only train is split: validation runs whole on rank 0 so that no clip is dropped
        # to even out the shards. One worker needs no split: without it the train input
        # runs in the worker, as validation does, instead of in a coordinator actor that
        # took 0.2-0.4 of a core on 2 cores.
        dataset_config=DataConfig(datasets_to_split=["train"] if config.workers > 1 else []),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training {uri} failed: {result.error}")
    last = latest_checkpoint(uri)
    if last is None:
        raise RuntimeError(f"training {uri} finished without a checkpoint")
    return _result(uri, last)


def _result(uri: str, checkpoint: str) -> dict:
    meta = json.loads(storage.read_text(storage.join(checkpoint, "meta.json")))
    return {"run": uri, "checkpoint": checkpoint, "history": meta["history"], "class_names": meta["class_names"]}


def _train_fn(args: dict) -> None:
    # Imported here so the driver does not load torch models before Ray starts the workers.
    from .loop import train_loop_per_worker
    train_loop_per_worker(args)


def latest_checkpoint(run: str) -> str | None:
    """URI of the run's newest complete checkpoint (highest epoch holding meta.json), or None."""
    epochs = set()
    for uri in storage.list_uris(run):
        rel = uri[len(run.rstrip("/")) + 1:]
        head, _, tail = rel.partition("/")
        if head.startswith(CHECKPOINT_PREFIX) and tail == "meta.json":
            epochs.add(head)
    return storage.join(run, max(epochs)) if epochs else None


def _check_same_config(uri: str, config: TrainConfig) -> None:
    """Refuse to resume a run with settings that change the model or its data."""
    import yaml

    saved = yaml.safe_load(storage.read_text(storage.join(uri, "config.yaml")))
    mutable = {"epochs", "workers", "cpus_per_worker", "use_gpu", "max_failures", "val_every", "runs",
               "test_views", "test_crops", "shuffle_buffer", "data"}
    changed = sorted(k for k, v in asdict(config).items() if k not in mutable and saved.get(k) != v)
    if changed:
        raise ValueError(f"{uri} was trained with other settings ({', '.join(changed)}): "
                         f"use another name, or the same settings to resume")


def load_checkpoint_model(checkpoint: str):
    """(model on CPU in eval mode, TrainConfig, class names) from a checkpoint URI."""
    import torch
    import yaml

    from ..config import from_dict
    from .loop import build_model

    config = from_dict(TrainConfig, yaml.safe_load(storage.read_text(storage.join(checkpoint, "config.yaml"))))
    meta = json.loads(storage.read_text(storage.join(checkpoint, "meta.json")))
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "state.pt")
        storage.download_file(storage.join(checkpoint, "state.pt"), local)
        state = torch.load(local, map_location="cpu", weights_only=False)
    model = build_model(config, len(meta["class_names"]), pretrained=False)
    model.load_state_dict(state["model"])
    return model.eval(), config, meta["class_names"]


def format_history(history: list[dict]) -> str:
    """The metrics of each epoch as a table (accuracies in percent)."""
    cols = [("epoch", "epoch", "{:d}"), ("train_loss", "loss", "{:.3f}"), ("train_top1", "train top1", "{:.1%}"),
            ("train_mean_class", "train mean", "{:.1%}"), ("val_top1", "val top1", "{:.1%}"),
            ("val_mean_class", "val mean", "{:.1%}"), ("epoch_s", "s", "{:.1f}"),
            ("data_wait_s", "wait s", "{:.1f}")]
    lines = ["  ".join(f"{title:>10}" for _, title, _ in cols)]
    for m in history:
        lines.append("  ".join(f"{(fmt.format(m[k]) if m.get(k) is not None else '-'):>10}" for k, _, fmt in cols))
    return "\n".join(lines)
