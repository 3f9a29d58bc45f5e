"""Training the temporal detector with Ray Train: a task of the training engine
(``train/engine.py``), checkpoints in ``train/checkpoint.py``'s format.

Runs live at ``config.runs``/``run_name`` (local or s3://), as recognition runs do:
``epoch_NNNN/`` checkpoints, our ``config.yaml`` and Ray Train's run state. Running the
same config again continues after the newest complete checkpoint; a worker that dies is
replaced and restarts from it (``max_failures``).

Feature files are small (a video's sequence is a few hundred kB), so no Ray Data: the
driver lists them and reads the ground truth once, and each worker reads its own shard
of sequences into memory. Every worker holds the same number of sequences (a shard short
of one repeats its first), so every worker takes the same number of steps and DDP's
collectives stay in step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ..config import from_dict
from ..errors import InputError
from ..progress import duration
from ..train import checkpoint as checkpoints
from ..train.engine import Plan, check_same_settings, history_table, run_uri, saved_settings, train_held
from .config import LocalizeConfig
from .data import Dataset, GroundTruth, load_dataset

# Settings a resume may change: they change where and how fast, not what is trained.
MUTABLE = {"workers", "cpus_per_worker", "use_gpu", "max_failures", "runs", "features", "annotations",
           "keep_checkpoints", "score_threshold", "sigma", "max_detections", "val_every", "mlflow", "wandb"}


def ground_truth_of(config: LocalizeConfig) -> GroundTruth:
    """The ground truth of ``config.annotations`` at ``config.level`` (localize.formats)."""
    from .formats import read_ground_truth

    if not config.annotations:
        raise InputError("localize needs annotations (--set annotations=PATH: a FineGym annotation folder or JSON, "
                         "or ActivityNet-format ground truth)")
    return read_ground_truth(config.annotations, level=config.level)


def prepare(config: LocalizeConfig, *, say: Callable[[str], None] = print) -> Dataset:
    """The run's sequences, split, with their ground truth; the detector name checked.
    Raises InputError when they cannot train the task. No Ray needed."""
    from ..models.detector import DETECTORS

    if config.detector not in DETECTORS:
        raise InputError(f"unknown detector {config.detector!r}; detectors: {', '.join(DETECTORS)}")
    data = load_dataset(config, ground_truth_of(config), say=say)
    if not data.train:
        raise InputError(f"{config.features}: all {len(data.ids)} {config.level} sequences fell in val "
                         f"(val_fraction {config.val_fraction}): too few videos to train")
    if len(data.train) < config.workers:
        raise InputError(f"{len(data.train)} training sequences cannot feed {config.workers} workers")
    say(f"{config.level} level, task {config.task}: {len(data.class_names)} classes, {len(data.train)} train and "
        f"{len(data.val)} val sequences of {data.feature_dim} features")
    return data


def run_localize_training(config: LocalizeConfig, *, break_lease: bool = False,
                          say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the detector run of ``config`` on the Ray cluster this process is
    connected to. Returns ``run`` (its URI), ``checkpoint`` (the last one's URI) and
    ``history`` (metrics per epoch). Raises InputError for data that cannot train or a run
    that cannot resume with these settings, RuntimeError when training fails past
    ``max_failures``. One job trains a run at a time (``lease.py``)."""
    import ray

    from ..capacity import Need

    # A GPU per worker when it trains on GPUs (use_gpu None: when the cluster has any).
    use_gpu = config.use_gpu if config.use_gpu is not None else ray.cluster_resources().get("GPU", 0.0) > 0
    gpus = 1.0 if use_gpu else 0.0
    needs = [Need("train workers", config.workers, {"CPU": float(config.cpus_per_worker), "GPU": gpus})]
    return train_held(lambda: training_plan(config, prepare(config, say=say)), needs=needs,
                      what=f"localize train {config.run_name}", break_lease=break_lease, say=say)


