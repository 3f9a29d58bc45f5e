"""The test-time protocol: score every validation clip of a run with several temporal
views x spatial crops (softmax scores averaged), then the paper's metrics and charts.

Every labelled clip that exists is scored, exactly once: a labelled key without a clip
(its video missing, its unit failed in preprocessing) is counted and reported beside
every figure, with why, in the printed line and table and in metrics.json
(``labelled``, ``without_clip``, ``without_clip_why``); ``require_complete`` refuses
to score a split with such keys, FineGym's strict protocol.

Writes, under RUN/eval/: ``scores.parquet`` (key, label, averaged softmax scores),
``metrics.json`` (with 95 % bootstrap intervals), ``confusion.png`` and
``per_class.png`` (RUN/eval/<checkpoint folder>/ for a checkpoint other than the run's
newest), with the checkpoint's manifest hash, so that a later evaluation of the same
checkpoint, clips and settings reuses the scores. ``--fuse RUN2`` takes the weighted
mean of two runs' scores (RGB + flow = two-stream; TSN's weights RGB 1 : flow 1.5 unless
given) into RUN/eval/fused_<RUN2 name>_<hash of RUN2's URI>/. ``out`` puts what would go
to RUN/eval/ in another folder (a read-only run, a shared bucket), in the same layout,
and RUN2's own results in OUT/fuse_run/.

Everything a command can be refused for is checked on the driver before any Ray work
(``plan_evaluation``): the checkpoints, the clips, each state.pt (loaded there, once,
so that a state that would run code is refused in one line, and handed to the scoring
actors through the object store) and whether the outputs can be written.

The paper's test-time studies (Sec. 4.4) change the protocol: another number of test
segments (Fig. 6c) or shuffled frame order (Fig. 6b). Their results go to
RUN/eval/<variant>/ (``variant_name``), so the standard evaluation stays as it was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from .. import storage
from ..charts import confusion_png, per_class_png
from ..errors import InputError
from ..metrics import bootstrap, confusion_matrix, confusion_mean_class, confusion_per_class, confusion_top1, interval
from . import checkpoint as checkpoints
from .config import TrainConfig, absolute_uri
from .data import SplitLabels, check_data_settings, present_split_labels, sampled_clips
from .run import checkpoint_config

# Models whose weights fit one number of segments: TRN's relation MLPs take the features
# of all T segments at once (T * features inputs). TSN and TSM take any (TSM's shift only
# reshapes by it).
FIXED_SEGMENT_MODELS = {"trn", "trn_multiscale"}

# Two-stream fusion weights per modality: TSN's (Wang et al., ECCV 2016), which weights
# the spatial (RGB) and temporal (flow) streams 1 : 1.5; an equal mean under-weights flow,
# the stronger stream on FineGym's elements. Pose runs (pose/): PoseC3D fuses its
# keypoint and limb streams 1 : 1, and no published weight sets pose against RGB or
# flow, so 1 (give --fuse-weights for another).
TSN_FUSE_WEIGHTS = {"rgb": 1.0, "flow": 1.5, "keypoints": 1.0, "limbs": 1.0}

# metrics.json's intervals: a percentile bootstrap over the clips (metrics.bootstrap).
INTERVAL = {"level": 0.95, "method": "percentile bootstrap over clips", "samples": 1000, "seed": 0}


def variant_name(segments: int | None = None, shuffle_frames: bool = False, seed: int = 0) -> str:
    """The RUN/eval/ subfolder of a test-time variant, '' for the standard protocol:
    ``segments_12``, ``shuffled``, ``segments_5_shuffled``, ``shuffled_seed_3``. A
    ``segments`` given names the folder even when it equals the trained count, so that a
    sweep finds every count in the same place."""
    parts = [] if segments is None else [f"segments_{segments}"]
    if shuffle_frames:
        parts.append("shuffled" + (f"_seed_{seed}" if seed else ""))
    return "_".join(parts)


def config_at_test(config: TrainConfig, segments: int | None) -> TrainConfig:
    """``config`` with ``segments`` test segments (None: as trained), for both the sampler
    and the model. Raises ValueError when the model's weights or input fix the count (a
    pose run's PoseConfig: tested as trained)."""
    if segments is not None and not isinstance(config, TrainConfig):
        raise InputError(f"{config.model} on poses is tested with the {config.frames} frames it was trained on, "
                         f"not --segments {segments}")
    if segments is None or segments == config.segments:
        return config
    if segments < 1:
        raise InputError(f"test segments must be >= 1, got {segments}")
    if config.clip_model:
        raise InputError(f"{config.model} samples one dense clip whose segments={config.segments} are its frames: "
                         f"it is tested as trained, not with {segments} segments")
    if config.model in FIXED_SEGMENT_MODELS:
        raise InputError(f"{config.model}'s relation MLPs take the features of all {config.segments} trained "
                         f"segments at once, so its weights do not fit {segments} segments (test it as trained)")
    return replace(config, segments=segments)


