"""The test-time protocol: score every validation clip of a run with several temporal
views x spatial crops (softmax scores averaged), then the paper's metrics and charts.

Writes, under RUN/eval/: ``scores.parquet`` (key, label, averaged softmax scores),
``metrics.json``, ``confusion.png`` and ``per_class.png``. ``--fuse RUN2`` averages
two runs' scores (RGB + flow = two-stream) into RUN/eval/fused_<RUN2 name>/.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pyarrow as pa

from .. import storage
from ..charts import confusion_png, per_class_png
from ..metrics import confusion_matrix, confusion_mean_class, confusion_per_class, confusion_top1
from . import checkpoint as checkpoints
from .data import SplitLabels, load_split_labels, sampled_clips
from .run import checkpoint_config


class ScoreClips:
    """``map_batches`` actor: samples with views (``x``: (N, V, T, C, H, W)) -> ``scores``
    (N, K) float32, softmax averaged over the V views. Keeps ``key`` and ``label``."""

    def __init__(self, checkpoint: checkpoints.Checkpoint, threads: int):
        import torch

        from .run import load_checkpoint_model

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, self.config, _ = load_checkpoint_model(checkpoint)
        self.model = model.to(self.device)

    def __call__(self, batch: dict) -> dict:
        import torch

        from .loop import model_input

        x = torch.from_numpy(np.array(batch["x"])).to(self.device)
        n, v = x.shape[:2]
        bound = torch.from_numpy(np.array(batch["flow_bound"])).repeat_interleave(v)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(model_input(x.flatten(0, 1), bound, self.config)).float()
        scores = logits.softmax(-1).view(n, v, -1).mean(1)
        return {"key": batch["key"], "label": batch["label"], "scores": scores.cpu().numpy()}


def score_run(run: str, *, workers: int = 1, cpus_per_worker: int = 1,
              say: Callable[[str], None] | None = None) -> tuple[pa.Table, SplitLabels, dict]:
    """Score the validation split of ``run``'s newest complete checkpoint (``say`` hears
    of newer ones passed over). Returns the table (key, label, scores), the split's
    labels, and what was evaluated (checkpoint, views)."""
    import ray.data

    checkpoint = checkpoints.find_latest(run, say=say, verify_state=True)
    if checkpoint is None:
        raise FileNotFoundError(f"{run}: no complete checkpoint (train the run first)")
    config = checkpoint_config(checkpoint)
    split = load_split_labels(config.data, config.task, config.val_split)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    scored = sampled_clips(config, split, train=False).map_batches(
        ScoreClips, fn_constructor_kwargs=dict(checkpoint=checkpoint, threads=cpus_per_worker),
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
            "crops": config.test_crops}
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
             say: Callable[[str], None] = print) -> dict:
    """Evaluate ``run`` (and ``fuse`` with it). Returns the metrics of ``run`` and, when
    fusing, ``fused`` (and ``other``) metrics."""
    results = {}
    tables = {}
    for name, uri in (("run", run), ("other", fuse)):
        if uri is None:
            continue
        table, split, what = score_run(uri, workers=workers, cpus_per_worker=cpus_per_worker, say=say)
        out = storage.join(uri, "eval")
        results[name] = write_report(out, table, split, what)
        tables[name] = table
        say(f"{uri}: top-1 {results[name]['top1']:.1%}, mean class {results[name]['mean_class']:.1%} "
            f"({table.num_rows} clips, {what['views']} views x {what['crops']} crops) -> {out}")
    if fuse:
        fused = fuse_scores(tables["run"], tables["other"])
        out = storage.join(run, "eval", "fused_" + fuse.rstrip("/").rsplit("/", 1)[-1])
        what = {"fused": [run, fuse], "task": results["run"]["task"], "modality": "two-stream",
                "model": results["run"]["model"]}
        results["fused"] = write_report(out, fused, split, what)
        say(f"fused: top-1 {results['fused']['top1']:.1%}, mean class {results['fused']['mean_class']:.1%} -> {out}")
    return results


def format_results(results: dict) -> str:
    """The metrics table: one row per evaluated run (and the fusion), percentages."""
    lines = [f"{'run':<44} {'model':<8} {'input':<10} {'clips':>6} {'mean class':>11} {'top-1':>7}"]
    for name, m in results.items():
        label = m["checkpoint"].rsplit("/", 2)[-2] if "checkpoint" in m else "two-stream fusion"
        lines.append(f"{label[-44:]:<44} {m['model']:<8} {m['modality']:<10} {m['clips']:>6} "
                     f"{m['mean_class']:>10.1%} {m['top1']:>7.1%}")
    return "\n".join(lines)
