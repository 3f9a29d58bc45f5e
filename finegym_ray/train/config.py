"""Training settings: one dataclass, loaded from YAML (``configs/``) and ``--set key=value``."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .. import presets
from ..config import RUNS_FOLDER, ConfigError, check_name, check_range
from ..dataset.labels import TASK_NAMES
from ..errors import InputError
from .trackers import check_options

# The meaning of the task names. Version 2: ``event`` is the paper's routine-level event
# recognition (10 events), ``subaction_event`` the 4-way task over sub-actions. Every run
# records its config with this number (config.yaml, each checkpoint's, a sweep's), so
# that a run recorded under another meaning is refused (``recorded_config``), never
# resumed or evaluated as another task.
TASK_VERSION = 2

# The keys of models.MODELS and its clip models, spelled out because importing the
# models imports torch, which Ray Data's sampling workers never use: it cost seconds in
# every worker process they start. tests/train/test_configs.py checks that both agree.
MODELS = ("tsn", "trn", "trn_multiscale", "tsm", "i3d", "nl_i3d", "actionvlad")
CLIP_MODELS = ("i3d", "nl_i3d")
# models.recognizers' BACKBONES and BACKBONE_MODELS, spelled out for the same reason.
BACKBONES = ("resnet", "bninception")
BACKBONE_MODELS = ("tsn", "trn", "trn_multiscale")
MODALITIES = ("rgb", "flow")
CLASS_BALANCE = ("none", "loss", "resample")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "step")
# The keys of models.resnet.DEPTHS, spelled out for the same reason (checked there too).
DEPTHS = (10, 18, 34, 50, 101)
# models.actionvlad's LAYERS (VGG-16's convolutions) and its centres' initialisations.
VGG_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
              "conv4_3", "conv5_1", "conv5_2", "conv5_3")
VLAD_CENTRES = ("kmeans", "random")


@dataclass(frozen=True)
class TrainConfig:
    """Sizes in pixels, counts in frames or clips, learning rates per batch of ``batch_size``."""

    # Preprocessing output (a folder or s3://): clips/ and manifest/ beneath it.
    data: str = "./finegym_demo/store"
    # Label view: gym99, gym288, gym530, set, vt, fx, fx_s1, ub_s1, subaction_event
    # (sub-actions -> their women's event) and event (whole routines -> 10 events).
    task: str = "gym99"
    # What the task names mean (TASK_VERSION); recorded with every run. Leave it out of
    # the configs you write: another number is refused (see recorded_config).
    task_version: int = TASK_VERSION
    modality: str = "rgb"
    train_split: str = "train"
    val_split: str = "val"

    # Model: one of models.MODELS; depth/base_width/blocks shrink its ResNet for CPUs.
    model: str = "tsm"
    # TSN's and TRN's 2-D backbone: "resnet" (depth, base_width, blocks) or "bninception"
    # (BN-Inception, the paper's for TSN and TRN, one size: leave those three as they are).
    backbone: str = "resnet"
    depth: int = 50
    base_width: int = 64
    blocks: list[int] | None = None
    dropout: float = 0.5
    shift_fraction: float = 0.125
    # Weights (local path or s3://) to start the backbone from: a torchvision-named
    # ResNet (ImageNet), an mmaction2 TSN/TSM/I3D checkpoint (Kinetics-400) or a
    # BN-Inception in Caffe's names (ImageNet, as TSN distributes it); 2-D
    # weights are inflated for I3D and an RGB first conv adapted to flow's channels
    # (train/weights.py, which prints what it loaded).
    pretrained: str | None = None
    # ActionVLAD (model=actionvlad; its backbone is VGG-16, which base_width shrinks):
    # ``vlad_clusters`` centres, started by k-means over the descriptors of the first
    # training batches ("kmeans", the paper's, on rank 0 before the first step of a new
    # run) or at random ("random"); the paper's two steps: for the first
    # ``freeze_vlad_epochs`` epochs only the classifier trains (centres fixed), then
    # everything from ``freeze_backbone_before`` on ("conv5_1": the convolutions before
    # it never train; "": all do).
    vlad_clusters: int = 64
    vlad_centres: str = "kmeans"
    freeze_vlad_epochs: int = 0
    freeze_backbone_before: str = ""

    # Sampling. Segment models: ``segments`` segments of ``frames_per_segment``
    # consecutive frames (flow: stacked x/y pairs, TSN uses 5). Clip models (I3D):
    # ``segments`` frames ``dense_stride`` apart.
    segments: int = 8
    frames_per_segment: int = 1
    dense_stride: int = 2
    # Network input side; at test frames are resized to ``test_short`` (short side)
    # and cropped to ``crop``. Training crops are TSN's multi-scale jittered boxes.
    crop: int = 224
    test_short: int = 256
    # Input width in pixels; 0: square crops of ``crop``. Set e.g. 400 with crop 224 for
    # 16:9 frames: boxes keep the input's aspect, and most of the frame stays in view.
    input_width: int = 0
    flip: bool = True
    # Class imbalance: "loss" weights the loss by inverse class frequency; "resample"
    # repeats each clip of a class ~median/count times per epoch.
    class_balance: str = "none"

    # Optimisation: "sgd" (with momentum, the paper's) or "adamw" (learns faster from
    # scratch on small data), cosine decay after a linear warm-up.
    optimizer: str = "sgd"
    epochs: int = 50
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    grad_clip: float = 20.0
    label_smoothing: float = 0.0
    seed: int = 0

    # The paper's schedules and weights: ``lr_schedule`` "cosine" (above) or "step", the
    # paper's, dividing the learning rate by 10 after each number of epochs in
    # ``lr_steps`` ([30, 60]: epochs 1-30 at lr, 31-60 at lr/10, the rest at lr/100; an
    # epoch listed twice divides by 100 there);
    # ``pretrained_strict`` refuses weights that leave any tensor of the backbone at its
    # random initialisation (false: load what fits, as the printed report lists).
    lr_schedule: str = "cosine"
    lr_steps: list[int] | None = None
    pretrained_strict: bool = True

    # Scale: Ray Train workers (DDP), CPUs each, GPUs when the cluster has them
    # (None: use them if present). bf16 autocast and channels-last apply on GPU only.
    workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None
    # GPUs each worker reserves when it trains on GPU, at most 1 (a worker drives one
    # device); a fraction lets one-worker runs share a GPU (Tune trials, small models).
    gpus_per_worker: float = 1.0
    bf16: bool = True
    channels_last: bool = True
    # Rows kept in each worker's shuffle buffer (clips, after sampling).
    shuffle_buffer: int = 64
    # Worker failures survived by restarting from the last checkpoint.
    max_failures: int = 2
    # Checkpoints kept: the newest ``keep_checkpoints`` (0: every epoch's) and, with
    # ``keep_best``, the one of the best validation mean class accuracy.
    keep_checkpoints: int = 2
    keep_best: bool = True
    # Validate every this many epochs (0: never during training; use ``evaluate``).
    val_every: int = 1

    # Where runs live (folder or s3://) and this run's name: the same name resumes.
    runs: str = RUNS_FOLDER
    name: str = ""

    # Trackers beside the run's TensorBoard files (train/trackers.py), named as the run;
    # empty: off. ``mlflow``: an MLflow tracking URI (file:./mlruns, http://host:5000;
    # credentials in MLFLOW_TRACKING_* variables), needs finegym-ray[mlflow]. ``wandb``: a
    # W&B project (WANDB_ENTITY, WANDB_MODE, WANDB_API_KEY as W&B reads them), needs
    # finegym-ray[wandb]. A resume may switch them on or off.
    mlflow: str = ""
    wandb: str = ""

    # Test-time protocol of ``evaluate``: temporal views x spatial crops (1 or 3), averaged.
    test_views: int = 2
    test_crops: int = 3

    def __post_init__(self) -> None:
        problems = []
        if self.model not in MODELS:
            problems.append(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.modality not in MODALITIES:
            problems.append(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if self.task not in TASK_NAMES:
            problems.append(f"task must be one of {', '.join(TASK_NAMES)}, got {self.task!r}")
        if self.task_version != TASK_VERSION:
            problems.append(f"task_version must be {TASK_VERSION} (task names as they are now: 'event' is "
                            f"routine-level, 'subaction_event' the sub-action variant), got {self.task_version!r}; "
                            f"leave it out")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.class_balance not in CLASS_BALANCE:
            problems.append(f"class_balance must be one of {', '.join(CLASS_BALANCE)}, got {self.class_balance!r}")
        for name in ("segments", "frames_per_segment", "dense_stride", "epochs", "batch_size", "workers",
                     "test_views"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_checkpoints < 0:
            problems.append(f"keep_checkpoints must be >= 0 (0: keep all), got {self.keep_checkpoints}")
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "gpus_per_worker", self.gpus_per_worker, gt=0, le=1)
        if self.gpus_per_worker < 1 and self.workers > 1:
            # Ray may place two of them on one GPU, and NCCL refuses two ranks on one device.
            problems.append(f"gpus_per_worker below 1 ({self.gpus_per_worker}) needs workers=1: workers of one "
                            f"run may not share a GPU (got workers={self.workers})")
        if self.test_crops not in (1, 3):
            problems.append(f"test_crops must be 1 or 3, got {self.test_crops}")
        if not 16 <= self.crop <= self.test_short:
            problems.append(f"crop must be >= 16 and <= test_short, got crop {self.crop}, test_short {self.test_short}")
        # Written as ranges that NaN and inf fail (a bare ``lr <= 0`` test accepts NaN).
        check_range(problems, "lr", self.lr, gt=0)
        check_range(problems, "dropout", self.dropout, ge=0, lt=1)
        check_range(problems, "shift_fraction", self.shift_fraction, ge=0, le=0.5)  # that much shifts each way
        check_range(problems, "momentum", self.momentum, ge=0, lt=1)
        check_range(problems, "weight_decay", self.weight_decay, ge=0)
        check_range(problems, "grad_clip", self.grad_clip, ge=0)  # 0: no clipping
        check_range(problems, "label_smoothing", self.label_smoothing, ge=0, lt=1)
        check_range(problems, "base_width", self.base_width, ge=1)
        check_range(problems, "shuffle_buffer", self.shuffle_buffer, ge=0)
        check_range(problems, "seed", self.seed, ge=0, lt=2**63)  # torch and numpy seeds
        check_range(problems, "warmup_epochs", self.warmup_epochs, ge=0)
        check_range(problems, "val_every", self.val_every, ge=0)
        check_range(problems, "max_failures", self.max_failures, ge=-1)
        check_name(problems, "name", self.name)
        check_options(problems, self.mlflow, self.wandb)
        if self.depth not in DEPTHS:
            problems.append(f"depth must be one of {', '.join(map(str, DEPTHS))}, got {self.depth!r}")
        if self.blocks is not None and (not self.blocks or any(b < 1 for b in self.blocks)):
            problems.append(f"blocks must be null or a list of block counts >= 1 per stage, got {self.blocks}")
        if self.input_width and self.input_width < 16:
            problems.append(f"input_width must be 0 (square) or >= 16, got {self.input_width}")
        if self.model != "actionvlad":
            problems.extend(_backbone_problems(self.backbone, self.model, self.depth, self.base_width, self.blocks))
        problems.extend(_vlad_problems(self))
        if self.model in CLIP_MODELS and self.frames_per_segment != 1:
            problems.append(f"{self.model} samples dense clips: frames_per_segment must be 1")
        problems.extend(schedule_problems(self.lr_schedule, self.lr_steps, self.epochs))
        if problems:
            raise InputError("train config: " + "; ".join(problems))

    @property
    def clip_model(self) -> bool:
        return self.model in CLIP_MODELS

    @property
    def in_channels(self) -> int:
        """Input channels per segment: 3 (RGB) or 2 (flow x, y) times stacked frames."""
        return (3 if self.modality == "rgb" else 2) * self.frames_per_segment

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (height, width) in pixels."""
        return self.crop, self.input_width or self.crop

    @property
    def run_name(self) -> str:
        """The run's name: ``name``, or model_modality_task (no timestamp, so reruns resume)."""
        return self.name or f"{self.model}_{self.modality}_{self.task}"

    def model_kwargs(self, num_classes: int) -> dict:
        """Keyword arguments of ``MODELS[self.model]``."""
        kw = dict(num_classes=num_classes, in_channels=self.in_channels, depth=self.depth,
                  base_width=self.base_width, blocks=tuple(self.blocks) if self.blocks else None,
                  dropout=self.dropout, num_segments=self.segments)
        if self.model == "tsm":
            kw["shift_fraction"] = self.shift_fraction
        if self.model in BACKBONE_MODELS:
            kw["backbone"] = self.backbone
        if self.model == "actionvlad":
            del kw["depth"], kw["blocks"]
            kw |= {"clusters": self.vlad_clusters, "freeze_before": self.freeze_backbone_before}
        return kw


