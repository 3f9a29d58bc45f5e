"""The demo job: every stage that exists, on a synthetic dataset, with Ray.

Stages: generate SynGym (videos rendered as parallel Ray tasks), build the manifest
into the object store, cut the clips with optical flow on Ray Data into the object
store, train a small TSM on Ray Train, evaluate it with the test protocol, and print the
metrics table and where everything went.

The store is the demo's own: ``STORE/demo.yaml`` marks it and records the settings and
the runs the demo made. Its runs live where every command's runs do (``--runs``,
default ``./finegym_runs``), so that ``finegym-ray runs`` and ``evaluate`` find them.
The demo refuses a non-empty store without that mark, and when its settings change it
replaces only what it made (and says what and why): a user's own runs and files are
never touched. demo.yaml is data: a run name in it that is not one plain folder name, a
folder that leads out of its parent through a link, or a run that was not trained on
the demo's store is refused and nothing is deleted. One demo works in a store (and an
OUT folder) at a time: it holds their leases (``lease.py``) from before it deletes
anything to its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from typing import Any

import ray
import yaml

from . import storage
from .config import MAX_YAML_BYTES, changed_settings, parse_recorded_yaml
from .dataset.keys import safe_name
from .dataset.manifest import format_summary
from .errors import InputError
from .lease import LEASE_FILE, writer_lease
from .preprocess.config import PreprocessConfig, config_hash
from .preprocess.pipeline import format_summary as format_preprocess_summary, run_preprocess
from .store import PREPROCESS_OUTPUTS, clips_dir, errors_dir, manifest_dir, recorded_hash, summary_uri
from .synth.config import SynthConfig
from .synth.generate import CONFIG_FILE, generate
from .train.config import TrainConfig, absolute_uri, with_absolute_paths
from .train.evaluate import evaluate
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


MARKER = "demo.yaml"
MADE_BY = "finegym-ray demo"


def read_demo_record(store: str) -> dict | None:
    """The demo's record of ``store`` (settings and run names), None if the demo did not
    make it. Raises ValueError for a non-empty store the demo did not make, and for a
    damaged record (see :func:`_checked_record`)."""
    uri = storage.join(store, MARKER)
    try:
        record = read_yaml(uri)
    except FileNotFoundError:
        record = None
    if isinstance(record, dict) and {"synth", "preprocess", "train"} <= set(record):
        return _checked_record(record, store, uri)
    # A lease alone is a demo's that stopped before it wrote its record.
    if [u for u in storage.list_uris(store) if u != storage.join(store, LEASE_FILE)]:
        raise InputError(f"{store} is not empty and was not made by the demo (no {MARKER} of the demo): "
                         f"give the demo an empty or new --store")
    return None


def read_yaml(uri: str) -> Any:
    """The YAML file at ``uri``, read as data from others is: within
    ``config.parse_yaml``'s bounds. FileNotFoundError when there is none; ValueError
    naming it when it is not YAML (or holds nested aliases that multiply)."""
    try:
        text = storage.read_text(uri, max_bytes=MAX_YAML_BYTES)
    except UnicodeDecodeError:
        raise InputError(f"{uri} is damaged (not UTF-8 text)") from None
    return parse_recorded_yaml(text, uri)


def _checked_record(record: dict, store: str, uri: str) -> dict:
    """``record`` (read from ``uri``), checked. Raises ValueError naming ``uri`` when a
    part is missing or has the wrong type, or a run name is not one plain folder name:
    the names become folders that the demo deletes."""
    train = record["train"]
    if not (isinstance(record["synth"], dict) and isinstance(record["preprocess"], dict)
            and (train is None or isinstance(train, dict))):
        raise InputError(f"{uri} is damaged: its synth and preprocess settings must be mappings, train a mapping "
                         f"or null")
    if not isinstance(record.get("runs"), list):
        raise InputError(f"{uri} is damaged or made by another version: runs must be a list of run names; give "
                         f"the demo an empty or new --store")
    for name in record["runs"]:
        _run_folder(".", name, source=uri)
    return record


def _run_folder(runs: str, name: object, *, source: str) -> str:
    """``RUNS/NAME``; ValueError naming ``source`` (where the name comes from) when
    ``name`` is not one plain folder name, which could lead outside ``runs``."""
    try:
        return safe_name(runs, name)
    except ValueError:
        raise InputError(f"{source}: run name {name!r} is not one plain folder name (no '/', '\\', '..'): "
                         f"the demo deletes nothing outside its store and runs folder") from None


def _refuse_links_out(root: str, uris: list[str]) -> None:
    """ValueError when one of the local ``uris`` leads outside ``root`` (the store or the
    runs folder) through a link (S3 has none): the demo deletes below them."""
    if storage.parse_uri(root).is_s3:
        return
    real_root = os.path.realpath(storage.parse_uri(root).key)
    for uri in uris:
        real = os.path.realpath(storage.parse_uri(uri).key)
        if os.path.commonpath([real_root, real]) != real_root:
            raise InputError(f"{uri} leads outside {root} (a link to {real}): the demo deletes nothing "
                             f"outside its store and runs folder; remove the link")


def _refuse_runs_of_other_data(runs: list[str], store: str) -> None:
    """ValueError when one of ``runs`` (run folders the demo's record names) holds
    anything but a run trained on ``store``: the runs folder is shared with the user's
    own trainings, and the demo deletes only its own."""
    for run in runs:
        if not storage.list_uris(run):
            continue
        config = storage.join(run, "config.yaml")
        try:
            data = read_yaml(config).get("data")
        except (FileNotFoundError, InputError, AttributeError):
            data = None
        if data != store:
            raise InputError(f"{run} was not trained by the demo on its store {store} ({config} "
                             f"{'says data: ' + repr(data) if data else 'is missing or damaged'}): the demo leaves "
                             f"it; remove it, or give the demo another --runs or --train-set name=...")


# What each section of the demo's record was made with where it lacks a setting (one added since).
SECTION_DEFAULTS = {"synth": SynthConfig, "preprocess": PreprocessConfig, "train": TrainConfig}


def _changed(section: str, old: dict | None, new: dict | None) -> list[str]:
    return changed_settings(old, new or {}, asdict(SECTION_DEFAULTS[section]()))


def replace_outdated(store: str, record: dict | None, settings: dict, say: Callable[[str], None], *,
                     runs_folder: str, clips_hash: str | None = None) -> list[str]:
    """Delete what the demo made in ``store`` and ``runs_folder`` that ``settings``
    (synth, preprocess, train) no longer produce, saying what and why; returns the run
    names it keeps. ``clips_hash``: the settings hash the preprocessing settings give
    now; clips recorded with another (made by another finegym-ray version) are replaced
    too. Only the demo's own outputs and recorded runs trained on ``store`` are deleted:
    ValueError, nothing deleted, for a run name or link that leads out, or a recorded
    run that is not the demo's."""
    if record is None:
        return []
    runs = list(record["runs"])
    data_change = [*_changed("synth", record["synth"], settings["synth"]),
                   *_changed("preprocess", record["preprocess"], settings["preprocess"])]
    if not data_change and clips_hash:
        try:
            recorded = recorded_hash(store)
        except InputError:
            recorded = "unreadable"  # the demo's own output, damaged: made again
        if recorded not in (None, clips_hash):
            data_change = [f"clips made by another finegym-ray version (settings hash {recorded} -> {clips_hash})"]
    doomed, doomed_runs = [], []
    if data_change:
        # What preprocessing wrote at the top of the store, and the runs it records by name.
        doomed = [storage.join(store, name) for name in PREPROCESS_OUTPUTS]
        doomed_runs = [_run_folder(runs_folder, r, source=storage.join(store, MARKER)) for r in runs]
        say(f"settings changed ({'; '.join(data_change)}): replacing the clips and runs the demo made "
            f"from the old data: {', '.join(doomed + doomed_runs)}")
        runs = []
    elif settings["train"] and _changed("train", record["train"], settings["train"]):
        name = _run_name(settings["train"])
        if name in runs:
            doomed_runs = [_run_folder(runs_folder, name, source="the demo's train settings")]
            say(f"train settings changed ({'; '.join(_changed('train', record['train'], settings['train']))}): "
                f"replacing the demo's run {doomed_runs[0]}")
            runs.remove(name)
    _refuse_links_out(store, doomed)
    _refuse_links_out(runs_folder, doomed_runs)
    _refuse_runs_of_other_data(doomed_runs, absolute_uri(store))
    for uri in doomed + doomed_runs:
        for item in storage.list_uris(uri):
            storage.delete(item)
        storage.remove_empty_folders(uri)
    return runs


def _run_name(train: dict) -> str:
    return train.get("name") or f"{train.get('model')}_{train.get('modality')}_{train.get('task')}"


def synth_is_current(out: str, config: SynthConfig) -> bool:
    """True if ``out`` holds a complete synthetic dataset made with ``config``."""
    try:
        recorded = read_yaml(os.path.join(out, CONFIG_FILE))
    except FileNotFoundError:
        return False
    return isinstance(recorded, dict) and not changed_settings(recorded, asdict(config), asdict(SynthConfig()))


def make_syngym(folder: str, config: SynthConfig, *, say: Callable[[str], None]) -> None:
    """SynGym of ``config`` in the local ``folder``, its videos rendered as Ray tasks, with
    progress (the rate after every eighth of the videos); a folder that holds exactly that
    already is reused. Both said."""
    from .progress import rate_eta

    if synth_is_current(folder, config):
        say(f"reusing {folder} (same settings)")
        return
    say(f"rendering SynGym into {folder} as Ray tasks ({config.videos} videos; once: a rerun reuses them)")
    t0, every = time.monotonic(), max(1, config.videos // 8)

    def progress(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            say(rate_eta(done, total, time.monotonic() - t0, "videos"))

    say(generate(config, folder, map_fn=lambda fn, *it: ray_map(fn, *it, progress=progress)).describe())


@contextlib.contextmanager
def holding_demo_folders(out: str, store: str, *, break_lease: bool = False,
                         say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the leases of ``out`` (the synthetic data) and ``store`` for the ``with``
    block: a demo, a preprocessing or a training at work there is never changed under
    it. A store the demo did not make is refused first, untouched (ValueError); a folder
    another job holds, with LeaseHeld. ``break_lease``: the operator's word that the
    job holding them is gone."""
    read_demo_record(store)
    with writer_lease(out, what=f"demo --out {out}", break_lease=break_lease, say=say), \
            writer_lease(store, what=f"demo --store {store}", break_lease=break_lease, say=say):
        yield


def connect_ray(address: str | None) -> None:
    """Start or join the demo's Ray and say which: ``address`` (``--address``), else
    ``$RAY_ADDRESS`` (where a submitted job's driver finds its cluster), else a new local
    Ray of its own; never a cluster that ``ray start`` left recorded on this host, which
    a plain ``ray.init()`` would join."""
    from .runtime.connect import init_ray

    # None: init_ray names $RAY_ADDRESS.
    init_ray(address or (None if os.environ.get("RAY_ADDRESS") else "local"),
             local_note=" for this demo (--address joins a running cluster)")


def claim_store(out: str, synth: SynthConfig, store: str | None = None,
                preprocess: PreprocessConfig | None = None, train: TrainConfig | None = None, *,
                runs: str | None = None) -> dict[str, Any]:
    """Make ``store`` (default OUT/store) the demo's before anything runs: refuse a store
    the demo did not make or a damaged record of it (ValueError, nothing touched),
    replace what changed settings made outdated, record the settings. Call it holding
    the folders (:func:`holding_demo_folders`). No Ray needed. Returns the plan
    :func:`run_demo` runs; ``train``'s ``data`` is set to the store and its ``runs`` to
    ``runs`` (None: ``train``'s own; train None: no training)."""
    store = store or os.path.join(out, "store")
    preprocess = preprocess or PreprocessConfig()
    runs_folder = absolute_uri(runs or (train or TrainConfig()).runs)
    if train is not None:
        train = with_absolute_paths(replace(train, data=store, runs=runs_folder))
    record = read_demo_record(store)
    settings = {"synth": asdict(synth), "preprocess": asdict(preprocess), "train": asdict(train) if train else None}
    runs = replace_outdated(store, record, settings, say=lambda m: _say("demo", m), runs_folder=runs_folder,
                            clips_hash=config_hash(preprocess))
    if train is not None and train.run_name not in runs:
        runs.append(train.run_name)
    if record is not None and settings["train"] is None:
        settings["train"] = record["train"]  # --no-train leaves the recorded run's settings as they were
    storage.write_text(storage.join(store, MARKER), yaml.safe_dump(
        {"made_by": MADE_BY, **settings, "runs": runs}, sort_keys=False))
    return {"out": out, "synth": synth, "store": store, "preprocess": preprocess, "train": train}


def run_demo(plan: dict[str, Any]) -> dict[str, Any]:
    """Run the demo pipeline of ``plan`` (from :func:`claim_store`) on the Ray cluster
    this process is connected to. Returns ``outputs`` (name -> location of everything it
    wrote) and ``results`` (evaluate's, None without training)."""
    out, synth, store, preprocess, train = (plan[k] for k in ("out", "synth", "store", "preprocess", "train"))
    data_dir = os.path.join(out, "syngym")
    where = {"annotations": os.path.join(data_dir, "annotations"), "videos": os.path.join(data_dir, "videos"),
             "manifest": manifest_dir(store), "clips": clips_dir(store),
             "errors": errors_dir(store), "summary": summary_uri(store),
             "settings": storage.join(store, MARKER)}
    if train is not None:  # checked before the synthetic data and clips are made
        from .capacity import check_capacity, train_needs

        check_capacity(train_needs(train), what="the demo's training")
    # The same settings make the same videos (SynGym is deterministic per seed): clips
    # the store holds from them stay valid.
    make_syngym(data_dir, synth, say=lambda m: _say("synth", m))
    # Preprocessing writes the manifest too (store/manifest), beside the clips it indexes.
    # prune: shards of an earlier plan in the demo's own store are the demo's.
    cut = run_preprocess(preprocess, where["annotations"], where["videos"], store, prune=True,
                         say=lambda m: _say("preprocess", m))
    _say("manifest", "summary:\n" + format_summary(json.loads(storage.read_text(summary_uri(where["manifest"])))))
    _say("preprocess", "summary:\n" + format_preprocess_summary(cut))
    if train is not None:
        trained = run_training(train, say=lambda m: _say("train", m))
        _say("train", "epochs:\n" + format_history(trained["history"]))
        results = evaluate(trained["run"], say=lambda m: _say("evaluate", m))
        where.update(run=trained["run"], evaluation=storage.join(trained["run"], "eval"))
    if not storage.list_uris(where["errors"]):
        del where["errors"]  # nothing failed: no errors/ was written
    return {"outputs": where, "results": results if train is not None else None}
