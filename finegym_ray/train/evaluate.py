"""The test-time protocol: score every validation clip of a run with several temporal
views x spatial crops (softmax scores averaged), then the paper's metrics and charts.

Writes, under RUN/eval/: ``scores.parquet`` (key, label, averaged softmax scores),
``metrics.json``, ``confusion.png`` and ``per_class.png``. ``--fuse RUN2`` averages
two runs' scores (RGB + flow = two-stream) into RUN/eval/fused_<RUN2 name>/.

The paper's test-time studies (Sec. 4.4) change the protocol: another number of test
segments (Fig. 6c) or shuffled frame order (Fig. 6b). Their results go to
RUN/eval/<variant>/ (``variant_name``), so the standard evaluation stays as it was.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Callable

import numpy as np
import pyarrow as pa

from .. import storage
from ..charts import confusion_png, per_class_png
from ..metrics import confusion_matrix, confusion_mean_class, confusion_per_class, confusion_top1
from . import checkpoint as checkpoints
from .config import TrainConfig
from .data import SplitLabels, load_split_labels, sampled_clips
from .run import checkpoint_config

# Models whose weights fit one number of segments: TRN's relation MLPs take the features
# of all T segments at once (T * features inputs). TSN and TSM take any (TSM's shift only
# reshapes by it).
FIXED_SEGMENT_MODELS = {"trn", "trn_multiscale"}


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
    and the model. Raises ValueError when the model's weights or input fix the count."""
    if segments is None or segments == config.segments:
        return config
    if segments < 1:
        raise ValueError(f"test segments must be >= 1, got {segments}")
    if config.clip_model:
        raise ValueError(f"{config.model} samples one dense clip whose segments={config.segments} are its frames: "
                         f"it is tested as trained, not with {segments} segments")
    if config.model in FIXED_SEGMENT_MODELS:
        raise ValueError(f"{config.model}'s relation MLPs take the features of all {config.segments} trained "
                         f"segments at once, so its weights do not fit {segments} segments (test it as trained)")
    return replace(config, segments=segments)


def checkpoint_at_test(run: str, segments: int | None = None, *, say: Callable[[str], None] | None = None,
                       verify_state: bool = True) -> tuple[checkpoints.Checkpoint, TrainConfig]:
    """The newest complete checkpoint of ``run`` (``say`` hears of newer ones passed over)
    and the config it is tested with (``config_at_test``). Reads no state.pt unless
    ``verify_state``. Raises FileNotFoundError without a checkpoint."""
    checkpoint = checkpoints.find_latest(run, say=say, verify_state=verify_state)
    if checkpoint is None:
        raise FileNotFoundError(f"{run}: no complete checkpoint (train the run first)")
    return checkpoint, config_at_test(checkpoint_config(checkpoint), segments)


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
    other segments) and loads the checkpoint's weights. ``shuffle_seed``: not None
    permutes each clip's frames (``permute_frames``) before the model sees them."""

    def __init__(self, checkpoint: checkpoints.Checkpoint, config: TrainConfig, threads: int,
                 shuffle_seed: int | None = None):
        import torch

        from .run import model_for

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.config = config
        self.shuffle_seed = shuffle_seed
        model = model_for(config, len(checkpoint.meta["class_names"]), pretrained=False)
        model.load_state_dict(checkpoint.load_state()["model"])
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