def checkpoint_at_test(run: str, segments: int | None = None, *, say: Callable[[str], None] | None = None,
                       verify_state: bool = True, which: str = "last",
                       data: str | None = None) -> tuple[checkpoints.Checkpoint, TrainConfig]:
    """The checkpoint ``run`` names (a checkpoint folder, or the run's ``which``: ``last``,
    the newest complete one, or ``best`` by validation mean class accuracy; ``say`` hears
    of folders passed over) and the config it is tested with (``config_at_test``), its
    clips ``data`` when given (checked against the run's preprocessing settings hash,
    ``check_data_hash``). Reads no state.pt unless ``verify_state``. Raises
    FileNotFoundError without a checkpoint."""
    checkpoint = checkpoints.select(run, which, say=say, verify_state=verify_state)
    if checkpoint is None:
        if not storage.list_uris(run):
            raise FileNotFoundError(f"{run}: no such run (nothing there; a run is RUNS/NAME, as train printed)")
        raise FileNotFoundError(f"{run}: no complete checkpoint (train the run first)")
    config = tested_config(checkpoint)
    if data is not None:
        config = replace(config, data=absolute_uri(data))
    check_data_hash(checkpoint, config.data, overridden=data is not None)
    return checkpoint, config_at_test(config, segments)


def tested_config(checkpoint: checkpoints.Checkpoint):
    """The config a checkpoint was trained with: a PoseConfig for a pose run's (its
    meta.json's ``kind``), else a TrainConfig."""
    from ..pose.train import KIND

    if checkpoint.meta.get("kind") == KIND:
        from ..pose.train import checkpoint_config as pose_config

        return pose_config(checkpoint)
    return checkpoint_config(checkpoint)


def protocol_of(config) -> dict:
    """``views``, ``crops`` and ``segments`` of the test protocol of a TrainConfig or a
    pose run's PoseConfig, as metrics.json records them."""
    if not isinstance(config, TrainConfig):
        from ..pose.evaluate import protocol_of as pose_protocol_of

        return pose_protocol_of(config)
    return {"views": config.test_views, "crops": config.test_crops, "segments": config.segments}


def validation_labels(config) -> SplitLabels:
    """The labels of the validation keys that have the run's input: clips, or poses for
    a pose run; the others in ``absent``, with why. Checks the clips' recorded settings
    against the task and modality first."""
    if not isinstance(config, TrainConfig):
        from ..pose.data import pose_split_labels

        return pose_split_labels(config.data, config.task, config.val_split)
    check_data_settings(config.data, config.task, config.modality)
    return present_split_labels(config.data, config.task, config.val_split)


def check_data_hash(checkpoint: checkpoints.Checkpoint, data: str, *, overridden: bool) -> None:
    """Refuse (ValueError) clips ``data`` whose preprocessing settings hash is not the one
    the checkpoint was trained on (its meta.json's ``data_hash``): another flow method or
    frame size would be scored with a model that never saw such input. A checkpoint
    without a recorded hash is not checked."""
    from ..store import recorded_hash as settings_hash

    theirs = checkpoint.meta.get("data_hash")
    if theirs is None:
        return
    ours = settings_hash(data)
    if ours != theirs:
        where = f"--data {data}" if overridden else f"its recorded data {data}"
        holds = f"holds hash {ours}" if ours else "holds no preprocessing output (no preprocess.json)"
        raise InputError(f"{checkpoint.uri} was trained on clips with preprocessing settings hash {theirs}, but "
                         f"{where} {holds}: give --data the clips it was trained on (or a copy)")


def is_newest(checkpoint: checkpoints.Checkpoint) -> bool:
    """Whether ``checkpoint`` is its run's newest complete checkpoint."""
    latest = checkpoints.find_latest(checkpoints.run_of(checkpoint.uri))
    return latest is not None and latest.uri.rstrip("/") == checkpoint.uri.rstrip("/")


def eval_folder(checkpoint: checkpoints.Checkpoint, variant: str = "", newest: bool | None = None,
                root: str | None = None) -> str:
    """Where a checkpoint's evaluation goes: ROOT/[VARIANT] for the run's newest
    checkpoint (the standard place), ROOT/<checkpoint folder>/[VARIANT] for any other,
    so that scoring the best epoch leaves the last one's results in place. ``root``:
    RUN/eval unless given (``--out``)."""
    root = storage.join(checkpoints.run_of(checkpoint.uri), "eval") if root is None else root
    newest = is_newest(checkpoint) if newest is None else newest
    return storage.join(root, "" if newest else checkpoint.uri.rstrip("/").rsplit("/", 1)[-1], variant)


# Under --out, the --fuse run's own results: beside the --run's, which take OUT itself.
FUSE_RUN_FOLDER = "fuse_run"


def check_writable(folder: str) -> None:
    """Refuse (ValueError) ``folder`` when the evaluation's outputs cannot be written
    there, before any scoring: a read-only run (a shared mount, a bucket with read-only
    credentials) would otherwise lose its scores at the end. Leaves nothing behind:
    locally an unnamed temporary file in the nearest folder that exists, on S3 a probe
    object, deleted at once."""
    location = storage.parse_uri(folder)
    try:
        if location.is_s3:
            probe = storage.join(folder, f".write_check-{uuid.uuid4().hex}")
            storage.write_bytes(probe, b"")
            storage.delete(probe)
        else:
            with tempfile.TemporaryFile(dir=_nearest_existing(location.key)):
                pass
    except storage.StorageError:
        raise  # storage that cannot be reached: its own message says so
    except OSError as e:
        raise InputError(f"{folder}: the evaluation's outputs cannot be written there ({e.strerror or e}); give "
                         f"--out DIR (a folder or an s3:// prefix) to write them elsewhere") from None


