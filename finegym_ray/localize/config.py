"""Localization settings: one dataclass, loaded from YAML (``configs/localize/*.yaml``) and
``--set key=value`` (``finegym_ray/config.py``: unknown keys are errors)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..config import RUNS_FOLDER, check_name, check_range
from ..errors import InputError
from ..train.trackers import check_options

LEVELS = ("action", "subaction")
# "classes": the level's classes (action: FineGym's events; sub-action: the sets);
# "class_agnostic": one class, "action" (where a proposal stage would sit).
TASKS = ("classes", "class_agnostic")
AGNOSTIC_LABEL = "action"
OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class LocalizeConfig:
    """Times in seconds, lengths of feature sequences in steps (snippets), learning rates
    per batch of ``batch_size`` sequences."""

    # extract-features output (OUT, a folder or s3://): sequences under OUT/<level>/.
    features: str = "./finegym_features"
    # Ground truth: a FineGym annotation folder or JSON, or an ActivityNet-format JSON
    # ({"database": ...}); read by localize.formats.read_ground_truth at ``level``.
    annotations: str = ""
    # "action": routines (events) in whole videos; "subaction": sub-actions in their routine.
    level: str = "action"
    task: str = "classes"

    # One of models.DETECTORS and its keyword arguments (in_channels and num_classes
    # come from the features and the task).
    detector: str = "pyramid"
    detector_kwargs: dict[str, Any] = field(default_factory=dict)

    # Optimisation: AdamW (as ActionFormer) with a linear warm-up, then cosine decay.
    optimizer: str = "adamw"
    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    grad_clip: float = 1.0
    # Training crops: a sequence longer than this many steps is cut to a random window
    # of it each epoch (0: whole sequences). Segments cut by the window are clipped to it.
    max_steps: int = 0
    seed: int = 0

    # Validation split: the level's videos ordered by a hash of the video id (sha256, the
    # same on every machine), the first round(val_fraction x n) in val (at least one when
    # there are two videos or more). Sub-action sequences go with their routine's video,
    # so a video's routines never straddle the split.
    val_fraction: float = 0.25
    # Validation loss every val_every epochs (0: never); the mAP is evaluate's.
    val_every: int = 1

    # Inference (evaluate): soft-NMS (Gaussian, sigma), then the top max_detections per
    # sequence above score_threshold.
    score_threshold: float = 0.001
    sigma: float = 0.5
    max_detections: int = 100

    # Scale: Ray Train workers (DDP), CPUs each, GPUs when the cluster has them (None:
    # use them if present); worker failures survived by restarting from the checkpoint.
    workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None
    max_failures: int = 2
    # Checkpoints kept: the newest keep_checkpoints (0: every epoch's).
    keep_checkpoints: int = 2

    # Runs live at runs/name (default name: detector_level_task); the same name resumes.
    runs: str = RUNS_FOLDER
    name: str = ""

    # Trackers, as in train/config.py: an MLflow tracking URI, a W&B project; empty: off.
    mlflow: str = ""
    wandb: str = ""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.level not in LEVELS:
            problems.append(f"level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.task not in TASKS:
            problems.append(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.detector, str) or not self.detector:
            problems.append(f"detector must name one of models.DETECTORS, got {self.detector!r}")
        if not self.features:
            problems.append("features must name the extract-features output (a folder or s3://)")
        for name in ("epochs", "batch_size", "workers", "max_detections"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "val_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps and self.max_steps < 8:
            problems.append(f"max_steps must be 0 (whole sequences) or >= 8, got {self.max_steps}")
        check_range(problems, "lr", self.lr, gt=0)
        check_range(problems, "momentum", self.momentum, ge=0, lt=1)
        check_range(problems, "weight_decay", self.weight_decay, ge=0)
        check_range(problems, "grad_clip", self.grad_clip, ge=0)  # 0: no clipping
        check_range(problems, "seed", self.seed, ge=0, lt=2**63)
        check_range(problems, "val_fraction", self.val_fraction, gt=0, lt=1)
        check_range(problems, "score_threshold", self.score_threshold, ge=0, lt=1)
        check_range(problems, "sigma", self.sigma, gt=0)
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "max_failures", self.max_failures, ge=-1)
        check_name(problems, "name", self.name)
        check_options(problems, self.mlflow, self.wandb)
        if problems:
            raise InputError("localize config: " + "; ".join(problems))

    @property
    def run_name(self) -> str:
        """The run's name: ``name``, or detector_level_task (no timestamp: reruns resume)."""
        return self.name or f"{self.detector}_{self.level}_{self.task}"


@dataclass(frozen=True)
class ExtractConfig:
    """Frames, pixels, seconds; rates in frames per second."""

    # action: snippets over whole videos; subaction: over each routine (event instance),
    # times relative to the routine start.
    level: str = "action"
    # A snippet: this many consecutive sampled frames, one snippet every stride_frames.
    snippet_frames: int = 16
    stride_frames: int = 8
    # Sampling rate (0: the clips' rate: the run's preprocessing max_fps, else the video's).
    # A lower rate for whole videos, e.g. 8, covers a 10-minute video in fewer snippets.
    fps: float = 0.0
    # Short side frames are decoded at (pixels; 0: native); None: the run's preprocessing
    # short side (flow in pixels then matches what the run trained on).
    short_side: int | None = None
    # Network input (pixels); 0: the run's (crop x input_width).
    input_height: int = 0
    input_width: int = 0
    # Per-instance element features: snippets per instance, and whether to write them.
    segments: int = 12
    elements: bool = True
    # Snippets per backbone call.
    batch_size: int = 32
    # Decoding actors (0: pool_sizes decides) and CPUs each.
    workers: int = 0
    cpus_per_worker: float = 1.0
    # Backbone actors (0: one per gpus_per_model_worker GPUs, else one on CPUs) and what
    # each takes: GPUs where the cluster has them, else model_cpus CPUs (torch threads).
    model_workers: int = 0
    gpus_per_model_worker: float = 1.0
    model_cpus: float = 1.0
    # Node-local folder (absolute) for videos fetched from s3://, and its size cap. None:
    # a private folder per user (preprocess.local_copy.default_folder).
    cache_dir: str | None = None
    cache_gb: float = 50.0

    def __post_init__(self) -> None:
        problems = []
        if self.level not in LEVELS:
            problems.append(f"level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        for name in ("snippet_frames", "stride_frames", "segments", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "model_workers", "input_height", "input_width"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.short_side is not None and (self.short_side < 0 or self.short_side % 2):
            problems.append(f"short_side must be null, 0 or a positive even number, got {self.short_side}")
        if bool(self.input_height) != bool(self.input_width) and self.input_width:
            problems.append("input_width needs input_height")
        check_range(problems, "fps", self.fps, ge=0)
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "model_cpus", self.model_cpus, gt=0)
        check_range(problems, "gpus_per_model_worker", self.gpus_per_model_worker, gt=0)
        if self.cache_dir is not None and not os.path.isabs(self.cache_dir):
            problems.append(f"cache_dir must be an absolute folder path or null, got {self.cache_dir!r}")
        check_range(problems, "cache_gb", self.cache_gb, ge=0)
        if problems:
            raise InputError("extract config: " + "; ".join(problems))
