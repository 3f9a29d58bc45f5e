"""The backbone of feature extraction: a trained recognition run's checkpoint, and how
its clips were decoded, so that snippets reach it as its clips did in evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError
from ..store import settings_uri
from .config import ExtractConfig


@dataclass(frozen=True)
class Backbone:
    """What the actors need to rebuild and feed the backbone (pickles into Ray workers).

    ``train``: the run's TrainConfig as a dict; ``classes``: the classes its model was
    trained on (the size of its head); ``short_side`` (pixels, 0 native),
    ``fps`` (None: the video's), ``flow`` ({method, options} or None), ``flow_bound``
    (pixels): how frames are decoded and flow computed, the run's preprocessing settings
    unless the config overrides them; ``input_size`` (height, width) pixels."""

    run: str
    checkpoint: str
    epoch: int
    train: dict
    classes: int
    short_side: int
    fps: float | None
    flow: dict | None
    flow_bound: float
    input_size: tuple[int, int]
    store: str

    @property
    def modality(self) -> str:
        return self.train["modality"]

    @property
    def clip_model(self) -> bool:
        from ..train.config import CLIP_MODELS

        return self.train["model"] in CLIP_MODELS


def open_backbone(run: str, config: ExtractConfig) -> Backbone:
    """The backbone of ``run`` (a run folder: its newest complete checkpoint; or one
    ``epoch_NNNN`` checkpoint folder). FileNotFoundError / ValueError with one line
    saying why when it is not one. Reads no weights (no torch)."""
    from ..train import checkpoint as checkpoints
    from ..train.data import recorded_settings
    from ..train.run import checkpoint_config

    try:
        checkpoint = checkpoints.open_checkpoint(run)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--run {e}") from None
    except (checkpoints.CheckpointError, checkpoints.CheckpointFormatError) as e:
        raise InputError(f"--run {e}") from None
    run = checkpoints.run_of(checkpoint.uri)
    train = checkpoint_config(checkpoint)
    class_names = checkpoint.meta.get("class_names")
    if not isinstance(class_names, list) or not class_names:
        raise InputError(f"--run {checkpoint.uri}/meta.json names no classes: not a checkpoint of a trained run")
    settings = recorded_settings(train.data)
    flow = settings.get("flow") if train.modality == "flow" else None
    if train.modality == "flow":
        method = flow.get("method") if flow else None
        if not method or method == "none":
            raise InputError(f"--run {run}: a flow model, but its clips' preprocessing settings "
                             f"({settings_uri(train.data)}) name no flow method to compute flow "
                             "with")
        flow = {"method": flow["method"], "options": {k: v for k, v in flow.items() if k != "method"}}
        # A GPU flow method runs on the decoding actors' CPUs here.
        if "device" in flow["options"]:
            flow["options"]["device"] = "cpu"
    short = config.short_side if config.short_side is not None else settings.get("short_side", train.test_short)
    fps = config.fps or settings.get("max_fps") or None
    size = (config.input_height, config.input_width or config.input_height) if config.input_height \
        else train.input_size
    return Backbone(run=run, checkpoint=checkpoint.uri, epoch=checkpoint.epoch, train=asdict(train),
                    classes=len(class_names), short_side=int(short or 0), fps=float(fps) if fps else None, flow=flow,
                    flow_bound=float(settings.get("flow_bound", 20.0)), input_size=tuple(size), store=train.data)


def backbone_weights(backbone: Backbone) -> dict:
    """The model state dict of ``backbone``'s checkpoint, verified against its manifest
    and loaded on CPU (``Checkpoint.load_state``): on the driver, before any Ray work, so
    that a state that would run code is refused in one line (UnsafeCheckpointError) and
    no actor reads or unpickles the file."""
    from ..train import checkpoint as checkpoints

    checkpoint = checkpoints.open_at(backbone.checkpoint)
    if checkpoint is None:
        raise FileNotFoundError(f"{backbone.checkpoint}: checkpoint gone")
    return checkpoint.load_state()["model"]

