"""Competition-like inputs for the preprocessing benchmarks, generated once and cached.

SynGym's ``competition`` preset: 2 records of ~20 minutes at 1280x720, 10-12 routines
each, spread through the record with 1-2 minutes between them (FineGym's records
average over two hours, so where the routines sit matters to a tool that decodes from
the start of the file).
"""

from __future__ import annotations

import os

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
