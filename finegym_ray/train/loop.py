"""Recognition as a task of the training engine (``engine.py``): the recognizer a config
names, trained on the clips Ray Data samples (``data.py``) with the steps of ``steps.py``.
The train split is sharded among the workers and shuffled on each (``batches.py``); the
val split is validated whole on rank 0.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn
from torch import nn

from .. import progress
from . import steps
from .batches import EpochBatches, InputTimer
from .config import TrainConfig
from .weights import load_pretrained

PROGRESS_EVERY_S = 30.0  # a line within an epoch at most this often (seconds), on rank 0
# ActionVLAD's k-means: the descriptors of rank 0's first KMEANS_BATCHES training batches
# (a batch of 8 clips of 10 frames at 224x224 holds 15,680), at most KMEANS_DESCRIPTORS
# of them drawn at random: enough for 64 centres. Every worker takes that many batches
# before the broadcast, since Ray Data starts a split dataset's epoch only when every
# worker reads from it.
KMEANS_BATCHES = 8
KMEANS_DESCRIPTORS = 65_536


def model_for(config: TrainConfig, num_classes: int, *, pretrained: bool = True, sha256: str | None = None):
    """The model ``config`` names, initialised from ``config.pretrained`` when given and
    ``pretrained`` (weights about to be replaced by a checkpoint's need no download);
    ``sha256``: the digest those weights must have."""
    return steps.build_model(config.model, pretrained=config.pretrained if pretrained else None,
                             pretrained_strict=config.pretrained_strict, pretrained_sha256=sha256,
                             **config.model_kwargs(num_classes))


def check_pretrained(config: TrainConfig, num_classes: int, *, say: Callable[[str], None]) -> dict:
    """Load ``config.pretrained`` into a model of ``config`` on the CPU as a worker
    will, ``say`` the load report and return its record (``weights.LoadReport.record``);
    InputError where the load is refused."""
    model = steps.build_model(config.model, **config.model_kwargs(num_classes))
    report = load_pretrained(model.backbone, config.pretrained, strict=config.pretrained_strict)
    say(report.text())
    return report.record()


class _Collate(NumpyBatchCollateFn):
    """Samples -> tensors, leaving out the string ``key`` column torch cannot hold."""

    def __call__(self, batch: dict) -> dict:
        # Ray Data's arrays are read-only views of Arrow buffers, which torch can hold only
        # with a warning (writing to such a tensor is undefined): a writable C-ordered
        # copy where needed (a batch's copy is cheap beside the step that takes it).
        return {k: torch.from_numpy(np.require(batch[k], requirements=("C", "W")))
                for k in ("x", "label", "flow_bound")}


@dataclass
class Recognition:
    """The engine's task for a recognition run of ``config``: ``class_weights`` weigh the
    loss (None: unweighted), ``train_clips`` (clips in the train split) sizes the
    progress lines within an epoch, ``data_hash`` (the clips' preprocessing settings
    hash) and ``coverage`` (per split, the clips used of the labelled keys:
    ``run.split_coverage``) go into every checkpoint. Reads Ray Train's ``train`` and
    ``val`` datasets."""

    label: ClassVar[str] = "train"
    config: TrainConfig
    class_names: list[str]
    class_weights: list[float] | None
    train_clips: int
    data_hash: str | None
    coverage: dict = field(default_factory=dict)
    # config.pretrained as the driver checked it (run.pretrained_record): every worker
    # loads the file of that SHA-256, and every checkpoint records it.
    pretrained: dict | None = None

    @property
    def meta(self) -> dict:
        return {"class_names": self.class_names, "data_hash": self.data_hash, "coverage": self.coverage,
                "pretrained": self.pretrained}

    @property
    def keep_best(self) -> bool:
        return self.config.keep_best

    def setup(self, *, rank: int, world: int, device) -> None:
        import ray.train

        config = self.config
        self.device, self.rank, self.world = device, rank, world
        weights = self.class_weights
        self.criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, device=device) if weights else None,
                                             label_smoothing=config.label_smoothing)
        self.batches = EpochBatches(ray.train.get_dataset_shard("train"), batch_size=config.batch_size,
                                    buffer_rows=config.shuffle_buffer, collate_fn=_Collate(), seed=config.seed)
        self.val_data = ray.train.get_dataset_shard("val") if rank == 0 and config.val_every else None
        self.autocast = steps.autocast_for(device, config.bf16)
        self.inputs = {"modality": config.modality, "clip_model": config.clip_model}
        # Rank 0's share of an epoch's clips (an equal split), for its lines within an epoch.
        self.shard_clips = -(-int(self.train_clips or 0) // world) or None

    def build_model(self, *, pretrained: bool) -> nn.Module:
        config = self.config
        # A new run's ActionVLAD starts its centres from k-means before its first step; a
        # resumed one has them in its checkpoint.
        self.kmeans_pending = pretrained and config.model == "actionvlad" and config.vlad_centres == "kmeans"
        model = model_for(config, len(self.class_names), pretrained=pretrained,
                          sha256=(self.pretrained or {}).get("sha256"))
        if self.device.type == "cuda" and config.channels_last:
            # With channels-last weights, convolutions produce channels-last outputs whatever
            # the input's layout, so the input needs no conversion. Clip models (3-D
            # convolutions) take the 3-D form: an I3D-R50 step on an H200 took 0.020 s in it
            # against 0.043 s contiguous (benchmarks/gpu_check.py, 2026-12-04).
            model = model.to(memory_format=torch.channels_last_3d if config.clip_model else torch.channels_last)
        return model

    def train_epoch(self, model: nn.Module, optimizer, epoch: int, *, bare: nn.Module,
                    say: Callable[[str], None] | None) -> tuple[steps.Tally, InputTimer]:
        config, device = self.config, self.device
        t0 = time.time()
        tally = steps.Tally(len(self.class_names), device)
        batches = InputTimer(self.batches.epoch(epoch, start_next=epoch + 1 < config.epochs))
        ticker, seen = progress.Ticker(PROGRESS_EVERY_S) if say else None, 0
        stream = self._kmeans_centres(bare, batches, say=say) if self.kmeans_pending else batches
        hold = steps.held_parameters(bare, epoch=epoch, head_only_epochs=config.freeze_vlad_epochs)
        for batch in stream:
            x = self._network_input(batch)
            y = batch["label"].to(device)
            scores, loss = steps.train_step(model, x, y, optimizer, self.criterion, grad_clip=config.grad_clip,
                                            autocast=self.autocast, hold=hold)
            tally.add(scores, y, loss)
            if ticker is not None:
                seen += int(y.shape[0])
                if ticker.due():
                    say(f"epoch {epoch + 1}/{config.epochs}: "
                        + progress.rate_eta(seen, self.shard_clips, time.time() - t0, "clips"))
        return tally, batches

    def _network_input(self, batch: dict) -> torch.Tensor:
        return steps.model_input(batch["x"].to(self.device, non_blocking=True), batch["flow_bound"], **self.inputs)

    def _kmeans_centres(self, bare: nn.Module, batches: Iterator[dict], *,
                        say: Callable[[str], None] | None) -> Iterator[dict]:
        """Set ActionVLAD's centres by k-means over the descriptors of the first
        KMEANS_BATCHES batches of rank 0's shard, the same on every worker (rank 0's,
        broadcast); the batches, those read first included, all to train on."""
        taken = list(itertools.islice(batches, KMEANS_BATCHES))
        if self.rank == 0:
            found = [steps.vlad_descriptors(bare, self._network_input(b), autocast=self.autocast) for b in taken]
            line = "VLAD centres left at random: no training clip on rank 0"
            if found:
                descriptors = torch.cat(found)
                steps.init_vlad_centres(bare, descriptors, limit=KMEANS_DESCRIPTORS, seed=self.config.seed)
                line = (f"VLAD centres by k-means over {min(len(descriptors), KMEANS_DESCRIPTORS):,} descriptors of "
                        f"{sum(len(b['label']) for b in taken)} clips")
            if say:
                say(line)
        if self.world > 1:
            for tensor in (bare.vlad.centres, bare.vlad.assign.weight, bare.vlad.assign.bias):
                torch.distributed.broadcast(tensor.data, src=0)
        self.kmeans_pending = False
        return itertools.chain(taken, batches)

    def train_metrics(self, trained: tuple[steps.Tally, InputTimer]) -> dict:
        tally, _ = trained
        if self.world > 1:
            tally.all_reduce()
        return tally.metrics("train")

    def input_wait_s(self, trained: tuple[steps.Tally, InputTimer]) -> float:
        return trained[1].waited

    def validate(self, model: nn.Module) -> dict:
        """Centre-view accuracy on the validation split."""
        model.eval()
        tally = steps.Tally(len(self.class_names), self.device)
        for batch in self.val_data.iter_torch_batches(batch_size=self.config.batch_size, collate_fn=_Collate()):
            x = steps.model_input(batch["x"][:, 0].to(self.device), batch["flow_bound"], **self.inputs)  # the one view
            y = batch["label"].to(self.device)
            scores = steps.eval_scores(model, x, autocast=self.autocast)
            tally.add(scores, y, nn.functional.cross_entropy(scores, y))
        return tally.metrics("val")

    def epoch_line(self, metrics: dict, *, train_s: float, eta_s: float) -> str:
        return progress.epoch_line(metrics, epochs=self.config.epochs, train_s=train_s, eta_s=eta_s)

    def after_checkpoint(self, run: str, history: list[dict], *, say: Callable[[str], None]) -> None:
        # From the checkpoint's history: a resumed run's curves are rebuilt, never
        # appended to (curves.py). A chart that cannot be written costs a line, not the run.
        from .curves import write_curves

        config = self.config
        try:
            write_curves(run, history, title=f"{config.run_name}: {config.model} {config.modality} {config.task}")
        except Exception as e:  # noqa: BLE001 - see above
            say(f"warning: training curves not written ({type(e).__name__}: {e})")
