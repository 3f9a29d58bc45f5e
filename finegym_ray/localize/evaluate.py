"""Evaluating a detector run: detections on the validation sequences, ActivityNet mAP at
tIoU 0.50:0.05:0.95 (``metric.py``), the paper's Table 4 layout, a timeline PNG.

Writes ``RUN/eval/``: ``metrics.json`` (the metric's JSON plus 95 % bootstrap intervals
over the validation videos, the settings and the counts, among them the validation
sequences of the ground truth that have no features and why: a video never downloaded
is reported, not fatal), ``detections.json``
(ActivityNet's results format, ``formats.write_detections``; sub-action level: seconds
relative to the routine start, as the ground truth) and ``timeline.png``. The feature
files are small, so scoring runs in this process (a GPU when it has one); no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from .. import storage
from ..errors import InputError
from ..train import checkpoint as checkpoints
from .config import LocalizeConfig
from .data import Example, load_examples, steps_to_seconds, video_of
from .metric import TIOU_THRESHOLDS, MapResult, detection_map, table4
from .train import build_detector, prepare, run_uri

TIMELINE_VIDEOS = 4
BOOTSTRAP_SAMPLES = 200


def detect(model, examples: list[Example], class_names: list[str], config: LocalizeConfig, *,
           batch_size: int = 8, device=None) -> dict[str, list[tuple[str, float, float, float]]]:
    """Detections per sequence id: (label, start s, end s, score), best first."""
    import torch

    from .data import collate

    device = device or torch.device("cpu")
    model = model.to(device).eval()
    out: dict[str, list[tuple[str, float, float, float]]] = {}
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            feats, mask, _ = collate(chunk)
            found = model.detect(model(feats.to(device), mask.to(device)), max_detections=config.max_detections,
                                 score_threshold=config.score_threshold, sigma=config.sigma)
            for ex, (segments, scores, labels) in zip(chunk, found):
                seconds = steps_to_seconds(segments.float().cpu().numpy().reshape(-1), ex.centres).reshape(-1, 2)
                out[ex.video_id] = [(class_names[int(lab)], float(s), float(e), float(sc))
                                    for (s, e), sc, lab in zip(seconds, scores.float().cpu().tolist(),
                                                               labels.cpu().tolist()) if e > s]
    return out


def bootstrap_map(ground_truth: dict, detections: dict, *, groups: dict[str, str] | None = None,
                  samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, list]:
    """95 % percentile intervals of the mAP per threshold and of the average, resampling
    with replacement the groups of sequences (``groups``: sequence id -> its group, the
    video; None: each sequence its own), a group drawn twice counting twice. Sequences of
    one video (a video's routines) share its athletes and camera: resampled one by one,
    they would make the interval narrower than the videos warrant."""
    groups = groups or {k: k for k in ground_truth}
    members: dict[str, list[str]] = {}
    for k in sorted(ground_truth):
        members.setdefault(groups[k], []).append(k)
    names = sorted(members)
    rng = np.random.default_rng(seed)
    maps, averages = [], []
    for _ in range(samples):
        pick = rng.integers(0, len(names), len(names))
        gt, det = {}, {}
        for n, i in enumerate(pick):
            for k in members[names[i]]:
                gt[f"{k}#{n}"] = ground_truth[k]
                det[f"{k}#{n}"] = detections.get(k, [])
        if not any(gt.values()):
            continue  # no ground truth drawn: no mAP to take
        result = detection_map(gt, det)
        maps.append(result.map)
        averages.append(result.average_map)
    if not maps:
        return {"map": [], "average_map": []}
    lo, hi = np.percentile(np.array(maps), [2.5, 97.5], axis=0)
    alo, ahi = np.percentile(np.array(averages), [2.5, 97.5])
    return {"map": [[float(a), float(b)] for a, b in zip(lo, hi)], "average_map": [float(alo), float(ahi)]}


def evaluate_run(config: LocalizeConfig, *, say: Callable[[str], None] = print) -> dict:
    """Score the newest checkpoint of ``config``'s run on its validation sequences and
    write RUN/eval/ (see the module docstring). Returns ``result`` (MapResult),
    ``intervals``, ``metrics`` (what metrics.json holds) and ``outputs`` (name -> URI).
    Raises ValueError when the run has no checkpoint or was trained on other features."""
    import torch

    from ..charts import timeline_png

    uri = run_uri(config)
    checkpoint = checkpoints.find_latest(uri, say=say, verify_state=True)
    if checkpoint is None:
        raise InputError(f"{uri}: no complete checkpoint to evaluate (train it first: finegym-ray localize train)")
    data = prepare(config, say=say)
    if checkpoint.meta.get("class_names") != data.class_names or checkpoint.meta.get("data_hash") != data.settings_hash:
        raise InputError(f"{checkpoint.uri} was trained on features with settings hash "
                         f"{checkpoint.meta.get('data_hash')} and classes {checkpoint.meta.get('class_names')}; "
                         f"{config.features} holds hash {data.settings_hash}, classes {data.class_names}")
    if not data.val:
        raise InputError(f"{config.features}: no validation sequence (val_fraction {config.val_fraction})")
    from .train import checkpoint_config

    trained = checkpoint_config(checkpoint)
    model = build_detector(trained, in_channels=data.feature_dim, num_classes=len(data.class_names))
    model.load_state_dict(checkpoint.load_state()["model"])
    examples = load_examples(data.val, data.ground_truth, data.class_names, config.task)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    detections = detect(model, examples, data.class_names, config, device=device)
    ground_truth = {ex.video_id: data.ground_truth[ex.video_id] for ex in examples}
    result = detection_map(ground_truth, detections, TIOU_THRESHOLDS)
    groups = {k: video_of(k, config.level) for k in ground_truth}
    intervals = bootstrap_map(ground_truth, detections, groups=groups, seed=config.seed)

    out = storage.join(uri, "eval")
    metrics = {**result.to_json(), "interval_95": intervals,
               "checkpoint": checkpoint.uri, "epoch": checkpoint.epoch, "level": config.level, "task": config.task,
               "videos": len(examples), "val_videos": len(set(groups.values())),
               "labelled": len(examples) + len(data.missing.get("val", {})),
               "without_features": len(data.missing.get("val", {})), "without_features_why": data.missing_why("val"),
               "segments": sum(len(v) for v in ground_truth.values()),
               "detections": sum(len(v) for v in detections.values()),
               "inference": {"score_threshold": config.score_threshold, "sigma": config.sigma,
                             "max_detections": config.max_detections}}
    outputs = {"metrics": storage.join(out, "metrics.json"), "detections": storage.join(out, "detections.json"),
               "timeline": storage.join(out, "timeline.png")}
    from .formats import write_detections

    write_detections(outputs["detections"], detections)
    shown = sorted(ground_truth)[:TIMELINE_VIDEOS]
    spans = {v: _span(ex) for ex in examples if (v := ex.video_id) in shown}
    storage.write_bytes(outputs["timeline"], timeline_png(
        {v: ground_truth[v] for v in shown}, {v: detections.get(v, []) for v in shown}, spans,
        class_names=data.class_names,
        title=f"{config.run_name}: true segments (top), detected (below; bar height = score)"))
    storage.write_text(outputs["metrics"], json.dumps(metrics, indent=1) + "\n")
    say(f"{len(examples)} val sequences, {metrics['segments']} true segments, {metrics['detections']} detections"
        + (f" ({coverage_note(metrics)})" if metrics["without_features"] else "") + f"; wrote {out}/")
    return {"result": result, "intervals": intervals, "metrics": metrics, "outputs": outputs,
            "run": uri, "level": config.level}


def coverage_note(metrics: dict) -> str:
    """``on 9 of 10 val sequences; 1 without features (1 no video)`` from a metrics.json."""
    note = f"on {metrics['videos']} of {metrics['labelled']} val sequences"
    if metrics["without_features"]:
        note += f"; {metrics['without_features']} without features (" + ", ".join(
            f"{n} {why}" for why, n in metrics["without_features_why"].items()) + ")"
    return note


def _span(ex: Example) -> tuple[float, float]:
    if len(ex.centres) == 0:
        return 0.0, 1.0
    start, end = steps_to_seconds(np.array([0.0, float(len(ex.centres))]), ex.centres)
    return float(start), float(end)


def format_results(results: dict) -> str:
    """Table 4's layout (mAP in percent) and the 95 % interval of the average."""
    result: MapResult = results["result"]
    lines = [f"{results['level']} localization, {results['run']}", table4(result)]
    avg = results["intervals"].get("average_map")
    if avg:
        lines.append(f"average mAP {100 * result.average_map:.1f} %, 95 % interval [{100 * avg[0]:.1f}, "
                     f"{100 * avg[1]:.1f}] (bootstrap over the {_over(results['metrics'])})")
    if results["metrics"].get("without_features"):
        lines.append(f"mAP {coverage_note(results['metrics'])}")
    lines += [f"{name + ':':<12}{loc}" for name, loc in results["outputs"].items()]
    return "\n".join(lines)


def _over(metrics: dict) -> str:
    videos, sequences = metrics.get("val_videos", metrics["videos"]), metrics["videos"]
    return f"{videos} val videos" + (f", {sequences} sequences" if sequences != videos else "")
