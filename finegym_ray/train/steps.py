"""The training library without Ray: model building, network input, optimizer, learning
rate schedule, the train and eval steps and the tally of an epoch's metrics.

Everything takes explicit arguments (no TrainConfig), so that a Ray Train worker, a Tune
trial, feature extraction, the localization detector and the benchmarks call the same
code. Nothing here imports Ray (tests/train/test_steps.py checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..metrics import confusion_mean_class, confusion_top1
from ..models.actionvlad import kmeans
from ..models.recognizers import FLOW_SCALE_PX, IMAGENET_MEAN, IMAGENET_STD, MODELS
from .weights import load_pretrained


def build_model(name: str, *, num_classes: int, pretrained: str | None = None, pretrained_strict: bool = True,
                pretrained_sha256: str | None = None, **model_kwargs) -> nn.Module:
    """``MODELS[name](num_classes=..., **model_kwargs)``, its backbone initialised from
    the weights at ``pretrained`` (local path or s3://) if given, as ``weights.py``
    loads them: refused unless they fill the whole backbone, or ``pretrained_strict``
    is false; ``pretrained_sha256``, when given, the digest the file must have."""
    model = MODELS[name](num_classes=num_classes, **model_kwargs)
    if pretrained:
        load_pretrained(model.backbone, pretrained, strict=pretrained_strict, sha256=pretrained_sha256)
    return model


def model_input(x: torch.Tensor, flow_bound: torch.Tensor, *, modality: str, clip_model: bool) -> torch.Tensor:
    """uint8 samples (..., T, C, H, W) -> float network input: RGB scaled with ImageNet's
    mean/std; flow dequantized with each clip's bound (pixels, (B,)), in pixels /
    FLOW_SCALE_PX. Clip models get (B, C, T, H, W)."""
    x = x.float()
    if modality == "rgb":
        c = x.shape[-3]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).repeat(c // 3).view(c, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).repeat(c // 3).view(c, 1, 1)
        x = (x / 255.0 - mean) / std
    else:
        b = flow_bound.to(x.device).view(-1, *([1] * (x.dim() - 1)))
        x = (x * (2.0 * b / 255.0) - b) / FLOW_SCALE_PX
    if clip_model:
        x = x.transpose(-4, -3)  # (B, T, C, H, W) -> (B, C, T, H, W)
    return x


def make_optimizer(params, *, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum (``name`` "sgd", the paper's) or AdamW ("adamw")."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_factor(epoch: int, *, epochs: int, warmup_epochs: int, lr_schedule: str = "cosine",
              lr_steps: tuple[int, ...] = ()) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): linear warm-up over
    ``warmup_epochs``, then ``lr_schedule``: "cosine" to 0 at ``epochs``, or "step",
    divided by 10 at each epoch of ``lr_steps`` (the paper's TSN: ``lr_steps`` (30, 60)
    trains epochs 0-29 at 1, 30-59 at 0.1, 60 on at 0.01; an epoch listed twice divides
    by 100 there)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    if lr_schedule == "step":
        return 0.1 ** sum(epoch >= s for s in lr_steps)
    span = max(epochs - warmup_epochs, 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def make_scheduler(optimizer: torch.optim.Optimizer, *, epochs: int, warmup_epochs: int, lr_schedule: str = "cosine",
                   lr_steps: tuple[int, ...] = ()) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of :func:`lr_factor`, stepped once per epoch."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, epochs=epochs, warmup_epochs=warmup_epochs, lr_schedule=lr_schedule,
                                       lr_steps=lr_steps))


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on a GPU when ``bf16``; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16)


def held_parameters(model: nn.Module, *, epoch: int, head_only_epochs: int) -> list[nn.Parameter]:
    """The trainable parameters that epoch ``epoch`` (0-based) leaves as they are: in the
    first ``head_only_epochs`` epochs every one outside ``model.head`` (ActionVLAD's
    first step: a linear classifier over fixed centres), none after. Held by dropping
    their gradients before each step rather than by ``requires_grad``, which DDP reads
    once, when it wraps the model."""
    if epoch >= head_only_epochs:
        return []
    head = {id(p) for p in model.head.parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in head]


@torch.no_grad()
def vlad_descriptors(model: nn.Module, x: torch.Tensor, *, autocast) -> torch.Tensor:
    """ActionVLAD's unit-length local descriptors of network input ``x``: (N, D) float32,
    N = frames x positions."""
    with autocast:
        return model.descriptors(x).flatten(0, 1).float()


def init_vlad_centres(model: nn.Module, descriptors: torch.Tensor, *, limit: int, seed: int) -> None:
    """``model.vlad``'s centres (and the soft assignment that goes with them) set by
    k-means over at most ``limit`` rows of ``descriptors`` (N, D), drawn with ``seed``."""
    if len(descriptors) > limit:
        pick = torch.randperm(len(descriptors), generator=torch.Generator().manual_seed(seed))[:limit]
        descriptors = descriptors[pick.to(descriptors.device)]
    centres = model.vlad.centres
    model.vlad.set_centres(kmeans(descriptors, centres.shape[0], seed=seed).to(centres.dtype))


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, criterion,
               *, grad_clip: float, autocast, hold: Sequence[nn.Parameter] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on network input ``x`` (from :func:`model_input`) with labels
    ``y``, forward inside ``autocast``; gradients clipped to norm ``grad_clip`` (0: not
    clipped); the parameters in ``hold`` left as they are (no gradient, so no momentum
    or weight decay either). Returns (scores (B, K), loss)."""
    with autocast:
        scores = model(x)
        loss = criterion(scores.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in hold:
        p.grad = None
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return scores, loss


@torch.no_grad()
def eval_scores(model: nn.Module, x: torch.Tensor, *, autocast) -> torch.Tensor:
    """Float32 class scores (logits, (B, K)) of network input ``x``, without gradients."""
    with autocast:
        return model(x).float()


class Tally:
    """An epoch's confusion matrix and summed loss, kept on the device so that steps need
    no host sync (and so that NCCL, which reduces device tensors only, can sum them)."""

    def __init__(self, num_classes: int, device: torch.device):
        self.k = num_classes
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=device)
        self.loss = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, samples

    def add(self, scores: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """One batch: ``scores`` (B, K), labels ``y`` (B,), ``loss`` its mean over the batch."""
        n = torch.tensor(len(y), dtype=torch.float64, device=y.device)
        self.loss += torch.stack([loss.detach().double() * n, n])
        self.confusion += torch.bincount(y * self.k + scores.detach().argmax(1), minlength=self.k * self.k).double()

    def all_reduce(self) -> None:
        """Sum over the processes of the default torch.distributed group."""
        torch.distributed.all_reduce(self.confusion)
        torch.distributed.all_reduce(self.loss)

    def metrics(self, prefix: str) -> dict:
        """``{prefix}_loss``, ``_samples``, ``_top1`` and ``_mean_class`` (fractions)."""
        cm = self.confusion.cpu().numpy().astype("int64").reshape(self.k, self.k)  # (true, predicted)
        loss, n = self.loss.cpu().tolist()
        return {f"{prefix}_loss": loss / max(n, 1), f"{prefix}_samples": int(n),
                f"{prefix}_top1": confusion_top1(cm), f"{prefix}_mean_class": confusion_mean_class(cm)}
