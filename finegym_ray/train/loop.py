"""What each Ray Train worker runs: build the model, resume from the newest complete
checkpoint, train an epoch over its shard, validate, write a checkpoint (rank 0) and
report the metrics.

Checkpoints are written by ``checkpoint.py`` straight into the run folder rather than
handed to Ray Train: Ray's upload is not atomic and its own bookkeeping cannot tell a
complete checkpoint from a half-uploaded one, while ours writes a manifest last.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from ray.data.collate_fn import NumpyBatchCollateFn
from torch import nn

from .. import storage
from ..config import from_dict, to_yaml
from ..metrics import confusion_matrix, confusion_mean_class, confusion_top1
from ..models.recognizers import MODELS
from ..models.resnet import adapt_input_channels, inflate_state_dict
from . import checkpoint as checkpoints
from .batches import EpochBatches, InputTimer
from .config import TrainConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Flow enters the network in pixels / FLOW_SCALE_PX, whatever bound the shards were cut with.
FLOW_SCALE_PX = 20.0


def build_model(config: TrainConfig, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """The model the config names, initialised from ``config.pretrained`` when given and
    ``pretrained`` (weights about to be replaced by a checkpoint's need no download)."""
    model = MODELS[config.model](**config.model_kwargs(num_classes))
    if pretrained and config.pretrained:
        load_pretrained(model, config)
    return model


def load_pretrained(model: nn.Module, config: TrainConfig) -> None:
    """Load a torchvision-named ResNet state dict into the model's backbone: inflated to
    3-D for clip models, first conv adapted when the input is not RGB. Layers that do
    not fit (the classifier, new blocks) keep their initialisation."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "weights.pt")
        storage.download_file(config.pretrained, local)
        state = torch.load(local, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone = model.backbone
    if config.in_channels != 3:
        state = adapt_input_channels(state, config.in_channels)
    if config.clip_model:
        state = inflate_state_dict(state, backbone)
    target = backbone.state_dict()
    fitting = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    if not fitting:
        raise ValueError(f"{config.pretrained}: no tensor fits a {config.model} backbone of depth {config.depth}")
    backbone.load_state_dict(fitting, strict=False)


def model_input(x: torch.Tensor, flow_bound: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """uint8 samples (..., T, C, H, W) -> float network input: RGB scaled with ImageNet's
    mean/std; flow dequantized with each clip's bound, in pixels / FLOW_SCALE_PX. Clip
    models get (B, C, T, H, W)."""
    x = x.float()
    if config.modality == "rgb":
        c = x.shape[-3]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).repeat(c // 3).view(c, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).repeat(c // 3).view(c, 1, 1)
        x = (x / 255.0 - mean) / std
    else:
        b = flow_bound.to(x.device).view(-1, *([1] * (x.dim() - 1)))
        x = (x * (2.0 * b / 255.0) - b) / FLOW_SCALE_PX
    if config.clip_model:
        x = x.transpose(-4, -3)  # (B, T, C, H, W) -> (B, C, T, H, W)
    return x


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, as the config says."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def lr_factor(epoch: int, config: TrainConfig) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): linear warm-up, then cosine to 0."""
    if epoch < config.warmup_epochs:
        return (epoch + 1) / (config.warmup_epochs + 1)
    span = max(config.epochs - config.warmup_epochs, 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - config.warmup_epochs) / span))


class _Collate(NumpyBatchCollateFn):
    """Samples -> tensors, leaving out the string ``key`` column torch cannot hold."""

    def __call__(self, batch: dict) -> dict:
        return {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in ("x", "label", "flow_bound")}


