"""Pose training settings: one dataclass, loaded from YAML (``configs/pose/*.yaml``) and
``--set key=value`` (``finegym_ray/config.py``: unknown keys are errors)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..config import RUNS_FOLDER, check_name, check_range
from ..dataset.labels import TASK_NAMES
from ..errors import InputError
from ..train.config import OPTIMIZERS, TASK_VERSION, absolute_uri, schedule_problems
from ..train.trackers import check_options

# models.POSE_MODELS (skeletons) and HEATMAP_MODELS (heatmap volumes), spelled out so
# that reading a config imports no torch.
SKELETON_MODELS = ("stgcn",)
HEATMAP_MODELS = ("posec3d",)
# What a pose model sees: the joints (ST-GCN: their coordinates and scores; PoseC3D: a
# heatmap per joint) or the limbs (PoseC3D: a heatmap per bone).
MODALITIES = ("keypoints", "limbs")


@dataclass(frozen=True)
class PoseConfig:
    """Counts in frames and persons, sizes in pixels, learning rates per batch of
    ``batch_size`` samples."""

    # A store (a folder or s3://) with poses/ (import-poses) and manifest/.
    data: str = "./finegym_demo/store"
    # Label view, as train's: gym99, gym288, gym530, set, vt, fx, fx_s1, ub_s1,
    # subaction_event (poses are per sub-action: not the routine-level event task).
    task: str = "gym99"
    task_version: int = TASK_VERSION
    train_split: str = "train"
    val_split: str = "val"

    # stgcn (skeletons) or posec3d (heatmap volumes); model_kwargs go to its builder
    # (stgcn: base_width, temporal_kernel; posec3d: base_width, blocks).
    model: str = "stgcn"
    modality: str = "keypoints"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.5
    # Sampling (PoseC3D's): the sub-action cut into ``frames`` equal spans, one frame
    # from each; the ``persons`` of highest mean joint score (the gymnast first).
    frames: int = 48
    persons: int = 1
    # Heatmap volumes (posec3d): ``heatmap_size`` pixels a side, Gaussians of ``sigma``
    # pixels at that size, drawn in the box of every joint of the sample.
    heatmap_size: int = 56
    sigma: float = 0.6
    # Mirror a training sample left to right half of the time (left and right joints
    # swapped).
    flip: bool = True

    optimizer: str = "sgd"
    epochs: int = 24
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 0
    lr_schedule: str = "cosine"
    lr_steps: list[int] | None = None
    grad_clip: float = 40.0
    label_smoothing: float = 0.0
    seed: int = 0
    # Processes per training worker that build its samples while it trains (0: the
    # worker builds them between steps), within the worker's cpus_per_worker: a heatmap
    # volume of 48 frames takes a core ~4 ms.
    input_workers: int = 0

    workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None
    gpus_per_worker: float = 1.0
    bf16: bool = True
    max_failures: int = 2
    keep_checkpoints: int = 2
    keep_best: bool = True
    val_every: int = 1

    runs: str = RUNS_FOLDER
    name: str = ""
    mlflow: str = ""
    wandb: str = ""

    # Test-time protocol of ``evaluate`` (PoseC3D's): ``test_views`` samples, each frame
    # at (view + 0.5) / views of its span, and with ``test_flip`` each mirrored too;
    # softmax scores averaged.
    test_views: int = 10
    test_flip: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.model not in SKELETON_MODELS + HEATMAP_MODELS:
            problems.append(f"model must be one of {', '.join(SKELETON_MODELS + HEATMAP_MODELS)}, got {self.model!r}")
        if self.modality not in MODALITIES:
            problems.append(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        elif self.model in SKELETON_MODELS and self.modality != "keypoints":
            problems.append(f"{self.model} reads joint coordinates: modality must be keypoints (limbs: posec3d)")
        if self.task not in TASK_NAMES or self.task == "event":
            problems.append(f"task must be one of {', '.join(t for t in TASK_NAMES if t != 'event')} (poses are "
                            f"per sub-action), got {self.task!r}")
        if self.task_version != TASK_VERSION:
            problems.append(f"task_version must be {TASK_VERSION}, got {self.task_version!r}; leave it out")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.model_kwargs, dict) or {"num_classes", "in_channels", "dropout"} & set(
                self.model_kwargs):
            problems.append("model_kwargs must be a mapping without num_classes, in_channels and dropout (the task, "
                            "modality and dropout set them)")
        for name in ("frames", "persons", "epochs", "batch_size", "workers", "test_views"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "val_every", "keep_checkpoints", "input_workers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.heatmap_size < 8:
            problems.append(f"heatmap_size must be >= 8 pixels, got {self.heatmap_size}")
        check_range(problems, "sigma", self.sigma, gt=0)
        check_range(problems, "lr", self.lr, gt=0)
        check_range(problems, "dropout", self.dropout, ge=0, lt=1)
        check_range(problems, "momentum", self.momentum, ge=0, lt=1)
        check_range(problems, "weight_decay", self.weight_decay, ge=0)
        check_range(problems, "grad_clip", self.grad_clip, ge=0)
        check_range(problems, "label_smoothing", self.label_smoothing, ge=0, lt=1)
        check_range(problems, "seed", self.seed, ge=0, lt=2**63)
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "gpus_per_worker", self.gpus_per_worker, gt=0, le=1)
        if self.gpus_per_worker < 1 and self.workers > 1:
            problems.append(f"gpus_per_worker below 1 ({self.gpus_per_worker}) needs workers=1: workers of one "
                            f"run may not share a GPU (got workers={self.workers})")
        check_range(problems, "max_failures", self.max_failures, ge=-1)
        check_name(problems, "name", self.name)
        check_options(problems, self.mlflow, self.wandb)
        problems.extend(schedule_problems(self.lr_schedule, self.lr_steps, self.epochs))
        if problems:
            raise InputError("pose config: " + "; ".join(problems))

    @property
    def run_name(self) -> str:
        """The run's name: ``name``, or model_modality_task (no timestamp: reruns resume)."""
        return self.name or f"{self.model}_{self.modality}_{self.task}"

    @property
    def heatmaps(self) -> bool:
        """Whether the model reads heatmap volumes (else skeletons)."""
        return self.model in HEATMAP_MODELS


def with_absolute_paths(config: PoseConfig) -> PoseConfig:
    """``config`` with ``data`` and ``runs`` absolute (``train.config.absolute_uri``):
    what a run records, so that it reads the same poses from anywhere."""
    return replace(config, data=absolute_uri(config.data), runs=absolute_uri(config.runs))