def _nearest_existing(path: str) -> str:
    """``path`` or the nearest of its parents that exists (the folder a write creates
    the rest in)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def fused_folder_name(other: checkpoints.Checkpoint, other_newest: bool) -> str:
    """The RUN/eval/ subfolder of a fusion with ``other``: its run's name and a short
    hash of its absolute URI (the run's, or the checkpoint's when not the run's newest),
    so that two runs of one name under different roots never share a folder."""
    target = checkpoints.run_of(other.uri) if other_newest else other.uri.rstrip("/")
    digest = hashlib.sha256(absolute_uri(target).encode()).hexdigest()[:8]
    name = checkpoints.run_of(other.uri).rsplit("/", 1)[-1]
    suffix = "" if other_newest else "_" + other.uri.rstrip("/").rsplit("/", 1)[-1]
    return f"fused_{name}{suffix}_{digest}"


# What must match for an earlier evaluation's scores to be reused: the checkpoint (by
# its manifest's hash, so a retrained checkpoint of the same epoch is scored anew), the
# clips and every test setting.
REUSE_KEYS = ("checkpoint_sha256", "data", "task", "split", "views", "crops", "segments", "shuffle_frames", "seed",
              "clips", "labelled")
# What the reports print of a reused metrics.json besides the figures themselves.
REPORTED_KEYS = ("variant", "top1_lo", "top1_hi", "mean_class_lo", "mean_class_hi", "without_clip",
                 "without_clip_why")


def reusable_scores(out: str, what: dict, keys: set[str] | None = None) -> tuple[pa.Table, dict] | None:
    """(scores, metrics) of an evaluation in ``out`` made with everything in REUSE_KEYS
    as in ``what`` and, when ``keys`` are given, of exactly those clips (a store whose
    preprocessing was completed since has more); None when there is none, it differs
    in any of them, or its metrics.json lacks what the reports print (REPORTED_KEYS:
    scored anew)."""
    try:
        metrics = json.loads(storage.read_text(storage.join(out, "metrics.json")))
    except (FileNotFoundError, ValueError):
        return None
    if any(metrics.get(k) != what.get(k) for k in REUSE_KEYS) or not set(REPORTED_KEYS) <= set(metrics):
        return None
    try:
        scores = storage.read_parquet(storage.join(out, "scores.parquet"))
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None
    if keys is not None and set(scores.column("key").to_pylist()) != keys:
        return None
    return scores, metrics


def check_fusable(a: TrainConfig, b: TrainConfig, class_names: tuple[list, list], runs: tuple[str, str]) -> None:
    """Refuse (ValueError) to fuse runs of another task, split or class list: their scores
    would not be of the same clips and classes."""
    problems = [f"{what} {x!r} vs {y!r}" for what, x, y in (("task", a.task, b.task),
                                                            ("validation split", a.val_split, b.val_split))
                if x != y]
    if not problems and list(class_names[0]) != list(class_names[1]):
        problems.append(f"classes {len(class_names[0])} vs {len(class_names[1])} (other names or order)")
    if problems:
        raise InputError(f"cannot fuse {runs[0]} with {runs[1]}: {'; '.join(problems)}")


def frame_order(key: str, length: int, seed: int = 0) -> np.ndarray:
    """A permutation of range(``length``) for clip ``key``: the same for the same key and
    seed in every process (a hash of both seeds the Generator; Python's hash() is salted
    per process)."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(length)


def permute_frames(x: np.ndarray, keys, seed: int = 0) -> np.ndarray:
    """uint8 samples ``x`` (N, V, T, C, H, W) with each clip's T axis (segments, or a clip
    model's frames) in ``frame_order``, the same order in all V views of a clip."""
    return np.stack([xi[:, frame_order(key, xi.shape[1], seed)] for xi, key in zip(x, keys)]) if len(x) else x


class ScoreClips:
    """``map_batches`` actor: samples with views (``x``: (N, V, T, C, H, W)) -> ``scores``
    (N, K) float32, softmax averaged over the V views. Keeps ``key`` and ``label``.

    The model is built from ``config`` (the checkpoint's, or ``config_at_test``'s with
    other segments) for ``classes`` classes and takes ``weights``: the model's state
    dict as the driver loaded it from the checkpoint, or its ObjectRef (one copy in the
    object store for every actor; no actor reads or unpickles a checkpoint file).
    ``shuffle_seed``: not None permutes each clip's frames (``permute_frames``) before
    the model sees them."""

    def __init__(self, weights, classes: int, config: TrainConfig, threads: int, shuffle_seed: int | None = None):
        import ray
        import torch

        from .loop import model_for

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.config = config
        self.shuffle_seed = shuffle_seed
        model = model_for(config, classes, pretrained=False)
        model.load_state_dict(ray.get(weights) if isinstance(weights, ray.ObjectRef) else weights)
        self.model = model.eval().to(self.device)

    def __call__(self, batch: dict) -> dict:
        import torch

        from .steps import model_input

        x = np.array(batch["x"])
        if self.shuffle_seed is not None:
            x = permute_frames(x, batch["key"], self.shuffle_seed)
        x = torch.from_numpy(x).to(self.device)
        n, v = x.shape[:2]
        bound = torch.from_numpy(np.array(batch["flow_bound"])).repeat_interleave(v)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(model_input(x.flatten(0, 1), bound, modality=self.config.modality,
                                            clip_model=self.config.clip_model)).float()
        scores = logits.softmax(-1).view(n, v, -1).mean(1)
        return {"key": batch["key"], "label": batch["label"], "scores": scores.cpu().numpy()}


def score_run(checkpoint: checkpoints.Checkpoint, config: TrainConfig, weights: dict, split: SplitLabels, *,
              workers: int = 1, cpus_per_worker: int = 1, shuffle_frames: bool = False,
              seed: int = 0, say: Callable[[str], None] | None = None) -> tuple[pa.Table, dict]:
    """Score the clips of ``split`` (the validation split's that exist:
    ``data.present_split_labels``) with ``checkpoint``'s model ``weights`` (its state
    dict, loaded on the driver: ``Checkpoint.load_state``) and ``config``
    (``checkpoint_at_test``: sampling and model take its segments); a pose run's
    PoseConfig scores its sub-actions' poses (``pose/evaluate.py``, ``say`` hears its
    progress). Returns the table (key, label, scores) and what was evaluated
    (checkpoint, views, test options, and the split's labelled keys without a clip:
    ``coverage_of``)."""
    run = checkpoint.uri.rstrip("/").rsplit("/", 1)[0]
    classes = len(checkpoint.meta["class_names"])
    if isinstance(config, TrainConfig):
        table = _score_clips(config, weights, classes, split, workers=workers, cpus_per_worker=cpus_per_worker,
                             shuffle_seed=seed if shuffle_frames else None)
    else:
        from ..pose.evaluate import score_poses

        table = score_poses(config, weights, classes, split.labels, workers=workers,
                            cpus_per_worker=cpus_per_worker, say=say)
    check_scored(table, split.labels, f"{run} ({config.val_split})")
    what = {"checkpoint": checkpoint.uri, "checkpoint_sha256": checkpoint.identity, "data": config.data,
            "epoch": checkpoint.epoch, "task": config.task, "modality": config.modality,
            "model": config.model, "split": config.val_split, **protocol_of(config),
            "shuffle_frames": shuffle_frames, "seed": seed, **coverage_of(split)}
    return table, what


def _score_clips(config: TrainConfig, weights: dict, classes: int, split: SplitLabels, *, workers: int,
                 cpus_per_worker: int, shuffle_seed: int | None) -> pa.Table:
    """(key, label, scores) of the clips of ``split``, by ScoreClips actors on Ray Data."""
    import ray.data

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    scored = sampled_clips(config, split, train=False).map_batches(
        ScoreClips, fn_constructor_kwargs=dict(weights=ray.put(weights), classes=classes, config=config,
                                               threads=cpus_per_worker, shuffle_seed=shuffle_seed),
        batch_size=config.batch_size, batch_format="numpy", num_cpus=cpus_per_worker, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=workers))
    rows = scored.to_arrow_refs()
    return pa.concat_tables(ray.get(rows)).select(["key", "label", "scores"]).sort_by("key")