def train_step(model: nn.Module, batch: dict, y: torch.Tensor, optimizer: torch.optim.Optimizer, criterion,
               config: TrainConfig, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on ``batch`` (uint8 ``x``, ``flow_bound``) with labels ``y``
    on the model's device, inside ``autocast`` (bf16 on GPU). Returns (scores, loss)."""
    device = y.device
    # With channels-last weights, convolutions produce channels-last outputs whatever
    # the input's layout, so the input needs no conversion.
    x = model_input(batch["x"].to(device, non_blocking=True), batch["flow_bound"], config)
    with autocast:
        scores = model(x)
        loss = criterion(scores.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return scores, loss


def train_loop_per_worker(args: dict) -> None:
    """Ray Train entry point. ``args``: ``config`` (TrainConfig as a dict), ``class_names``,
    ``class_weights`` (list or None), ``run`` (the run's URI), ``data_hash`` (the
    preprocessing settings hash of the clips, recorded in every checkpoint)."""
    import ray.train
    import ray.train.torch

    config = from_dict(TrainConfig, args["config"])
    class_names = args["class_names"]
    num_classes = len(class_names)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"

    run = args["run"]
    # Every worker, after a restart too, resumes from what storage holds, not from Ray's
    # record of reported checkpoints (see the module docstring).
    resumed = checkpoints.load_latest(run, say=_say if rank == 0 else None)
    model = build_model(config, num_classes, pretrained=resumed is None)
    if on_gpu and config.channels_last and not config.clip_model:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, config))
    start_epoch, history = 0, []
    if resumed is not None:
        found, state = resumed
        history = found.meta["history"]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoints.set_rng_state(state["rng"])
        start_epoch = found.epoch + 1
        if rank == 0:
            _say(f"resuming after {found.uri} (epoch {start_epoch} of {config.epochs})")
    else:
        torch.manual_seed(config.seed)  # the same initial weights on every worker and every fresh run
    model = ray.train.torch.prepare_model(model)
    bare = model.module if hasattr(model, "module") else model

    weights = args.get("class_weights")
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, device=device) if weights else None,
                                    label_smoothing=config.label_smoothing)
    train_batches = EpochBatches(ray.train.get_dataset_shard("train"), batch_size=config.batch_size,
                                 buffer_rows=config.shuffle_buffer, collate_fn=_Collate(), seed=config.seed)
    val_data = ray.train.get_dataset_shard("val") if rank == 0 and config.val_every else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and config.bf16)

    for epoch in range(start_epoch, config.epochs):
        t0 = time.time()
        model.train()
        # Kept on the device (no sync per step; NCCL reduces device tensors only).
        conf = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=device)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, samples
        batches = InputTimer(train_batches.epoch(epoch, start_next=epoch + 1 < config.epochs))
        for batch in batches:
            y = batch["label"].to(device)
            scores, loss = train_step(model, batch, y, optimizer, criterion, config, autocast)
            n = torch.tensor(len(y), dtype=torch.float64, device=device)
            loss_sum += torch.stack([loss.detach().double() * n, n])
            conf += torch.bincount(y * num_classes + scores.detach().argmax(1),
                                   minlength=num_classes * num_classes).double()
        scheduler.step()
        if world > 1:
            torch.distributed.all_reduce(conf)
            torch.distributed.all_reduce(loss_sum)
        conf_np = conf.cpu().numpy().astype(np.int64).reshape(num_classes, num_classes)
        loss_sum = loss_sum.cpu()
        metrics = {"epoch": epoch, "lr": config.lr * lr_factor(epoch, config),
                   "train_loss": float(loss_sum[0] / max(loss_sum[1], 1)), "train_samples": int(loss_sum[1]),
                   "train_top1": confusion_top1(conf_np), "train_mean_class": confusion_mean_class(conf_np)}
        if val_data is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            metrics.update(_validate(bare, val_data, config, num_classes, device, autocast))
        metrics["epoch_s"] = round(time.time() - t0, 2)
        metrics["data_wait_s"] = round(batches.waited, 2)  # blocked on input: near 0 when data keeps up
        history.append(metrics)
        if rank == 0:  # one copy of the (DDP-identical) state; the others report metrics only
            _say(f"epoch {epoch + 1}/{config.epochs}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch" and isinstance(v, (int, float))))
            checkpoints.write(run, epoch, config_yaml=to_yaml(config),
                              state={"model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "epoch": epoch,
                                     "rng": checkpoints.rng_state()},
                              meta={"class_names": class_names, "data_hash": args.get("data_hash"),
                                    "history": history})
            checkpoints.prune(run, keep_last=config.keep_checkpoints, keep_best=config.keep_best)
        ray.train.report(metrics)


def _say(message: str) -> None:
    # Not print(): Ray Train patches it to log *and* echo, which shows every line twice.
    sys.stdout.write(f"[train] {message}\n")
    sys.stdout.flush()


@torch.no_grad()
def _validate(model: nn.Module, data, config: TrainConfig, num_classes: int, device, autocast) -> dict:
    """Centre-view accuracy on the validation split (rank 0 only, on the bare module so
    that DDP starts no collective)."""
    model.eval()
    conf = np.zeros((num_classes, num_classes), np.int64)
    loss_sum, n = 0.0, 0
    for batch in data.iter_torch_batches(batch_size=config.batch_size, collate_fn=_Collate()):
        x = model_input(batch["x"][:, 0].to(device), batch["flow_bound"], config)  # the one view
        y = batch["label"].to(device)
        with autocast:
            scores = model(x).float()
        loss_sum += F.cross_entropy(scores, y, reduction="sum").item()
        n += len(y)
        conf += confusion_matrix(scores.detach().float().cpu().numpy(), y.cpu().numpy())
    return {"val_loss": loss_sum / max(n, 1), "val_samples": n, "val_top1": confusion_top1(conf),
            "val_mean_class": confusion_mean_class(conf)}
