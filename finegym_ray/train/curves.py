"""Training curves of a run: TensorBoard event files and a PNG, both in the run folder
(local or s3://), both rebuilt from the run's whole history after every epoch.

    RUN/tensorboard/events.out.tfevents.finegym-ray   scalars per epoch (step: epochs done)
    RUN/curves.png                                    loss and accuracy per epoch

Rebuilding rather than appending is what makes a resumed run come out right: the
history in the newest checkpoint's meta.json is the run's record, so an epoch trained
again after a checkpoint was lost replaces its first attempt instead of appearing twice,
and an object store, which cannot append, is written the same way as a local folder.
``tensorboard --logdir RUNS`` shows every run under RUNS, one per folder.

No Ray and no torch here: the worker loop (rank 0) calls :func:`write_curves`.
"""

from __future__ import annotations

import os
import struct
import tempfile

from .. import storage

TENSORBOARD_DIR = "tensorboard"
# One fixed name, so that a rewrite replaces the file rather than adding one beside it.
# TensorBoard reads any file whose name holds "tfevents".
EVENT_FILE = "events.out.tfevents.finegym-ray"
CURVES_PNG = "curves.png"

# history key -> TensorBoard tag. Tags share a prefix per chart, so TensorBoard groups
# train and validation loss in one section, and accuracies in another.
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val",
        "train_top1": "accuracy/train_top1", "train_mean_class": "accuracy/train_mean_class",
        "val_top1": "accuracy/val_top1", "val_mean_class": "accuracy/val_mean_class",
        "lr": "optim/lr", "epoch_s": "time/epoch_s", "data_wait_s": "time/data_wait_s"}


def epochs_done(m: dict) -> int:
    """The 1-based epoch number of a history entry (``epoch`` there counts from 0): the
    x axis of the charts and TensorBoard's step."""
    return int(m["epoch"]) + 1


def event_file_bytes(history: list[dict]) -> bytes:
    """A TensorBoard event file holding ``TAGS``' scalars of every epoch in ``history``
    (step: epochs done). Entries without a value (no validation that epoch) are left out."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="finegym-tb-") as tmp:
        writer = SummaryWriter(logdir=tmp)
        try:
            for m in history:
                for key, tag in TAGS.items():
                    if isinstance(m.get(key), (int, float)):
                        writer.add_scalar(tag, float(m[key]), global_step=epochs_done(m))
        finally:
            writer.close()
        (name,) = [n for n in os.listdir(tmp) if "tfevents" in n]
        with open(os.path.join(tmp, name), "rb") as f:
            return f.read()


def read_scalars(data: bytes) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of a TensorBoard event file's scalars, in file order.
    Reads the TFRecord framing (length, its CRC, the record, its CRC) without checking
    the CRCs: for tests and ``runs``, not for files of unknown origin."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        record = data[pos + 12:pos + 12 + length]
        pos += 12 + length + 4
        event = Event.FromString(record)
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out


def write_curves(run: str, history: list[dict], *, title: str = "") -> list[str]:
    """Rewrite the run's event file and curves.png from ``history`` (metrics per epoch,
    as in a checkpoint's meta.json); returns the URIs written."""
    from ..charts import curves_png

    event_uri = storage.join(run, TENSORBOARD_DIR, EVENT_FILE)
    png_uri = storage.join(run, CURVES_PNG)
    storage.write_bytes(event_uri, event_file_bytes(history))
    storage.write_bytes(png_uri, curves_png(history, title=title or run.rstrip("/").rsplit("/", 1)[-1]))
    return [event_uri, png_uri]

