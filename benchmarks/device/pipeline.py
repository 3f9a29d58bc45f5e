"""The pipeline with Ray on the lent GPU machine, one step after another, each a
``finegym-ray`` command joining one local Ray head that this script starts (all CPUs,
the GPU), with its exit status, seconds and last lines in one JSON file:

1. ``demo``: SynGym made there, preprocessing with ``flow=tvl1`` (flow actors on the
   GPU), TSM on flow trained on Ray Train on the GPU (bf16, channels-last), evaluated;
2. ``poses``: the demo's poses imported, the PoseC3D-style model on keypoint heatmaps
   trained on the GPU with ``input_workers`` processes drawing them, evaluated; its
   per-epoch input wait (does the GPU step wait for heatmaps?) in the JSON;
3. ``tune``: a 4-trial ASHA sweep of the demo's training, a quarter GPU per trial;
4. ``localize``: snippet features with the demo run's backbone on the GPU, the detector
   trained on them and scored (``localize demo``).

    bash benchmarks/device/run_on_device.sh python3 benchmarks/device/pipeline.py --out $OUT/pipeline.json

``--quick``: the small SynGym preset, DIS flow, fewer epochs (the CPU rehearsal here:
``python benchmarks/device/pipeline.py --quick --out /tmp/pipeline.json``). A step that
fails or outlives its limit is recorded and the next one runs; the JSON is written after
every step; exit status 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PORT = "6399"  # the head's GCS port, away from Ray's default


def ray_cli() -> str:
    """The ``ray`` beside this Python (a virtual environment's), else the one on PATH (the kit's)."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", *args]


def run_step(name: str, argv: list[str], results: dict, timeout_s: float) -> bool:
    """Run ``argv`` from the repo root; its record into ``results`` and the results file
    written at once (a call killed at its time limit keeps the steps before)."""
    t0 = time.time()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
        rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"{e.stdout or ''}{e.stderr or ''}"
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
    results["steps"].append({"step": name, "rc": rc, "seconds": round(time.time() - t0, 1),
                             "tail": out.splitlines()[-25:]})
    Path(results["out"]).write_text(json.dumps(results, indent=1) + "\n")
    print(f"{name}: rc {rc} in {time.time() - t0:.0f} s", flush=True)
    return rc == 0


def device() -> dict:
    import torch

    gpu = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name(0) if gpu else None, "cuda": torch.version.cuda,
            "torch": torch.__version__, "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="the JSON file of the results")
    p.add_argument("--quick", action="store_true", help="the CPU rehearsal's sizes")
    p.add_argument("--work", default=None, help="working folder (default: a temp folder)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="finegym_device_"))
    results = {"device": device(), "quick": args.quick, "out": args.out, "steps": []}
    gpu = results["device"]["gpu"] is not None
    address = f"127.0.0.1:{PORT}"
    # A head of this machine only, for this script's commands (the device reaches no
    # network): without Ray's token authentication, which each command would need.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    subprocess.run([ray_cli(), "start", "--head", f"--port={PORT}", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=true",
                    "--disable-usage-stats"], check=True, capture_output=True, cwd=ROOT)
    at = ("--address", address)
    demo, runs = work / "demo", work / "runs"
    store = demo / "store"
    epochs = "2" if args.quick else "6"
    try:
        run_step("demo", command(
            "demo", "--out", str(demo), "--runs", str(runs), *at, "--preset", "small" if args.quick else "demo",
            "--preprocess-set", "flow=dis" if args.quick else "flow=tvl1", "--train-set", f"epochs={epochs}",
            "--train-set", f"use_gpu={str(gpu).lower()}"), results, 420)
        # PoseC3D's own sample (48 frames of 56 x 56 heatmaps) on the GPU; a tiny one on CPUs.
        pose = ["task=set", f"epochs={epochs}", f"use_gpu={str(gpu).lower()}"] + (
            ["input_workers=1", "cpus_per_worker=1", "frames=16", "heatmap_size=32",
             "model_kwargs={base_width: 8, blocks: [1, 1, 1]}"] if args.quick else
            ["input_workers=6", "cpus_per_worker=8"])
        run_step("import-poses", command(
            "import-poses", "--pickle", str(demo / "syngym" / "annotations" / "gym_2d.pkl"), "--out", str(store)),
            results, 300) and run_step("train-poses", command(
                "train-poses", "--config", "configs/pose/posec3d_keypoints_gym99.yaml", "--data", str(store),
                "--runs", str(runs), *at, *[a for o in pose for a in ("--set", o)]), results, 300) \
            and run_step("evaluate-poses", command("evaluate", "--run", str(runs / "posec3d_keypoints_set"), *at),
                         results, 180)
        meta = sorted((runs / "posec3d_keypoints_set").glob("epoch_*/meta.json"))
        if meta:
            history = json.loads(meta[-1].read_text())["history"]
            results["pose_input_wait"] = [{"epoch": m["epoch"] + 1, "data_wait_s": m.get("data_wait_s"),
                                           "epoch_s": m.get("epoch_s")} for m in history]
        sweep = work / "sweep.yaml"
        sweep.write_text(json.dumps({
            "base": str(ROOT / "configs" / "tsm_flow_demo.yaml"),
            "train": {"data": str(store), "runs": str(runs), "epochs": int(epochs), "val_every": 1},
            "space": {"lr": {"grid": [0.001, 0.003, 0.01, 0.03]}}, "metric": "val_mean_class", "mode": "max",
            "scheduler": "asha", "grace_period": 1, "reduction_factor": 2,
            # A trial holds its worker's CPUs and one for its Ray Data input: 4 at once
            # need 12 of the device's 16; on 2 cores, one at a time.
            "max_concurrent_trials": 1 if args.quick else 4,
            "sweeps": str(work / "sweeps"),
            "resources": {"workers": 1, "cpus_per_worker": 1 if args.quick else 2,
                          "gpus_per_worker": 0.25 if gpu else 0}}))
        run_step("tune", command("tune", "--config", str(sweep), *at), results, 420)
        # Its own 64 SynGym videos, features of both levels, two detectors trained to convergence.
        short = ["--set", "epochs=3"] if args.quick else []
        run_step("localize", command("localize", "demo", "--out", str(demo), "--set", f"runs={runs}", *short, *at),
                 results, 600)
    finally:
        subprocess.run([ray_cli(), "stop", "--force"], capture_output=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    failed = [s["step"] for s in results["steps"] if s["rc"] != 0]
    print(f"results -> {args.out}; " + (f"failed: {', '.join(failed)}" if failed else "every step passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
