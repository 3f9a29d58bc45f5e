"""Competition-like inputs for the preprocessing benchmarks, generated once and cached.

SynGym's ``competition`` preset: 2 records of ~20 minutes at 1280x720, 10-12 routines
each, spread through the record with 1-2 minutes between them (FineGym's records
average over two hours, so where the routines sit matters to a tool that decodes from
the start of the file).
"""

from __future__ import annotations

import contextlib
import os
import threading

from finegym_ray.dataset.manifest import Manifest, build_manifest_from
from finegym_ray.demo import synth_is_current
from finegym_ray.synth.config import preset
from finegym_ray.synth.generate import generate

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "finegym_ray", "competition")


def competition_data(folder: str = DEFAULT_DIR) -> tuple[str, str, Manifest]:
    """(annotation folder, video folder, manifest) of the competition preset in ``folder``,
    generating it first if it is missing or made with other settings (~10 min on 2 cores)."""
    config = preset("competition")
    if not synth_is_current(folder, config):
        print(f"generating the competition preset into {folder} (once; takes minutes) ...", flush=True)
        print(generate(config, folder).describe(), flush=True)
    annotations = os.path.join(folder, "annotations")
    return annotations, os.path.join(folder, "videos"), build_manifest_from(annotations)


def pin_to_one_core() -> int:
    """Restrict this process (and every process it starts, Ray's included) to one CPU;
    returns that CPU's number."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


@contextlib.contextmanager
def keep_on_cpu(prefix: str, cpu: int, poll_s: float = 0.02):
    """While the block runs, move every process whose command line starts with
    ``prefix`` (all its threads) to CPU ``cpu`` as soon as it appears (within ``poll_s``
    seconds). Used to give a Ray worker a core of its own while Ray's services, started
    from a process pinned elsewhere, stay on the other cores."""
    done = threading.Event()
    pinned: set[int] = set()

    def watch() -> None:
        while not done.wait(poll_s):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if not f.read().startswith(prefix.encode()):
                            continue
                    for tid in os.listdir(f"/proc/{pid}/task"):  # threads keep their own CPU set
                        if int(tid) not in pinned:
                            os.sched_setaffinity(int(tid), {cpu})
                            pinned.add(int(tid))
                except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
                    continue

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