def _backbone_problems(backbone: str, model: str, depth: int, base_width: int, blocks: list[int] | None) -> list[str]:
    """What is wrong with a backbone for ``model``: BN-Inception serves TSN and TRN, in
    its one size."""
    if backbone not in BACKBONES:
        return [f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}"]
    if backbone == "resnet":
        return []
    if model not in BACKBONE_MODELS:
        return [f"backbone={backbone} serves {', '.join(BACKBONE_MODELS)}; {model} takes a ResNet"]
    if (depth, base_width, blocks) != (50, 64, None):
        return [f"depth, base_width and blocks size a ResNet, and backbone={backbone} has one size: leave them "
                f"out (got depth {depth}, base_width {base_width}, blocks {blocks})"]
    return []


def _vlad_problems(c: TrainConfig) -> list[str]:
    """What is wrong with ActionVLAD's settings: VGG-16 takes base_width only, and the
    freezing settings apply to it alone."""
    problems = []
    check_range(problems, "vlad_clusters", c.vlad_clusters, ge=1)
    check_range(problems, "freeze_vlad_epochs", c.freeze_vlad_epochs, ge=0)
    if c.vlad_centres not in VLAD_CENTRES:
        problems.append(f"vlad_centres must be one of {', '.join(VLAD_CENTRES)}, got {c.vlad_centres!r}")
    if c.freeze_backbone_before and c.freeze_backbone_before not in VGG_LAYERS:
        problems.append(f"freeze_backbone_before must be empty or one of {', '.join(VGG_LAYERS)}, "
                        f"got {c.freeze_backbone_before!r}")
    if c.model != "actionvlad":
        if c.freeze_vlad_epochs or c.freeze_backbone_before:
            problems.append(f"freeze_vlad_epochs and freeze_backbone_before apply to model=actionvlad, not {c.model}")
    elif (c.backbone, c.depth, c.blocks) != ("resnet", 50, None):
        problems.append(f"actionvlad's backbone is VGG-16, which base_width alone shrinks: leave backbone, depth "
                        f"and blocks out (got backbone {c.backbone}, depth {c.depth}, blocks {c.blocks})")
    return problems


