"""Preprocessing speed-up from one worker node to two (one CPU each), on real Ray nodes.

    python benchmarks/scale_out.py [--videos 8] [--data DIR]

Starts a cluster with cluster/local.sh (a head without CPUs plus N worker nodes of one
CPU each, separate raylets on this machine), runs the same preprocessing job from a
driver on the head (fresh output each time), stops the cluster; N = 1 then 2. Prints
wall seconds and the speed-up (target >= 1.8x). The head's control plane and the driver
share the machine's cores with the workers, so on a 2-core machine the figure is a
lower bound of what separate machines give.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import ray

from finegym_ray.config import load_config
from finegym_ray.demo import synth_is_current
from finegym_ray.preprocess.config import PreprocessConfig
from finegym_ray.preprocess.pipeline import run_preprocess
from finegym_ray.synth.config import SynthConfig, preset
from finegym_ray.synth.generate import generate

ROOT = Path(__file__).resolve().parents[1]


def run_on_nodes(workers: int, data: str, config: PreprocessConfig) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FINEGYM_RAY_CLUSTER_DIR": f"{tmp}/cluster", "RAY_AUTH_MODE": "disabled"}
        local_sh = ["bash", str(ROOT / "cluster" / "local.sh")]
        subprocess.run([*local_sh, "up", "--workers", str(workers)], env=env, check=True, capture_output=True)
        try:
            ray.init(address=Path(tmp, "cluster", "address").read_text().strip(), configure_logging=False,
                     log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            t0 = time.perf_counter()
            summary = run_preprocess(config, f"{data}/annotations", f"{data}/videos", f"{tmp}/out", say=lambda m: None)
            wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
            subprocess.run([*local_sh, "down"], env=env, check=True, capture_output=True)
    return wall, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8, help="SynGym small-preset videos (default 8)")
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/finegym_ray/scale_out"))
    args = ap.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    synth = load_config(SynthConfig, overrides=[f"videos={args.videos}"], base=preset("small"))
    if not synth_is_current(args.data, synth):
        print(f"generating {args.videos} SynGym videos into {args.data} ...", flush=True)
        print(generate(synth, args.data).describe(), flush=True)
    # Units of ~10 s of clips: enough of them to keep two workers busy to the end.
    config = PreprocessConfig(unit_seconds=10.0)
    walls = {}
    for workers in (1, 2):
        wall, summary = run_on_nodes(workers, args.data, config)
        walls[workers] = wall
        print(f"{workers} worker node(s): {wall:6.1f} s, {summary['units']['done']} units on "
              f"{len(summary['units_per_node'])} node(s), {summary['frames']} frames, "
              f"{summary['video_seconds'] / wall:.2f} clip-seconds/s", flush=True)
    print(f"speed-up 1 -> 2 nodes: {walls[1] / walls[2]:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    main()