def score_run(checkpoint: checkpoints.Checkpoint, config: TrainConfig, *, workers: int = 1,
              cpus_per_worker: int = 1, shuffle_frames: bool = False,
              seed: int = 0) -> tuple[pa.Table, SplitLabels, dict]:
    """Score the validation split with ``checkpoint`` and ``config`` (``checkpoint_at_test``:
    sampling and model take its segments). Returns the table (key, label, scores), the
    split's labels, and what was evaluated (checkpoint, views, test options)."""
    import ray.data

    run = checkpoint.uri.rstrip("/").rsplit("/", 1)[0]
    split = load_split_labels(config.data, config.task, config.val_split)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    scored = sampled_clips(config, split, train=False).map_batches(
        ScoreClips, fn_constructor_kwargs=dict(checkpoint=checkpoint, config=config, threads=cpus_per_worker,
                                               shuffle_seed=seed if shuffle_frames else None),
        batch_size=config.batch_size, batch_format="numpy", num_cpus=cpus_per_worker, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=workers))
    rows = scored.to_arrow_refs()
    table = pa.concat_tables(ray.get(rows)).select(["key", "label", "scores"]).sort_by("key")
    if table.num_rows != len(split.labels):
        missing = len(split.labels) - table.num_rows
        raise RuntimeError(f"{run}: {missing} of {len(split.labels)} labelled {config.val_split} clips "
                           f"have no shard (see the preprocessing errors/)")
    what = {"checkpoint": checkpoint.uri, "epoch": checkpoint.epoch, "task": config.task, "modality": config.modality,
            "model": config.model, "split": config.val_split, "views": config.test_views,
            "crops": config.test_crops, "segments": config.segments, "shuffle_frames": shuffle_frames,
            "seed": seed}
    return table, split, what


def level_metrics(scores: np.ndarray, labels: np.ndarray, coarse: tuple[int, ...]) -> dict:
    """Top-1 and mean class accuracy one level up (set or event): an element prediction
    counts as right when its set (event) is the true element's. ``coarse``: id per class."""
    ids = sorted(set(coarse))
    index = np.array([ids.index(c) for c in coarse])
    onehot = np.eye(len(ids))[index[scores.argmax(1)]]  # the predicted coarse class, as scores
    cm = confusion_matrix(onehot, index[labels])
    return {"top1": confusion_top1(cm), "mean_class": confusion_mean_class(cm)}


def metrics_of(scores: np.ndarray, labels: np.ndarray, class_names: list[str],
               levels: dict[str, tuple[int, ...]] | None = None) -> tuple[dict, np.ndarray]:
    """metrics.json content and the confusion matrix. ``levels``: coarser levels of an
    element task (set, event), reported under ``levels``."""
    cm = confusion_matrix(scores, labels)
    per_class = confusion_per_class(cm)
    return {"clips": int(len(labels)), "top1": confusion_top1(cm), "mean_class": confusion_mean_class(cm),
            "levels": {name: level_metrics(scores, labels, coarse) for name, coarse in (levels or {}).items()},
            "classes_present": int(np.isfinite(per_class).sum()), "num_classes": len(class_names),
            "per_class": [{"class": i, "name": n, "clips": int(cm[i].sum()),
                           "accuracy": None if np.isnan(a) else float(a)}
                          for i, (n, a) in enumerate(zip(class_names, per_class))]}, cm