def schedule_problems(schedule: str, lr_steps: list[int] | None, epochs: int) -> list[str]:
    """What is wrong with a learning-rate schedule: "step" needs increasing epochs
    within the run, "cosine" none."""
    if schedule not in LR_SCHEDULES:
        return [f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}"]
    if schedule == "cosine":
        return [] if not lr_steps else [f"lr_steps apply to lr_schedule=step, got {lr_steps} with cosine"]
    steps = list(lr_steps or [])
    if not steps or any(not isinstance(s, int) or not 1 <= s < epochs for s in steps) or steps != sorted(steps):
        return [f"lr_schedule=step needs lr_steps, epochs in order from 1 to epochs-1 ({epochs - 1}), got {lr_steps}"]
    return []


def recorded_config(data: dict, where: str = "recorded config") -> dict:
    """A config as a run recorded it (a mapping read from its config.yaml, a checkpoint's
    or a sweep's), once its ``task_version`` is TASK_VERSION: ConfigError naming
    ``where`` otherwise (recorded by another version, whose task names may mean other
    tasks)."""
    version = data.get("task_version")
    if version != TASK_VERSION:
        raise ConfigError(f"{where}: task_version {version!r}, this finegym-ray reads {TASK_VERSION} (recorded by "
                          f"another version, whose task names may mean other tasks): train again under another "
                          f"name")
    return data


# Settings that name a file or folder (local or s3://). A run records them absolute, so
# that it reads the same data from any working directory: another folder, a Ray job in
# its uploaded working directory, a Ray Train worker.
PATH_KEYS = ("data", "runs", "pretrained")


def absolute_uri(uri: str) -> str:
    """``uri`` made absolute: s3:// and absolute paths unchanged, ``file:///x`` as ``/x``,
    a relative local path joined to the current directory."""
    from .. import storage

    loc = storage.parse_uri(uri)
    if loc.is_s3:
        return uri
    if loc.scheme == "file" and os.path.isabs(loc.key):
        return os.path.normpath(loc.key)
    return os.path.normpath(os.path.join(os.getcwd(), loc.key))


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with ``data``, ``runs`` and ``pretrained`` as absolute URIs, resolved
    against the current directory: what ``train`` records in its run."""
    changes = {k: absolute_uri(getattr(config, k)) for k in PATH_KEYS if getattr(config, k)}
    return replace(config, **{k: v for k, v in changes.items() if v != getattr(config, k)})


# The demo's training run: configs/tsm_flow_demo.yaml (the file says why these settings).
DEMO = presets.load(TrainConfig, "tsm_flow_demo.yaml")