def coverage_of(split: SplitLabels) -> dict:
    """metrics.json's coverage of a split: ``labelled`` keys, how many are
    ``without_clip`` and why (``without_clip_why``: cause -> keys)."""
    return {"labelled": split.labelled, "without_clip": len(split.absent), "without_clip_why": split.absent_why()}


def coverage_note(m: dict) -> str:
    """``on 7,063 of 8,521 clips; 1,458 without a clip (1,400 no video, 58 failed unit)``
    from a metrics.json (``clips`` scored); a fusion also names the clips one run alone
    scored."""
    note = f"on {m['clips']:,} of {m['labelled']:,} clips"
    if m["without_clip"]:
        note += f"; {m['without_clip']:,} without a clip (" + ", ".join(
            f"{n:,} {why}" for why, n in m["without_clip_why"].items()) + ")"
    return note


def check_scored(table: pa.Table, labels: dict[str, int], where: str) -> None:
    """Raise RuntimeError unless ``table`` (key, label, scores) holds each clip of
    ``labels`` (the clips that exist) exactly once, with its label, and finite scores. A
    row count alone is not enough: a clip scored twice and a clip not scored cancel out."""
    keys = table.column("key").to_pylist()
    counts = Counter(keys)
    problems = []
    missing = sorted(set(labels) - set(counts))
    if missing:
        problems.append(f"{len(missing)} of {len(labels)} clips are not scored (e.g. {missing[0]})")
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        problems.append(f"{len(twice)} clips are scored twice or more: {', '.join(twice[:5])}")
    extra = sorted(set(counts) - set(labels))
    if extra:
        problems.append(f"{len(extra)} scored clips are not in the split: {', '.join(extra[:5])}")
    wrong = [k for k, y in zip(keys, table.column("label").to_pylist()) if k in labels and labels[k] != y]
    if wrong:
        problems.append(f"{len(wrong)} clips carry another label than the split's: {', '.join(wrong[:5])}")
    scores = table.column("scores").to_numpy(zero_copy_only=False)
    bad = [k for k, s in zip(keys, scores) if not np.isfinite(np.asarray(s, np.float64)).all()]
    if bad:
        problems.append(f"{len(bad)} clips have scores that are not finite (a diverged model?): "
                        f"{', '.join(bad[:5])}")
    if problems:
        raise RuntimeError(f"{where}: " + "; ".join(problems))


def default_fuse_weights(modality: str, other: str) -> tuple[float, float]:
    """TSN's fusion weights for two runs of these modalities (RGB 1, flow 1.5)."""
    return TSN_FUSE_WEIGHTS[modality], TSN_FUSE_WEIGHTS[other]


