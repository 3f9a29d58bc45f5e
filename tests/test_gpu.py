"""benchmarks/gpu_check.py: its quick checks on CUDA where torch sees a GPU, its CPU dry
run of the model steps with ray, PyAV, decord and boto3 blocked (the GPU machine has
none of them), and its runner's guards."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.test_layers import BLOCK

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# What the GPU machine lacks: importing any of them fails, as it would there.
BLOCK_MISSING = BLOCK.replace("('ray', 'torch')", "('ray', 'av', 'decord', 'boto3', 'botocore')")


def _run_script(args: list[str], out: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    code = BLOCK_MISSING + (
        "import runpy\n"
        f"sys.argv = [{str(SCRIPT)!r}] + {args!r}\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env={**os.environ, "OUT": str(out), "PYTHONPATH": str(ROOT)})
    path = out / "gpu_check.json"
    assert path.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    return r, json.loads(path.read_text())


@pytest.mark.gpu
def test_quick_checks_pass_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False (benchmarks/gpu_check.py needs a GPU)")
    r, results = _run_script(["--device", "cuda", "--quick", "--budget-s", "240"], tmp_path, timeout=400)
    assert results["finished"] and results["loaded_forbidden"] == []
    statuses = {name: rec["status"] for name, rec in results["checks"].items()}
    assert all(s in ("ok", "skipped") for s in statuses.values()), (statuses, r.stdout[-4000:])
    assert results["checks"]["detector"]["status"] == "ok"
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_cpu_dry_run_of_the_model_steps_without_ray_av_decord_boto3(tmp_path):
    t = time.monotonic()
    r, results = _run_script(["--device", "cpu", "--quick", "--only", "env,models,detector"], tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert results["finished"] and results["loaded_forbidden"] == []
    assert list(results["checks"]) == ["env", "models", "detector"]
    assert results["checks"]["detector"]["status"] == "ok", r.stdout[-3000:]
    rows = results["checks"]["models"]["rows"]
    from finegym_ray.models import MODELS
    # Every model, both modalities, plus the layout experiments, each one step that trained.
    assert {(r["model"], r["modality"]) for r in rows} == {(m, mod) for m in MODELS for mod in ("rgb", "flow")}
    for row in rows:
        assert row["ok"] is True, row
        assert row["grads"].split("/")[0] == row["grads"].split("/")[1].split()[0]  # every parameter: finite
        if row["layout"] == "channels_last":  # 2-D models, as the training loop lays them out on a GPU
            assert row["activations_layout"] in ("channels_last", "either"), row
    assert "tsm/rgb" in r.stdout and "models   " in r.stdout  # printed as it went, and the final table
    assert time.monotonic() - t < 120


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_or_hung_check_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    gc = _load_script()

    def broken(run, rec):
        raise RuntimeError("injected failure")

    release = threading.Event()

    def hung(run, rec):
        rec["started"] = True
        release.wait(30)  # a daemon thread: left behind when the check times out

    monkeypatch.setattr(gc, "GRACE_S", 0.2)
    monkeypatch.setitem(gc.FUNCTIONS, "models", broken)
    monkeypatch.setitem(gc.FUNCTIONS, "tsm_r50", hung)
    monkeypatch.setitem(gc.WEIGHTS, "tsm_r50", 0.05)  # a ~1 s share of the 20 s budget
    try:
        code = gc.main(["--device", "cpu", "--quick", "--only", "models,tsm_r50,detector", "--budget-s", "20",
                        "--out", str(tmp_path)])
    finally:
        release.set()
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = results["checks"]
    assert code == 1 and results["finished"]
    assert checks["env"]["status"] == "ok"
    assert checks["models"]["status"] == "error" and "injected failure" in checks["models"]["error"]
    assert checks["tsm_r50"]["status"] == "timeout" and checks["tsm_r50"]["started"]
    assert "release.wait" in checks["tsm_r50"]["error"]  # where it hung
    assert checks["detector"]["status"] == "ok" and checks["detector"]["steps"] >= 1  # the next check ran


def test_tvl1_loads_without_the_video_package_init():
    # finegym_ray/video/__init__.py imports PyAV (decode.py), which the GPU machine lacks.
    code = BLOCK_MISSING + (
        "import runpy\n"
        f"gc = runpy.run_path({str(SCRIPT)!r})\n"
        "module, how = gc['import_video_module']('tvl1')\n"
        "assert hasattr(module, 'TVL1') and how == 'without the package __init__', how\n"
        "assert 'finegym_ray.video' not in sys.modules and 'av' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_device_kit_covers_every_dependency_and_its_scripts_parse():
    # benchmarks/device/build_kit.py bundles for the GPU machine what it lacks: each of
    # pyproject.toml's dependencies must be bundled, on the device or left out on purpose
    # (a new one fails here until build_kit.py says which). The kit's rehearsal itself
    # (benchmarks/device/rehearse.sh, minutes) is too slow for CI.
    path = ROOT / "benchmarks" / "device" / "build_kit.py"
    spec = importlib.util.spec_from_file_location("build_kit_under_test", path)
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    kit.check_against_pyproject()
    for script in ("run_on_device.sh", "rehearse.sh"):
        r = subprocess.run(["bash", "-n", str(path.parent / script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
