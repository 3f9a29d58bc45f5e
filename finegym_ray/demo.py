"""The demo job: every stage that exists, on a synthetic dataset, with Ray.

Stages: generate SynGym (videos rendered as parallel Ray tasks), build the manifest
into the object store, cut the clips with optical flow on Ray Data into the object
store, train a small TSM on Ray Train, evaluate it with the test protocol, and print the
metrics table and where everything went.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Iterable

import ray
import yaml

from . import storage
from .dataset.manifest import format_summary
from .preprocess.config import PreprocessConfig
from .preprocess.pipeline import format_summary as format_preprocess_summary
from .preprocess.pipeline import run_preprocess
from .ray_connect import init_ray
from .synth.config import SynthConfig
from .synth.generate import CONFIG_FILE, generate
from .train.config import TrainConfig
from .train.evaluate import evaluate, format_results
from .train.run import format_history, run_training


def ray_map(fn: Callable[..., Any], *iterables: Iterable[Any],
            progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """Like ``map``, with each call a Ray task; results in input order.

    ``progress(done, total)`` is called as tasks finish.
    """
    task = ray.remote(num_cpus=1)(fn)
    refs = [task.remote(*args) for args in zip(*iterables)]
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # raise a task's error now, not after the others finished
        if progress:
            progress(len(refs) - len(pending), len(refs))
    return ray.get(refs)


def _say(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", flush=True)


def _progress(stage: str, unit: str) -> Callable[[int, int], None]:
    return lambda done, total: _say(stage, f"{done}/{total} {unit}")


def synth_is_current(out: str, config: SynthConfig) -> bool:
    """True if ``out`` holds a complete synthetic dataset made with ``config``."""
    path = os.path.join(out, CONFIG_FILE)
    return os.path.exists(path) and yaml.safe_load(open(path)) == asdict(config)


def run_demo(out: str, synth: SynthConfig, store: str | None = None, ray_address: str | None = None,
             preprocess: PreprocessConfig | None = None, train: TrainConfig | None = None) -> dict[str, str]:
    """Run the demo pipeline; returns name -> location of everything it wrote.

    ``train``: the training settings; its ``data`` and ``runs`` are replaced by the
    demo's store (None: the preprocessing stages only).
    """
    t0 = time.time()
    data_dir = os.path.join(out, "syngym")
    store = store or os.path.join(out, "store")
    preprocess = preprocess or PreprocessConfig()
    storage.write_text(storage.join(store, "demo.yaml"), yaml.safe_dump(
        {"synth": asdict(synth), "preprocess": asdict(preprocess), "train": asdict(train) if train else None},
        sort_keys=False))
    where = {"annotations": os.path.join(data_dir, "annotations"), "videos": os.path.join(data_dir, "videos"),
             "manifest": storage.join(store, "manifest"), "clips": storage.join(store, "clips"),
             "errors": storage.join(store, "errors"), "summary": storage.join(store, "summary.json"),
             "settings": storage.join(store, "demo.yaml")}
    # Worker output reaches the terminal: the training workers print one line per epoch.
    init_ray(ray_address)
    try:
        _say("ray", f"cluster resources: {ray.cluster_resources()}")
        if synth_is_current(data_dir, synth):
            _say("synth", f"reusing {data_dir} (same settings)")
        else:
            summary = generate(synth, data_dir, map_fn=lambda fn, *it: ray_map(fn, *it, progress=_progress("synth", "videos")))
            _say("synth", summary.describe())
            # New videos under the same ids: clips cut from the old ones are stale, and
            # so are models trained on them.
            for folder in ("clips", "errors", "runs"):
                for uri in storage.list_uris(storage.join(store, folder)):
                    storage.delete(uri)
        # Preprocessing writes the manifest too (store/manifest), beside the clips it indexes.
        cut = run_preprocess(preprocess, where["annotations"], where["videos"], store,
                             say=lambda m: _say("preprocess", m))
        _say("manifest", "\n" + format_summary(json.loads(storage.read_text(storage.join(where["manifest"],
                                                                                         "summary.json")))))
        _say("preprocess", "\n" + format_preprocess_summary(cut))
        if train is not None:
            train = replace(train, data=store, runs=storage.join(store, "runs"))
            trained = run_training(train, say=lambda m: _say("train", m))
            _say("train", "\n" + format_history(trained["history"]))
            results = evaluate(trained["run"], say=lambda m: _say("evaluate", m))
            where.update(run=trained["run"], evaluation=storage.join(trained["run"], "eval"))
    finally:
        ray.shutdown()
    if train is not None:
        print(f"\n{format_results(results)}")
    print(f"\ndemo finished in {time.time() - t0:.1f} s. Outputs:")
    for name, loc in where.items():
        print(f"  {name + ':':<13}{loc}")
    return where