def training_plan(config: LocalizeConfig, data: Dataset) -> Plan:
    """The engine's plan of ``config``'s run on ``data``: every worker reads its shard of
    the sequences itself (see the module docstring); no Ray Data."""
    uri = run_uri(config)
    task = Detection(config, class_names=data.class_names, train=data.train, val=data.val,
                     ground_truth=data.ground_truth, feature_dim=data.feature_dim, data_hash=data.settings_hash)
    return Plan(config, task, lambda resumed: _check_same(uri, config, resumed, data), hand_over_state=True,
                record_failures=False)


def _check_same(uri: str, config: LocalizeConfig, checkpoint: checkpoints.Checkpoint, data: Dataset) -> None:
    """Refuse to resume with settings that change the model or its data."""
    check_same_settings(uri, config, saved_settings(checkpoint), mutable=MUTABLE)
    theirs = checkpoint.meta.get("data_hash")
    if theirs != data.settings_hash or checkpoint.meta.get("class_names") != data.class_names:
        raise InputError(f"{checkpoint.uri} was trained on features with settings hash {theirs} and classes "
                         f"{checkpoint.meta.get('class_names')}, but {config.features} holds hash "
                         f"{data.settings_hash} and classes {data.class_names}: use another name")


def checkpoint_config(checkpoint: checkpoints.Checkpoint) -> LocalizeConfig:
    """The LocalizeConfig a checkpoint was written with."""
    return from_dict(LocalizeConfig, saved_settings(checkpoint), f"{checkpoint.uri}/config.yaml")


def build_detector(config: LocalizeConfig, *, in_channels: int, num_classes: int):
    """The detector ``config`` names (models.DETECTORS) for these input channels and classes."""
    from ..models.detector import DETECTORS

    try:
        return DETECTORS[config.detector](in_channels=in_channels, num_classes=num_classes,
                                          **config.detector_kwargs)
    except TypeError as e:  # an unknown keyword: a setting, not a bug
        raise InputError(f"detector {config.detector!r}: {e} (detector_kwargs {config.detector_kwargs})") from None


def format_history(history: list[dict]) -> str:
    """The losses of each epoch as a table."""
    cols = [("epoch", "epoch", "{:d}"), ("train_loss", "loss", "{:.4f}"), ("train_cls", "cls", "{:.4f}"),
            ("train_reg", "reg", "{:.4f}"), ("val_loss", "val loss", "{:.4f}"), ("iterations", "iters", "{:d}"),
            ("epoch_s", "s", "{:.1f}")]
    return history_table(history, cols, width=9)


# -- what each Ray Train worker runs -------------------------------------------------------


