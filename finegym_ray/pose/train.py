"""Training a pose model with Ray Train: a task of the training engine
(``train/engine.py``), checkpoints in ``train/checkpoint.py``'s format, so that a pose
run resumes, is listed by ``runs`` and is scored by ``evaluate`` as a clip run is.

Runs live at ``config.runs``/``run_name`` (local or s3://). Poses are small (a
sub-action's are tens of kB), so no Ray Data: the driver finds the labelled keys that
have poses (``data.pose_split_labels``) and each worker reads its own shard of them into
memory, every shard as long as the longest (a short one repeats its first keys) so that
every worker takes the same number of steps. Samples (skeletons or heatmap volumes) are
made from the poses every epoch, in the worker or in ``input_workers`` processes beside
it; rank 0 validates on the centre sample of every validation key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..config import from_dict
from ..errors import InputError
from ..train import checkpoint as checkpoints
from ..train.config import recorded_config
from ..train.data import SplitLabels
from ..train.engine import Plan, check_same_settings, run_uri, saved_settings, train_held
from ..train.run import split_coverage
from .config import PoseConfig, with_absolute_paths
from .data import in_channels, pose_sample, pose_split_labels

# What a pose checkpoint's meta.json says it is (``kind``): evaluate reads its config as
# a PoseConfig.
KIND = "pose"
# Settings a resume may change: where and how fast, not what is trained.
MUTABLE = {"workers", "cpus_per_worker", "use_gpu", "gpus_per_worker", "max_failures", "val_every", "runs", "data",
           "keep_checkpoints", "keep_best", "input_workers", "test_views", "test_flip", "mlflow", "wandb"}
PROGRESS_EVERY_S = 30.0  # a line within an epoch at most this often (seconds), on rank 0


def training_labels(config: PoseConfig, *, say: Callable[[str], None] = print
                    ) -> tuple[SplitLabels, SplitLabels | None]:
    """The train and (with ``val_every``) validation labels of the keys with poses;
    InputError when they cannot train the task."""
    train = pose_split_labels(config.data, config.task, config.train_split)
    if len(train.labels) < config.workers:
        raise InputError(f"{config.data}: {len(train.labels)} {config.train_split} sub-actions with poses of task "
                         f"{config.task} cannot feed {config.workers} workers")
    val = pose_split_labels(config.data, config.task, config.val_split) if config.val_every else None
    counts = train.counts()
    say(f"task {config.task}: {train.num_classes} classes, {len(train.labels)} train sub-actions with poses "
        f"({int((counts > 0).sum())} classes present)" + (f", {len(val.labels)} val" if val else ""))
    absent = [f"{name} {len(split.absent):,} of {split.labelled:,} labelled without poses"
              for name, split in (("train", train), ("val", val)) if split is not None and split.absent]
    if absent:
        say("training on the sub-actions that have poses: " + "; ".join(absent))
    return train, val


def run_pose_training(config: PoseConfig, *, break_lease: bool = False,
                      say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the pose run of ``config`` on the Ray cluster this process is
    connected to. Returns ``run`` (its URI), ``checkpoint`` (the last one's URI),
    ``history`` (metrics per epoch) and ``class_names``. Raises InputError for poses
    that cannot train the task or a run that cannot resume with these settings,
    RuntimeError when training fails past ``max_failures``. One job trains a run at a
    time (``lease.py``)."""
    from ..capacity import train_needs

    config = with_absolute_paths(config)
    return train_held(lambda: training_plan(config, *training_labels(config, say=say)),
                      needs=train_needs(config, data_input=False), what=f"train-poses {config.run_name}",
                      break_lease=break_lease, say=say)


def training_plan(config: PoseConfig, train: SplitLabels, val: SplitLabels | None) -> Plan:
    """The engine's plan of ``config``'s run on the keys of ``train`` (and ``val``)."""
    uri = run_uri(config)
    task = PoseTask(config, class_names=list(train.class_names), train_labels=train.labels,
                    val_labels=val.labels if val else {}, coverage=split_coverage(train, val))
    return Plan(config, task, lambda resumed: _check_same(uri, config, resumed, task.class_names),
                gpus_per_worker=config.gpus_per_worker)


def recorded_settings(checkpoint: checkpoints.Checkpoint) -> dict:
    """The settings a pose checkpoint recorded, once their task names mean today's
    (``train.config.recorded_config``)."""
    return recorded_config(saved_settings(checkpoint), f"{checkpoint.uri}/config.yaml")


def checkpoint_config(checkpoint: checkpoints.Checkpoint) -> PoseConfig:
    """The PoseConfig a pose checkpoint was written with."""
    return from_dict(PoseConfig, recorded_settings(checkpoint), f"{checkpoint.uri}/config.yaml")


def _check_same(uri: str, config: PoseConfig, checkpoint: checkpoints.Checkpoint, class_names: list[str]) -> None:
    """Refuse to resume with settings that change the model or its input."""
    if checkpoint.meta.get("kind") != KIND:
        raise InputError(f"{uri} holds a run of another kind than a pose model's: use another name")
    check_same_settings(uri, config, recorded_settings(checkpoint), mutable=MUTABLE)
    if checkpoint.meta.get("class_names") != class_names:
        raise InputError(f"{checkpoint.uri} was trained on other classes than {config.data} gives task "
                         f"{config.task} now: use another name")


def build_pose_model(config: PoseConfig, num_classes: int):
    """The model ``config`` names (models.POSE_MODELS or HEATMAP_MODELS) for its input."""
    from ..models import HEATMAP_MODELS, POSE_MODELS

    builder = {**POSE_MODELS, **HEATMAP_MODELS}[config.model]
    try:
        return builder(num_classes=num_classes, in_channels=in_channels(config), dropout=config.dropout,
                       **config.model_kwargs)
    except TypeError as e:  # an unknown keyword: a setting, not a bug
        raise InputError(f"model {config.model!r}: {e} (model_kwargs {config.model_kwargs})") from None