def _checked_weights(weights: tuple[float, float]) -> tuple[float, float]:
    wa, wb = (float(w) for w in weights)
    if not (np.isfinite(wa) and np.isfinite(wb) and wa > 0 and wb > 0):
        raise InputError(f"fusion weights must be positive numbers, got {wa}, {wb}")
    return wa, wb


def _accuracy(predicted: np.ndarray, truth: np.ndarray, ids: np.ndarray) -> dict:
    """Top-1 and mean class accuracy of ``predicted`` class ids against ``truth``, both
    among the sorted ``ids``."""
    cm = confusion_matrix(np.eye(len(ids))[np.searchsorted(ids, predicted)], np.searchsorted(ids, truth))
    return {"top1": confusion_top1(cm), "mean_class": confusion_mean_class(cm)}


def level_metrics(scores: np.ndarray, labels: np.ndarray, coarse: tuple[int, ...]) -> dict:
    """Top-1 and mean class accuracy one level up (set or event): an element prediction
    counts as right when its set (event) is the true element's. ``coarse``: id per class."""
    coarse = np.asarray(coarse)
    return _accuracy(coarse[scores.argmax(1)], coarse[labels], np.unique(coarse))


def hierarchy_metrics(scores: np.ndarray, labels: np.ndarray, set_of: tuple[int, ...],
                      event_of: tuple[int, ...]) -> dict:
    """Top-1 and mean class accuracy of predictions that keep to the label hierarchy:
    the event whose elements' ``scores`` sum highest, then that event's set whose
    elements' scores sum highest, then that set's best-scoring element. ``set_of`` and
    ``event_of``: each class's set and event id. Keys ``event``, ``set``, ``element``."""
    set_of, event_of = np.asarray(set_of), np.asarray(event_of)
    events, sets = np.unique(event_of), np.unique(set_of)
    event = events[np.stack([scores[:, event_of == e].sum(1) for e in events], 1).argmax(1)]  # (N,)
    set_event = np.array([event_of[set_of == s][0] for s in sets])
    set_scores = np.stack([scores[:, set_of == s].sum(1) for s in sets], 1)  # (N, sets)
    chosen = sets[np.where(set_event[None] == event[:, None], set_scores, -np.inf).argmax(1)]
    element = np.where(set_of[None] == chosen[:, None], scores, -np.inf).argmax(1)
    return {"event": _accuracy(event, event_of[labels], events), "set": _accuracy(chosen, set_of[labels], sets),
            "element": _accuracy(element, labels, np.arange(len(set_of)))}


def metrics_of(scores: np.ndarray, labels: np.ndarray, class_names: list[str],
               levels: dict[str, tuple[int, ...]] | None = None) -> tuple[dict, np.ndarray]:
    """metrics.json content and the confusion matrix. ``levels``: coarser levels of an
    element task (set, event), reported under ``levels`` (left out when there are none)."""
    cm = confusion_matrix(scores, labels)
    per_class = confusion_per_class(cm)
    draws = bootstrap(scores, labels, samples=INTERVAL["samples"], seed=INTERVAL["seed"])
    top1_lo, top1_hi = interval(draws["top1"], INTERVAL["level"])
    mean_class_lo, mean_class_hi = interval(draws["mean_class"], INTERVAL["level"])
    return {"clips": int(len(labels)), "top1": confusion_top1(cm), "mean_class": confusion_mean_class(cm),
            "top1_lo": top1_lo, "top1_hi": top1_hi, "mean_class_lo": mean_class_lo, "mean_class_hi": mean_class_hi,
            "interval": dict(INTERVAL),
            # Element tasks only (set and event accuracy of element predictions): absent
            # for the others rather than an empty mapping that looks like lost results.
            **({"levels": {name: level_metrics(scores, labels, coarse) for name, coarse in levels.items()}}
               if levels else {}),
            **({"hierarchy": hierarchy_metrics(scores, labels, levels["set"], levels["event"])}
               if levels and {"set", "event"} <= levels.keys() else {}),
            "classes_present": int(np.isfinite(per_class).sum()), "num_classes": len(class_names),
            "per_class": [{"class": i, "name": n, "clips": int(cm[i].sum()),
                           "accuracy": None if np.isnan(a) else float(a)}
                          for i, (n, a) in enumerate(zip(class_names, per_class))]}, cm


# confusion.png stays readable up to this many classes; beyond it the most confused
# pairs also go to confused_pairs.csv and the printed output.
PAIRS_ABOVE = 20


def most_confused(cm: np.ndarray, class_names: list[str], top: int | None = 20) -> list[dict]:
    """Off-diagonal cells of the confusion matrix ``cm`` (true, predicted) with clips,
    most clips first (ties: the larger share of the true class first): true and
    predicted class ids and names, clips, and share (a fraction of the true class's
    clips). ``top``: how many (None: all)."""
    rows = cm.sum(1)
    pairs = [(int(cm[t, p]), cm[t, p] / rows[t], t, p) for t, p in zip(*np.nonzero(cm)) if t != p]
    pairs.sort(key=lambda x: (-x[0], -x[1], x[2], x[3]))
    return [{"true": int(t), "true_name": class_names[t], "predicted": int(p), "predicted_name": class_names[p],
             "clips": n, "share": float(share)} for n, share, t, p in pairs[:top]]


