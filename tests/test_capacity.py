"""A job too big for its cluster is refused before it starts; a stalled stage says what it waits for."""

import os
import subprocess
import sys
import time

import pytest

from finegym_ray.capacity import CapacityError, Need, StallWatchdog, check_capacity, shortfall, sweep_needs, train_needs
from finegym_ray.train.config import TrainConfig
from finegym_ray.tune.config import TrialResources


def test_train_needs_a_cpu_beyond_its_workers_for_ray_data():
    needs = train_needs(TrainConfig(workers=2, cpus_per_worker=1.0), cluster_gpus=0)
    # The repro of the hang: 2 workers on 2 CPUs leave Ray Data none.
    assert shortfall(needs, [{"CPU": 2.0}]) == "3 CPU in all, the cluster has 2 CPU"
    assert shortfall(needs, [{"CPU": 3.0}]) is None
    # Half-CPU workers leave a whole CPU for the input pipeline (the train tests' setup).
    assert shortfall(train_needs(TrainConfig(workers=2, cpus_per_worker=0.5), cluster_gpus=0), [{"CPU": 2.0}]) is None


def test_gpus_are_counted_when_the_cluster_has_them():
    needs = train_needs(TrainConfig(workers=2), cluster_gpus=1.0)
    assert "2 GPU in all, the cluster has 1 GPU" in shortfall(needs, [{"CPU": 8.0, "GPU": 1.0}])
    assert shortfall(train_needs(TrainConfig(workers=2, use_gpu=False), cluster_gpus=1.0),
                     [{"CPU": 8.0, "GPU": 1.0}]) is None


def test_each_bundle_must_fit_on_one_node():
    # 4 CPUs in all, but a 3-CPU worker fits on neither 2-CPU node.
    why = shortfall([Need("train workers", 1, {"CPU": 3.0})], [{"CPU": 2.0}, {"CPU": 2.0}])
    assert "not on its 2 node(s) at once" in why and "the largest node has 2 CPU" in why


def test_check_names_what_is_needed_and_what_the_cluster_has(monkeypatch):
    needs = sweep_needs(TrialResources(workers=2, cpus_per_worker=1.0))
    with pytest.raises(CapacityError) as e:
        check_capacity(needs, what="tune x (one trial)", nodes=[{"CPU": 2.0}])
    message = str(e.value)
    assert message.startswith("tune x (one trial) needs 2 workers per trial x 1 CPU + 1 CPU for trial input: "
                              "3 CPU in all, the cluster has 2 CPU"), message
    assert "\n" not in message
    monkeypatch.setenv("FINEGYM_RAY_CAPACITY_CHECK", "0")  # an autoscaling cluster
    check_capacity(needs, what="tune x", nodes=[{"CPU": 2.0}])


def test_training_too_big_for_the_cluster_is_refused_at_once(ray_cluster, tmp_path):
    from finegym_ray.train.run import run_training

    config = TrainConfig(workers=2, cpus_per_worker=1.0, data=str(tmp_path / "no_store"), runs=str(tmp_path / "runs"))
    t0 = time.monotonic()
    with pytest.raises(CapacityError, match=r"train .* needs 2 train workers x 1 CPU \+ 1 CPU for Ray Data input: "
                                            r"3 CPU in all, the cluster has 2 CPU"):
        run_training(config, say=lambda m: None)
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_preprocess_too_big_for_the_cluster_is_refused(ray_cluster, tiny_gym, tmp_path):
    from finegym_ray.preprocess.config import PreprocessConfig
    from finegym_ray.preprocess.pipeline import run_preprocess

    with pytest.raises(CapacityError, match="preprocess needs 3 CPU for cut actor: 3 CPU in all, the cluster has 2"):
        run_preprocess(PreprocessConfig(short_side=64, cpus_per_worker=3.0), str(tiny_gym / "annotations"),
                       str(tiny_gym / "videos"), str(tmp_path / "out"), say=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_train_cli_on_a_too_small_cluster_exits_2_with_one_line(ray_cluster, tiny_store, tmp_path):
    store, _ = tiny_store
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "train", "--address", ray_cluster.address,
                        "--data", store, "--runs", str(tmp_path / "runs"), "--set", "workers=2"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("finegym-ray: error: train ") and "3 CPU in all, the cluster has 2 CPU" in last, last
    assert "Traceback" not in r.stderr
    assert took < 30, took  # seconds, not the hang of the issue
    assert not (tmp_path / "runs").exists()


def test_watchdog_says_what_a_stalled_stage_waits_for(ray_cluster):
    import ray

    @ray.remote(num_cpus=2)
    class Hog:
        def ready(self):
            return True

    @ray.remote(num_cpus=1)
    def starved():
        return 1

    hog = Hog.remote()
    ray.get(hog.ready.remote(), timeout=60)
    ref = starved.remote()
    lines = []
    try:
        # Raylets report pending requests to the GCS about once a second: the first line
        # may come before the task's request is known; the next ones name it.
        with StallWatchdog("test stage", say=lines.append, stall_s=0.5):
            deadline = time.monotonic() + 20
            while not any("waiting for" in line for line in lines) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert lines and all(line.startswith("test stage: no progress for ") for line in lines), lines
        line = next((line for line in lines if "waiting for" in line), lines)
        assert "waiting for 1 task(s)/actor(s) of {CPU: 1}" in line and "0 of 2 CPUs free" in line, line
    finally:
        ray.cancel(ref, force=True)
        ray.kill(hog)


def test_watchdog_is_quiet_while_progress_comes():
    lines = []
    with StallWatchdog("busy", say=lines.append, stall_s=0.4, describe=lambda: "waiting for x") as dog:
        for _ in range(10):
            dog.progress()
            time.sleep(0.1)
        assert lines == []  # 1 s of work with progress every 0.1 s: no stall
        time.sleep(0.8)  # then nothing
    assert len(lines) >= 1 and all(line.startswith("busy: no progress for ") for line in lines), lines
    assert lines[0].endswith("; waiting for x")


def test_a_sweep_whose_trial_cannot_fit_is_refused(ray_cluster, tmp_path):
    from finegym_ray.tune.config import SweepConfig
    from finegym_ray.tune.sweep import run_sweep

    sweep = SweepConfig(name="big", resources=TrialResources(workers=2, cpus_per_worker=1.0), sweeps=str(tmp_path))
    with pytest.raises(CapacityError, match=r"tune big \(one trial\) needs 2 workers per trial x 1 CPU"):
        run_sweep(sweep, TrainConfig(data=str(tmp_path / "store")), say=lambda m: None)
    assert not (tmp_path / "big").exists()
