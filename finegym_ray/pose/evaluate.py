"""Scoring a pose run's validation sub-actions on Ray, for ``train/evaluate.py``, which
plans, checks, reports and fuses pose runs as it does clip runs.

The protocol (PoseC3D's): ``test_views`` samples of each sub-action, view v taking the
frame at (v + 0.5) / views of each span, and with ``test_flip`` the mirror image of
each too; the softmax scores of them all averaged. The keys are cut into chunks, a
video's keys together (a video's poses are one shard), each scored by a Ray task that
reads its own poses; the model's weights reach the tasks through the object store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import groupby

import numpy as np
import pyarrow as pa

from ..dataset.keys import parse_instance_key
from .config import PoseConfig
from .data import pose_sample

CHUNKS_PER_WORKER = 4  # chunks per scoring task slot: for the progress lines, and a fair share


def protocol_of(config: PoseConfig) -> dict:
    """What metrics.json records of the protocol: ``views``, ``crops`` (1, or 2 with the
    mirror image) and ``segments`` (the sampled frames)."""
    return {"views": config.test_views, "crops": 2 if config.test_flip else 1, "segments": config.frames}


def score_keys(weights, config: PoseConfig, num_classes: int, labels: dict[str, int], threads: int) -> dict:
    """Scores of the keys of ``labels`` by the model of ``config`` with ``weights`` (its
    state dict; a Ray task gets it from the ObjectRef it was called with): ``key``,
    ``label``, ``scores`` (N, K) float32, softmax averaged over the test samples."""
    import torch

    from ..train import steps
    from .train import build_pose_model, read_items

    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_pose_model(config, num_classes)
    model.load_state_dict(weights)
    model = model.eval().to(device)
    autocast = steps.autocast_for(device, config.bf16)
    protocol = protocol_of(config)
    keys, ys, scores = [], [], []
    for record, y in read_items(config.data, labels):
        x = np.stack([pose_sample(record, config, view=view, views=protocol["views"], mirror=mirror)
                      for view in range(protocol["views"]) for mirror in (False, True)[:protocol["crops"]]])
        logits = steps.eval_scores(model, torch.from_numpy(x).to(device), autocast=autocast)
        keys.append(record.key)
        ys.append(y)
        scores.append(logits.softmax(-1).mean(0).cpu().numpy())
    return {"key": keys, "label": ys, "scores": scores}


def chunks(keys: list[str], count: int) -> list[list[str]]:
    """``keys`` in key order, cut into runs of about len(keys) / ``count`` keys (more
    runs where a video's keys would overflow one), never splitting a video's keys."""
    videos = [list(group) for _, group in groupby(sorted(keys), key=lambda k: parse_instance_key(k).video_id)]
    size = -(-len(keys) // max(count, 1))
    out: list[list[str]] = [[]]
    for video in videos:
        if out[-1] and len(out[-1]) + len(video) > size:
            out.append([])
        out[-1].extend(video)
    return [c for c in out if c]


def score_poses(config: PoseConfig, weights: dict, num_classes: int, labels: dict[str, int], *, workers: int = 1,
                cpus_per_worker: int = 1, say: Callable[[str], None] | None = None) -> pa.Table:
    """(key, label, scores) of the keys of ``labels`` (those with poses), scored with the
    model ``weights`` in at most ``workers`` Ray tasks at once (``cpus_per_worker`` CPUs
    each, a GPU each where the cluster has one); ``say`` hears the progress."""
    import ray

    from .. import progress

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(score_keys).options(num_cpus=cpus_per_worker, num_gpus=gpus)
    ref = ray.put(weights)
    todo = chunks(list(labels), workers * CHUNKS_PER_WORKER)
    pending, parts, done, t0 = [], [], 0, time.time()
    ticker = progress.Ticker(30.0)
    while todo or pending:
        while todo and len(pending) < workers:
            keys = todo.pop(0)
            pending.append(task.remote(ref, config, num_classes, {k: labels[k] for k in keys}, cpus_per_worker))
        finished, pending = ray.wait(pending, num_returns=1)
        part = ray.get(finished[0])
        parts.append(part)
        done += len(part["key"])
        if say and ticker.due():
            say("scoring poses: " + progress.rate_eta(done, len(labels), time.time() - t0, "sub-actions"))
    return pa.table({"key": [k for p in parts for k in p["key"]], "label": [y for p in parts for y in p["label"]],
                     "scores": [s.astype(np.float32) for p in parts for s in p["scores"]]}).sort_by("key")
