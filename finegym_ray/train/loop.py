"""What each Ray Train worker runs: a thin shim over ``steps.py`` (the torch library) and
``checkpoint.py``. Build the model, resume from the newest complete checkpoint, train an
epoch over its shard, validate, write a checkpoint (rank 0) and report the metrics.

Checkpoints are written by ``checkpoint.py`` straight into the run folder rather than
handed to Ray Train: Ray's upload is not atomic and its own bookkeeping cannot tell a
complete checkpoint from a half-uploaded one, while ours writes a manifest last. A Tune
trial resumes the same way, from its own run folder.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn
from torch import nn

from .. import progress
from ..config import from_dict, to_yaml
from . import checkpoint as checkpoints
from . import steps
from .batches import EpochBatches, InputTimer
from .config import TrainConfig
from .run import model_for


class _Collate(NumpyBatchCollateFn):
    """Samples -> tensors, leaving out the string ``key`` column torch cannot hold."""

    def __call__(self, batch: dict) -> dict:
        # Ray Data's arrays are read-only views of Arrow buffers, which torch can hold only
        # with a warning (writing to such a tensor is undefined): a writable C-ordered
        # copy where needed (a batch's copy is cheap beside the step that takes it).
        return {k: torch.from_numpy(np.require(batch[k], requirements=("C", "W")))
                for k in ("x", "label", "flow_bound")}


def train_loop_per_worker(args: dict) -> None:
    """Ray Train entry point. ``args``: ``config`` (TrainConfig as a dict), ``class_names``,
    ``class_weights`` (list or None), ``run`` (the run's URI), ``data_hash`` (the
    preprocessing settings hash of the clips, recorded in every checkpoint), ``train_clips``
    (clips in the train split, for the progress lines within an epoch)."""
    import ray.train
    import ray.train.torch

    config = from_dict(TrainConfig, args["config"])
    class_names = args["class_names"]
    num_classes = len(class_names)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()

    run = args["run"]
    # Every worker, after a restart too, resumes from what storage holds, not from Ray's
    # record of reported checkpoints (see the module docstring).
    resumed = checkpoints.load_latest(run, say=_say if rank == 0 else None)
    # Before the model is built, so that the seed sets its initial weights: the same on
    # every worker and in every fresh run with this seed.
    torch.manual_seed(config.seed)
    model = model_for(config, num_classes, pretrained=resumed is None)
    if device.type == "cuda" and config.channels_last:
        # With channels-last weights, convolutions produce channels-last outputs whatever
        # the input's layout, so the input needs no conversion. Clip models (3-D
        # convolutions) take the 3-D form: an I3D-R50 step on an H200 took 0.020 s in it
        # against 0.043 s contiguous (benchmarks/gpu_check.py, 2026-12-04).
        model = model.to(memory_format=torch.channels_last_3d if config.clip_model else torch.channels_last)
    optimizer = steps.make_optimizer(model.parameters(), name=config.optimizer, lr=config.lr,
                                     momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = steps.make_scheduler(optimizer, epochs=config.epochs, warmup_epochs=config.warmup_epochs)
    start_epoch, history = checkpoints.restore(resumed, model=model, optimizer=optimizer, scheduler=scheduler)
    if resumed is not None and rank == 0:
        _say(f"resuming after {resumed[0].uri} ({start_epoch} of {config.epochs} epochs done)")
    model = ray.train.torch.prepare_model(model)
    bare = model.module if hasattr(model, "module") else model

    weights = args.get("class_weights")
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, device=device) if weights else None,
                                    label_smoothing=config.label_smoothing)
    train_batches = EpochBatches(ray.train.get_dataset_shard("train"), batch_size=config.batch_size,
                                 buffer_rows=config.shuffle_buffer, collate_fn=_Collate(), seed=config.seed)
    val_data = ray.train.get_dataset_shard("val") if rank == 0 and config.val_every else None
    autocast = steps.autocast_for(device, config.bf16)
    inputs = {"modality": config.modality, "clip_model": config.clip_model}

    # Rank 0's share of an epoch's clips (an equal split), for its lines within an epoch.
    shard_clips = -(-int(args.get("train_clips") or 0) // world) or None
    epoch_seconds = []  # of this session's epochs, for the run's ETA
    for epoch in range(start_epoch, config.epochs):
        t0 = time.time()
        model.train()
        tally = steps.Tally(num_classes, device)
        batches = InputTimer(train_batches.epoch(epoch, start_next=epoch + 1 < config.epochs))
        ticker, seen = progress.Ticker(PROGRESS_EVERY_S) if rank == 0 else None, 0
        for batch in batches:
            x = steps.model_input(batch["x"].to(device, non_blocking=True), batch["flow_bound"], **inputs)
            y = batch["label"].to(device)
            scores, loss = steps.train_step(model, x, y, optimizer, criterion, grad_clip=config.grad_clip,
                                            autocast=autocast)
            tally.add(scores, y, loss)
            if ticker is not None:
                seen += int(y.shape[0])
                if ticker.due():
                    _say(f"epoch {epoch + 1}/{config.epochs}: "
                         + progress.rate_eta(seen, shard_clips, time.time() - t0, "clips"))
        train_s = time.time() - t0
        scheduler.step()
        if world > 1:
            tally.all_reduce()
        metrics = {"epoch": epoch, "lr": config.lr * steps.lr_factor(epoch, epochs=config.epochs,
                                                                     warmup_epochs=config.warmup_epochs),
                   **tally.metrics("train")}
        if val_data is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            metrics.update(_validate(bare, val_data, batch_size=config.batch_size, num_classes=num_classes,
                                     device=device, autocast=autocast, inputs=inputs))
        metrics["epoch_s"] = round(time.time() - t0, 2)
        metrics["data_wait_s"] = round(batches.waited, 2)  # blocked on input: near 0 when data keeps up
        history.append(metrics)
        epoch_seconds.append(metrics["epoch_s"])
        if rank == 0:  # one copy of the (DDP-identical) state; the others report metrics only
            eta = sum(epoch_seconds) / len(epoch_seconds) * (config.epochs - epoch - 1)
            _say(progress.epoch_line(metrics, epochs=config.epochs, train_s=train_s, eta_s=eta))
            checkpoints.write(run, epoch, config_yaml=to_yaml(config),
                              state={"model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "epoch": epoch,
                                     "rng": checkpoints.rng_state()},
                              meta={"class_names": class_names, "data_hash": args.get("data_hash"),
                                    "history": history})
            checkpoints.prune(run, keep_last=config.keep_checkpoints, keep_best=config.keep_best)
            _write_curves(run, history, config)
        ray.train.report(metrics)


def _write_curves(run: str, history: list[dict], config: TrainConfig) -> None:
    # After the checkpoint, from its history: a resumed run's curves are rebuilt, never
    # appended to (curves.py). A chart that cannot be written costs a line, not the run.
    from .curves import write_curves

    try:
        write_curves(run, history, title=f"{config.run_name}: {config.model} {config.modality} {config.task}")
    except Exception as e:  # noqa: BLE001 - see above
        _say(f"warning: training curves not written ({type(e).__name__}: {e})")


PROGRESS_EVERY_S = 30.0  # a line within an epoch at most this often (seconds), on rank 0


def _say(message: str) -> None:
    # Not print(): Ray Train patches it to log *and* echo, which shows every line twice.
    sys.stdout.write(f"[train] {message}\n")
    sys.stdout.flush()


def _validate(model: nn.Module, data, *, batch_size: int, num_classes: int, device, autocast, inputs: dict) -> dict:
    """Centre-view accuracy on the validation split (rank 0 only, on the bare module so
    that DDP starts no collective)."""
    model.eval()
    tally = steps.Tally(num_classes, device)
    for batch in data.iter_torch_batches(batch_size=batch_size, collate_fn=_Collate()):
        x = steps.model_input(batch["x"][:, 0].to(device), batch["flow_bound"], **inputs)  # the one view
        y = batch["label"].to(device)
        scores = steps.eval_scores(model, x, autocast=autocast)
        tally.add(scores, y, nn.functional.cross_entropy(scores, y))
    return tally.metrics("val")