@dataclass
class Detection:
    """The engine's task for a detector run of ``config``: ``train`` / ``val`` (sequence
    URIs), ``ground_truth`` (sequence id -> [(label, start s, end s)]), ``feature_dim``
    (features per step), ``data_hash`` (the features' settings hash, in every checkpoint)."""

    label: ClassVar[str] = "localize"
    keep_best: ClassVar[bool] = False  # no val_mean_class to rank by
    config: LocalizeConfig
    class_names: list[str]
    train: list[str]
    val: list[str]
    ground_truth: dict
    feature_dim: int
    data_hash: str | None

    @property
    def meta(self) -> dict:
        return {"class_names": self.class_names, "data_hash": self.data_hash, "feature_dim": self.feature_dim}

    def setup(self, *, rank: int, world: int, device) -> None:
        from .data import load_examples

        config, uris = self.config, self.train
        self.rank, self.world, self.device = rank, world, device
        # This worker's shard, every shard as long as the longest (see the module docstring).
        shard = uris[rank::world]
        per_worker = -(-len(uris) // world)
        shard = (shard * per_worker)[:per_worker] if shard else uris[:per_worker]
        gt = {k: [tuple(s) for s in v] for k, v in self.ground_truth.items()}
        self.train_examples = load_examples(shard, gt, self.class_names, config.task)
        self.val_examples = load_examples(self.val, gt, self.class_names, config.task) \
            if rank == 0 and config.val_every else []

    def build_model(self, *, pretrained: bool):
        # No pretrained weights: a detector starts from its initialisation.
        return build_detector(self.config, in_channels=self.feature_dim, num_classes=len(self.class_names))

    def train_epoch(self, model, optimizer, epoch: int, *, bare, say) -> dict[str, float]:
        import numpy as np

        config = self.config
        # The order and crops of an epoch follow from the seed, the epoch and the rank, so
        # a resumed run repeats them.
        rng = np.random.default_rng([config.seed, epoch, self.rank])
        return train_epoch(model, bare.loss, optimizer, self.train_examples, batch_size=config.batch_size,
                           max_steps=config.max_steps, grad_clip=config.grad_clip, rng=rng, device=self.device)

    def train_metrics(self, means: dict[str, float]) -> dict:
        import torch

        means = dict(means)
        iterations = means.pop("batches")  # the same on every worker (equal shards)
        mean = torch.tensor(list(means.values()), device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(mean)
            mean /= self.world
        return {**{f"train_{k}": round(float(v), 5) for k, v in zip(means, mean.tolist())},
                "iterations": int(iterations)}

    def input_wait_s(self, means: dict[str, float]) -> None:
        return None  # the sequences are in memory

    def validate(self, model) -> dict:
        if not self.val_examples:
            return {}
        return {"val_loss": round(_val_loss(model, self.val_examples, self.config.batch_size, self.device), 5)}

    def epoch_line(self, metrics: dict, *, train_s: float, eta_s: float) -> str:
        epochs = self.config.epochs
        eta = f"; run ETA {duration(eta_s)}" if metrics["epoch"] + 1 < epochs else ""
        return f"epoch {metrics['epoch'] + 1}/{epochs}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch" and isinstance(v, (int, float))) + eta

    def after_checkpoint(self, run: str, history: list[dict], *, say) -> None:
        pass  # the detector's mAP is evaluate's; no curves


def train_epoch(model, loss_fn, optimizer, examples: list, *, batch_size: int, max_steps: int, grad_clip: float,
                rng, device) -> dict[str, float]:
    """One pass over ``examples`` (data.Example) in an order drawn from ``rng``, each
    cropped to ``max_steps`` (0: whole); ``loss_fn(output, targets)`` is the detector's
    ``loss`` (the bare module's under DDP). Returns the mean ``loss``, ``cls``, ``reg``
    over the batches, and ``batches`` (optimizer steps taken). Torch only: the Ray Train
    loop and benchmarks/detector.py call it."""
    import torch

    from .data import collate, crop

    order = rng.permutation(len(examples))
    sums = {"loss": 0.0, "cls": 0.0, "reg": 0.0}
    batches = 0
    for i in range(0, len(order), batch_size):
        items = [crop(examples[j], max_steps, rng) for j in order[i:i + batch_size]]
        feats, mask, targets = _to_device(collate(items), device)
        losses = loss_fn(model(feats, mask), targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        for k in sums:
            sums[k] += float(losses[k].detach())
        batches += 1
    return {**{k: v / max(batches, 1) for k, v in sums.items()}, "batches": batches}


def _to_device(batch, device):
    feats, mask, targets = batch
    return feats.to(device), mask.to(device), [(s.to(device), lab.to(device)) for s, lab in targets]


def _val_loss(model, val: list, batch_size: int, device) -> float:
    """Mean detector loss over the validation sequences (rank 0, the bare module, so that
    DDP starts no collective)."""
    import torch

    from .data import collate

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            feats, mask, targets = _to_device(collate(val[i:i + batch_size]), device)
            total += float(model.loss(model(feats, mask), targets)["loss"])
            n += 1
    model.train()
    return total / max(n, 1)