def _say_confused(metrics: dict, say: Callable[[str], None]) -> None:
    pairs = metrics.get("most_confused")
    if pairs:
        say("  most confused (true -> predicted: clips, share of the true class; all in confused_pairs.csv):")
        for q in pairs[:10]:
            say(f"    {q['true']} {q['true_name']} -> {q['predicted']} {q['predicted_name']}: {q['clips']}, "
                f"{q['share']:.0%}")


def write_report(out: str, scores: pa.Table, split: SplitLabels, what: dict) -> dict:
    """Metrics and charts of scored clips into ``out``; returns the metrics."""
    s = np.stack(scores.column("scores").to_numpy(zero_copy_only=False)).astype(np.float32)
    y = scores.column("label").to_numpy()
    class_names = list(split.class_names)
    metrics, cm = metrics_of(s, y, class_names, split.levels)
    metrics = {**what, **metrics}
    if len(class_names) > PAIRS_ABOVE:
        pairs = most_confused(cm, class_names, top=None)
        metrics["most_confused"] = pairs[:10]
        table = io.StringIO()
        writer = csv.DictWriter(table,
                                fieldnames=["true", "true_name", "predicted", "predicted_name", "clips", "share"])
        writer.writeheader()
        writer.writerows(pairs)
        storage.write_text(storage.join(out, "confused_pairs.csv"), table.getvalue())
    title = f"{what.get('model', '')} {what.get('modality', '')} {what.get('task', '')}: " \
            f"top-1 {metrics['top1']:.1%}, mean class {metrics['mean_class']:.1%}"
    storage.write_parquet(scores, storage.join(out, "scores.parquet"))
    storage.write_text(storage.join(out, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    storage.write_bytes(storage.join(out, "confusion.png"), confusion_png(cm, title, class_names))
    storage.write_bytes(storage.join(out, "per_class.png"),
                        per_class_png(confusion_per_class(cm), cm.sum(1), class_names, title))
    return metrics


def fuse_scores(a: pa.Table, b: pa.Table, weights: tuple[float, float]) -> pa.Table:
    """Late fusion: the weighted mean of two runs' softmax scores, clip by clip, over the
    clips both scored (two stores may lack different clips: ``fusion_dropped`` counts
    the others), by key; ``weights`` of ``a`` and ``b``, positive
    (``default_fuse_weights``). InputError when they share no clip or label one
    differently."""
    wa, wb = _checked_weights(weights)
    row_a = {k: i for i, k in enumerate(a.column("key").to_pylist())}
    row_b = {k: i for i, k in enumerate(b.column("key").to_pylist())}
    common = sorted(row_a.keys() & row_b.keys())
    if not common:
        raise InputError("the two runs scored no clip in common (another task, split or data?)")
    a = a.take(pa.array([row_a[k] for k in common]))
    b = b.take(pa.array([row_b[k] for k in common]))
    if a.column("label").to_pylist() != b.column("label").to_pylist():
        raise InputError("the two runs label the clips differently (another task?)")
    sa = np.stack(a.column("scores").to_numpy(zero_copy_only=False))
    sb = np.stack(b.column("scores").to_numpy(zero_copy_only=False))
    return a.set_column(a.column_names.index("scores"), "scores", pa.array(list((wa * sa + wb * sb) / (wa + wb))))


def fusion_dropped(a: pa.Table, b: pa.Table) -> tuple[int, int]:
    """How many clips only ``a`` scored, and only ``b``: what ``fuse_scores`` leaves out."""
    ka, kb = set(a.column("key").to_pylist()), set(b.column("key").to_pylist())
    return len(ka - kb), len(kb - ka)


def _figure(m: dict, name: str) -> str:
    """``64.1% [55.5%, 72.7%]``: a metric and its 95 % interval."""
    return f"{m[name]:.1%} [{m[name + '_lo']:.1%}, {m[name + '_hi']:.1%}]"


@dataclass(frozen=True)
class Part:
    """One run of an evaluation, checked on the driver and ready to score: its URI as
    given, checkpoint, test config, whether that is the run's newest checkpoint, where
    its results go, the labels of the validation clips that exist
    (``data.present_split_labels``), and the earlier (scores, metrics) it reuses
    (``reusable_scores``), else the model's weights to score with."""

    uri: str
    checkpoint: checkpoints.Checkpoint
    config: TrainConfig
    newest: bool
    out: str
    split: SplitLabels
    earlier: tuple[pa.Table, dict] | None
    weights: dict | None


@dataclass(frozen=True)
class Plan:
    """An evaluation checked before any Ray work (``plan_evaluation``): ``parts`` by name
    (``run``, and ``other`` when fusing), the test options, and for a fusion its weights
    and folder."""

    parts: dict[str, Part]
    fuse: str | None
    segments: int | None
    shuffle_frames: bool
    seed: int
    variant: str
    fuse_weights: tuple[float, float] | None
    fused_out: str | None


def plan_evaluation(run: str, *, fuse: str | None = None, fuse_weights: tuple[float, float] | None = None,
                    segments: int | None = None, shuffle_frames: bool = False, seed: int = 0,
                    checkpoint: str = "last", data: str | None = None, rescore: bool = False,
                    out: str | None = None, require_complete: bool = False,
                    say: Callable[[str], None] = print) -> Plan:
    """Check everything an evaluation can be refused for, on the driver and before any
    Ray work, and return what ``run_evaluation`` scores (arguments as ``evaluate``'s).

    Both runs are checked before either is scored (a refused ``fuse`` run wastes no
    scoring): their checkpoints, clips and test settings, whether they can be fused,
    with ``require_complete`` whether every labelled validation key has its clip
    (``check_complete``), whether each output folder can be written
    (``check_writable``), then each state.pt
    to be scored, loaded here (``Checkpoint.load_state``): a state that would run code
    is refused with one line rather than in every scoring actor, and the actors get the
    weights this loaded, never the file."""
    variant = variant_name(segments, shuffle_frames, seed)
    tested = {name: (uri, *checkpoint_at_test(uri, segments, say=say, which=checkpoint, data=data))
              for name, uri in (("run", run), ("other", fuse)) if uri is not None}
    if fuse:
        check_fusable(tested["run"][2], tested["other"][2],
                      (tested["run"][1].meta["class_names"], tested["other"][1].meta["class_names"]), (run, fuse))
        fuse_weights = _checked_weights(fuse_weights or default_fuse_weights(tested["run"][2].modality,
                                                                             tested["other"][2].modality))
    if shuffle_frames and any(not isinstance(config, TrainConfig) for _uri, _checkpoint, config in tested.values()):
        raise InputError("--shuffle-frames tests clip models; a pose run is tested as trained")
    splits = {name: validation_labels(config) for name, (_uri, _checkpoint, config) in tested.items()}
    if require_complete:
        for name, (uri, _checkpoint, config) in tested.items():
            check_complete(splits[name], f"{uri} ({config.task}, {config.val_split})")
    parts = {}
    for name, (uri, chosen, config) in tested.items():
        newest = is_newest(chosen)
        root = None if out is None else out if name == "run" else storage.join(out, FUSE_RUN_FOLDER)
        folder = eval_folder(chosen, variant, newest, root)  # join skips '' (the standard protocol)
        split = splits[name]
        want = {"checkpoint_sha256": chosen.identity, "data": config.data, "task": config.task,
                "split": config.val_split, **protocol_of(config), "shuffle_frames": shuffle_frames, "seed": seed,
                "clips": len(split.labels), "labelled": split.labelled}
        earlier = None if rescore else reusable_scores(folder, want, set(split.labels))
        parts[name] = Part(uri, chosen, config, newest, folder, split, earlier, None)
    fused_out = (storage.join(parts["run"].out, fused_folder_name(parts["other"].checkpoint, parts["other"].newest))
                 if fuse else None)
    for folder in [p.out for p in parts.values() if p.earlier is None] + ([fused_out] if fuse else []):
        check_writable(folder)
    for name, part in parts.items():
        if part.earlier is None:
            parts[name] = replace(part, weights=part.checkpoint.load_state()["model"])
    return Plan(parts, fuse, segments, shuffle_frames, seed, variant, fuse_weights, fused_out)


def check_complete(split: SplitLabels, where: str) -> None:
    """The strict protocol (``require_complete``): InputError naming how many of the
    split's labelled keys have no clip, and why, unless every one has."""
    if split.absent:
        causes = ", ".join(f"{n:,} {cause}" for cause, n in split.absent_why().items())
        raise InputError(f"{where}: {len(split.absent):,} of {split.labelled:,} labelled clips have no clip "
                         f"({causes}): --require-complete scores complete splits only (without it, the "
                         f"{len(split.labels):,} clips that exist are scored and the rest reported)")


def run_evaluation(plan: Plan, *, workers: int = 1, cpus_per_worker: int = 1,
                   say: Callable[[str], None] = print) -> dict:
    """Score (or reuse) each run of ``plan`` on Ray, write its report, and the fusion's;
    returns what ``evaluate`` does."""
    results = {}
    tables = {}
    shuffled = f", frames shuffled (seed {plan.seed})" if plan.shuffle_frames else ""
    for name, part in plan.parts.items():
        chosen, config = part.checkpoint, part.config
        if part.earlier is not None:
            table, results[name] = part.earlier
            say(f"{chosen.uri}: reusing the scores in {part.out} (same checkpoint, clips and test settings; "
                f"--rescore scores anew): top-1 {_figure(results[name], 'top1')}, mean class "
                f"{_figure(results[name], 'mean_class')} {coverage_note(results[name])}")
        else:
            table, what = score_run(chosen, config, part.weights, part.split, workers=workers,
                                    cpus_per_worker=cpus_per_worker, shuffle_frames=plan.shuffle_frames,
                                    seed=plan.seed, say=say)
            what["variant"] = plan.variant
            results[name] = write_report(part.out, table, part.split, what)
            say(f"{chosen.uri}: top-1 {_figure(results[name], 'top1')}, mean class "
                f"{_figure(results[name], 'mean_class')} {coverage_note(results[name])} (95 % intervals; "
                f"{what['views']} views x {what['crops']} crops, {what['segments']} segments{shuffled}) "
                f"-> {part.out}")
            _say_confused(results[name], say)
        tables[name] = table
        results[name]["out"] = part.out
    if plan.fuse:
        weights = plan.fuse_weights
        fused = fuse_scores(tables["run"], tables["other"], weights)
        dropped = fusion_dropped(tables["run"], tables["other"])
        split = plan.parts["run"].split  # the fused report's class names and levels
        # segments as asked (None: each run as trained); each run's metrics hold its count.
        what = {"fused": [plan.parts["run"].uri, plan.fuse],
                "fused_checkpoints": [results["run"]["checkpoint"], results["other"]["checkpoint"]],
                "fuse_weights": list(weights),
                "task": results["run"]["task"], "modality": "two-stream", "model": results["run"]["model"],
                "segments": plan.segments, "shuffle_frames": plan.shuffle_frames, "seed": plan.seed,
                "variant": plan.variant, "fuse_dropped": {"run": dropped[0], "other": dropped[1]},
                **fused_coverage(split, fused.num_rows, dropped)}
        results["fused"] = write_report(plan.fused_out, fused, split, what)
        results["fused"]["out"] = plan.fused_out
        say(f"fused (weights {weights[0]:g} : {weights[1]:g}): top-1 {_figure(results['fused'], 'top1')}, "
            f"mean class {_figure(results['fused'], 'mean_class')} {coverage_note(results['fused'])} "
            f"-> {plan.fused_out}")
        if any(dropped):
            say(f"fused the {fused.num_rows:,} clips both runs scored, leaving out {dropped[0]:,} that only "
                f"{plan.parts['run'].uri} scored and {dropped[1]:,} that only {plan.fuse} scored (their clips "
                f"exist in one store only)")
        _say_confused(results["fused"], say)
    return results


# Why a labelled clip is left out of a fusion though the run has it: the other run has not.
SCORED_BY_ONE = "scored by one run only"


def fused_coverage(split: SplitLabels, fused: int, dropped: tuple[int, int]) -> dict:
    """The fusion's metrics.json coverage (``coverage_of``) of the run's ``split``: its
    ``fused`` clips, and as causes of the others the run's own and the clips only the
    run scored (``dropped``, ``fusion_dropped``'s: ``SCORED_BY_ONE``)."""
    coverage = coverage_of(split)
    why = dict(coverage["without_clip_why"], **({SCORED_BY_ONE: dropped[0]} if dropped[0] else {}))
    return {**coverage, "without_clip": split.labelled - fused, "without_clip_why": why}


def evaluate(run: str, *, fuse: str | None = None, fuse_weights: tuple[float, float] | None = None,
             workers: int = 1, cpus_per_worker: int = 1, segments: int | None = None,
             shuffle_frames: bool = False, seed: int = 0, checkpoint: str = "last", data: str | None = None,
             rescore: bool = False, out: str | None = None, require_complete: bool = False,
             say: Callable[[str], None] = print) -> dict:
    """Evaluate ``run`` (and ``fuse`` with it). Returns the metrics of ``run`` and, when
    fusing, ``fused`` (and ``other``) metrics. ``fuse_weights``: of ``run`` and ``fuse``
    in the fusion (None: TSN's, RGB 1 and flow 1.5 by each run's modality).

    ``run`` and ``fuse`` are run folders or checkpoint folders; of a run folder the
    ``checkpoint`` one (``last`` or ``best``) is scored. ``data``: the clips to score
    (default: each run's recorded data), refused unless their preprocessing settings hash
    is the run's. Scores already in the output folder, made from the same checkpoint
    (manifest hash), clips and test settings, are reused unless ``rescore``. ``out``: a
    folder (or s3:// prefix) that takes RUN/eval/'s place, ``fuse``'s own results in
    OUT/fuse_run/ (None: RUN/eval/ and RUN2/eval/).

    Every labelled validation clip that exists is scored; the metrics report how many
    labelled keys have no clip, and why. ``require_complete``: refuse (InputError, before
    any Ray work) when any has none, FineGym's strict protocol.

    Test-time variants (outputs in RUN/eval/<variant_name>/): ``segments`` test segments
    (None: as trained; TRN and clip models refuse another count), ``shuffle_frames``
    permutes each clip's frames, in an order fixed by ``seed`` and the clip's key."""
    plan = plan_evaluation(run, fuse=fuse, fuse_weights=fuse_weights, segments=segments,
                           shuffle_frames=shuffle_frames, seed=seed, checkpoint=checkpoint, data=data,
                           rescore=rescore, out=out, require_complete=require_complete, say=say)
    return run_evaluation(plan, workers=workers, cpus_per_worker=cpus_per_worker, say=say)


def format_results(results: dict) -> str:
    """The metrics table: one row per evaluated run (and the fusion), percentages with
    their 95 % intervals (a percentile bootstrap over the clips), and the clips they are
    on of the split's labelled ones; a line under the table per row whose split has
    labelled keys without a clip says how many and why (``coverage_note``). The test
    column names the variant (``variant_name``; "standard" for the paper's protocol)."""
    def cell(m: dict, name: str) -> str:
        return f"{m[name]:.1%} [{100 * m[name + '_lo']:.1f}, {100 * m[name + '_hi']:.1f}]"

    rows = [(m["checkpoint"].rsplit("/", 2)[-2] if "checkpoint" in m else "two-stream fusion", m)
            for m in results.values()]
    lines = [f"{'run':<44} {'model':<8} {'input':<10} {'test':<20} {'clips of labelled':>17} "
             f"{'mean class [95 %]':>19} {'top-1 [95 %]':>19}"]
    for label, m in rows:
        test = m["variant"] or "standard"
        clips = f"{m['clips']:,} of {m['labelled']:,}"
        lines.append(f"{label[-44:]:<44} {m['model']:<8} {m['modality']:<10} {test[:20]:<20} {clips:>17} "
                     f"{cell(m, 'mean_class'):>19} {cell(m, 'top1'):>19}")
    lines += [f"{label}: mean class and top-1 {coverage_note(m)}" for label, m in rows if m["without_clip"]]
    return "\n".join(lines)