# -- what each Ray Train worker runs -------------------------------------------------------


class Samples:
    """A map-style dataset (torch's DataLoader takes it) of one epoch: sample ``i`` is
    ``items[order[i]]`` (a PoseRecord and its class id) drawn as ``config`` says, with
    frames and mirroring from a generator seeded by (``seed``, ``i``), so that a resumed
    run and any number of input processes draw the same samples. ``seed`` None: the
    test sample (centre frames, not mirrored)."""

    def __init__(self, items: list, order: np.ndarray, config: PoseConfig, seed: list[int] | None):
        self.items, self.order, self.config, self.seed = items, order, config, seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        record, label = self.items[self.order[i]]
        if self.seed is None:
            return pose_sample(record, self.config), label
        rng = np.random.default_rng([*self.seed, i])
        mirror = self.config.flip and bool(rng.random() < 0.5)
        return pose_sample(record, self.config, rng=rng, mirror=mirror), label


def read_items(store: str, labels: dict[str, int]) -> list:
    """(PoseRecord, class id) of each key of ``labels``, in key order."""
    from ..dataset.pose_store import read_poses

    return [(r, labels[r.key]) for r in read_poses(store, labels)]


@dataclass
class PoseTask:
    """The engine's task for a pose run of ``config``: ``train_labels`` and
    ``val_labels`` (key -> class id of the keys with poses), ``coverage`` (per split,
    the keys used of those labelled: ``run.split_coverage``)."""

    label: ClassVar[str] = "train-poses"
    config: PoseConfig
    class_names: list[str]
    train_labels: dict[str, int]
    val_labels: dict[str, int]
    coverage: dict = field(default_factory=dict)

    @property
    def meta(self) -> dict:
        return {"kind": KIND, "class_names": self.class_names, "data_hash": None, "coverage": self.coverage}

    @property
    def keep_best(self) -> bool:
        return self.config.keep_best

    def setup(self, *, rank: int, world: int, device) -> None:
        import torch

        from ..train import steps

        config = self.config
        self.rank, self.world, self.device = rank, world, device
        keys = sorted(self.train_labels)
        per_worker = -(-len(keys) // world)
        shard = keys[rank::world]
        shard = (shard * per_worker)[:per_worker]  # every shard as long (the module docstring)
        items = {r.key: (r, y) for r, y in read_items(config.data, {k: self.train_labels[k] for k in set(shard)})}
        self.train_items = [items[k] for k in shard]
        self.val_items = read_items(config.data, self.val_labels) if rank == 0 and config.val_every else []
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.autocast = steps.autocast_for(device, config.bf16)

    def build_model(self, *, pretrained: bool):
        # No pretrained weights: pose models start from their initialisation.
        return build_pose_model(self.config, len(self.class_names))

    def _loader(self, samples: Samples, workers: int):
        import torch

        return torch.utils.data.DataLoader(samples, batch_size=self.config.batch_size, num_workers=workers)

    def train_epoch(self, model, optimizer, epoch: int, *, bare, say):
        import time

        from .. import progress
        from ..train import steps
        from ..train.batches import InputTimer

        config, device = self.config, self.device
        order = np.random.default_rng([config.seed, epoch, self.rank]).permutation(len(self.train_items))
        samples = Samples(self.train_items, order, config, seed=[config.seed, epoch, self.rank])
        tally = steps.Tally(len(self.class_names), device)
        batches = InputTimer(self._loader(samples, config.input_workers))
        t0, seen = time.time(), 0
        ticker = progress.Ticker(PROGRESS_EVERY_S) if say else None
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device)
            scores, loss = steps.train_step(model, x, y, optimizer, self.criterion, grad_clip=config.grad_clip,
                                            autocast=self.autocast)
            tally.add(scores, y, loss)
            seen += int(y.shape[0])
            if ticker is not None and ticker.due():
                say(f"epoch {epoch + 1}/{config.epochs}: "
                    + progress.rate_eta(seen, len(order), time.time() - t0, "samples"))
        return tally, batches

    def train_metrics(self, trained) -> dict:
        tally, _ = trained
        if self.world > 1:
            tally.all_reduce()
        return tally.metrics("train")

    def input_wait_s(self, trained) -> float:
        return trained[1].waited

    def validate(self, model) -> dict:
        """Accuracy of the centre sample of every validation key."""
        import torch

        from ..train import steps

        model.eval()
        tally = steps.Tally(len(self.class_names), self.device)
        samples = Samples(self.val_items, np.arange(len(self.val_items)), self.config, seed=None)
        for x, y in self._loader(samples, self.config.input_workers):
            x, y = x.to(self.device), y.to(self.device)
            scores = steps.eval_scores(model, x, autocast=self.autocast)
            tally.add(scores, y, torch.nn.functional.cross_entropy(scores, y))
        return tally.metrics("val")

    def epoch_line(self, metrics: dict, *, train_s: float, eta_s: float) -> str:
        from .. import progress

        return progress.epoch_line(metrics, epochs=self.config.epochs, train_s=train_s, eta_s=eta_s)

    def after_checkpoint(self, run: str, history: list[dict], *, say) -> None:
        from ..train.curves import write_curves

        config = self.config
        try:
            write_curves(run, history, title=f"{config.run_name}: {config.model} {config.modality} {config.task}")
        except Exception as e:  # noqa: BLE001 - a chart that cannot be written costs a line, not the run
            say(f"warning: training curves not written ({type(e).__name__}: {e})")