def write_report(out: str, scores: pa.Table, split: SplitLabels, what: dict) -> dict:
    """Metrics and charts of scored clips into ``out``; returns the metrics."""
    s = np.stack(scores.column("scores").to_numpy(zero_copy_only=False)).astype(np.float32)
    y = scores.column("label").to_numpy()
    class_names = list(split.class_names)
    metrics, cm = metrics_of(s, y, class_names, split.levels)
    metrics = {**what, **metrics}
    title = f"{what.get('model', '')} {what.get('modality', '')} {what.get('task', '')}: " \
            f"top-1 {metrics['top1']:.1%}, mean class {metrics['mean_class']:.1%}"
    storage.write_parquet(scores, storage.join(out, "scores.parquet"))
    storage.write_text(storage.join(out, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    storage.write_bytes(storage.join(out, "confusion.png"), confusion_png(cm, title))
    storage.write_bytes(storage.join(out, "per_class.png"),
                        per_class_png(confusion_per_class(cm), cm.sum(1), class_names, title))
    return metrics


def fuse_scores(a: pa.Table, b: pa.Table) -> pa.Table:
    """Late fusion: the mean of two runs' softmax scores, clip by clip (same keys, labels)."""
    if a.column("key").to_pylist() != b.column("key").to_pylist():
        raise ValueError("the two runs did not score the same clips (another task, split or data?)")
    if a.column("label").to_pylist() != b.column("label").to_pylist():
        raise ValueError("the two runs label the clips differently (another task?)")
    sa = np.stack(a.column("scores").to_numpy(zero_copy_only=False))
    sb = np.stack(b.column("scores").to_numpy(zero_copy_only=False))
    return a.set_column(2, "scores", pa.array(list((sa + sb) / 2)))


def evaluate(run: str, *, fuse: str | None = None, workers: int = 1, cpus_per_worker: int = 1,
             segments: int | None = None, shuffle_frames: bool = False, seed: int = 0,
             say: Callable[[str], None] = print) -> dict:
    """Evaluate ``run`` (and ``fuse`` with it). Returns the metrics of ``run`` and, when
    fusing, ``fused`` (and ``other``) metrics.

    Test-time variants (outputs in RUN/eval/<variant_name>/): ``segments`` test segments
    (None: as trained; TRN and clip models refuse another count), ``shuffle_frames``
    permutes each clip's frames, in an order fixed by ``seed`` and the clip's key."""
    variant = variant_name(segments, shuffle_frames, seed)
    # Every run is checked before any is scored: a refused fuse run wastes no scoring.
    tested = {name: (uri, *checkpoint_at_test(uri, segments, say=say))
              for name, uri in (("run", run), ("other", fuse)) if uri is not None}
    results = {}
    tables = {}
    for name, (uri, checkpoint, config) in tested.items():
        table, split, what = score_run(checkpoint, config, workers=workers, cpus_per_worker=cpus_per_worker,
                                       shuffle_frames=shuffle_frames, seed=seed)
        what["variant"] = variant
        out = storage.join(uri, "eval", variant)  # join skips '' (the standard protocol)
        results[name] = write_report(out, table, split, what)
        tables[name] = table
        shuffled = f", frames shuffled (seed {seed})" if shuffle_frames else ""
        say(f"{uri}: top-1 {results[name]['top1']:.1%}, mean class {results[name]['mean_class']:.1%} "
            f"({table.num_rows} clips, {what['views']} views x {what['crops']} crops, "
            f"{what['segments']} segments{shuffled}) -> {out}")
    if fuse:
        fused = fuse_scores(tables["run"], tables["other"])
        out = storage.join(run, "eval", variant, "fused_" + fuse.rstrip("/").rsplit("/", 1)[-1])
        # segments as asked (None: each run as trained); each run's metrics hold its count.
        what = {"fused": [run, fuse], "task": results["run"]["task"], "modality": "two-stream",
                "model": results["run"]["model"], "segments": segments, "shuffle_frames": shuffle_frames,
                "seed": seed, "variant": variant}
        results["fused"] = write_report(out, fused, split, what)
        say(f"fused: top-1 {results['fused']['top1']:.1%}, mean class {results['fused']['mean_class']:.1%} -> {out}")
    return results


def format_results(results: dict) -> str:
    """The metrics table: one row per evaluated run (and the fusion), percentages. The
    test column names the variant (``variant_name``; "standard" for the paper's protocol)."""
    lines = [f"{'run':<44} {'model':<8} {'input':<10} {'test':<20} {'clips':>6} {'mean class':>11} {'top-1':>7}"]
    for name, m in results.items():
        label = m["checkpoint"].rsplit("/", 2)[-2] if "checkpoint" in m else "two-stream fusion"
        test = m.get("variant") or "standard"  # metrics.json written before variants has none
        lines.append(f"{label[-44:]:<44} {m['model']:<8} {m['modality']:<10} {test[:20]:<20} {m['clips']:>6} "
                     f"{m['mean_class']:>10.1%} {m['top1']:>7.1%}")
    return "\n".join(lines)
