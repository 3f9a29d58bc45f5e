"""Does Ray really run from the device kit? A local Ray started through finegym_ray's
``init_ray``, a two-step Ray Data map, the State API (the dashboard process that ASHA's
placement group cleaner asks), a one-worker TorchTrainer step through
``finegym_ray.train.engine.torch_trainer`` (on the GPU where torch sees one) and a two-trial
Tune sweep with ASHA. Exit status 0 when all pass; prints one line per step with its time.

    bash benchmarks/device/run_on_device.sh python3 benchmarks/device/smoke_ray.py [--no-tune]

Runs without the kit too, wherever finegym_ray's requirements are installed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _train_fn(config: dict) -> None:
    import ray.train
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 8, device=device)
    y = torch.randint(0, 2, (16,), device=device)
    losses = []
    for _ in range(config["steps"]):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Train v2 keeps the metrics of reports that carry a checkpoint: one through the
    # run's storage, as a real run's would be.
    with tempfile.TemporaryDirectory() as d:
        torch.save(model.state_dict(), os.path.join(d, "model.pt"))
        ray.train.report({"loss": losses[-1], "first_loss": losses[0], "device": str(device)},
                         checkpoint=ray.train.Checkpoint.from_directory(d))


def _trial(config: dict) -> None:
    from ray import tune

    for step in range(3):
        tune.report({"score": config["x"] * (step + 1), "step": step})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-tune", action="store_true", help="skip the Tune sweep")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all, at least 2)")
    args = p.parse_args(argv)
    t0 = time.monotonic()

    def step(name: str, t: float) -> None:
        print(f"[smoke] {name}: ok ({time.monotonic() - t:.1f} s)", flush=True)

    import ray
    import torch

    from finegym_ray.runtime.connect import init_ray

    t = time.monotonic()
    cpus = args.cpus or max(2, os.cpu_count() or 2)
    gpus = torch.cuda.device_count()
    init_ray(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=True)
    # The State API (and Ray Train's placement group cleaner) finds its cluster by
    # RAY_ADDRESS, else by looking for Ray processes on the host: name this one, as
    # init_ray's worker setup hook does in the workers, in case others run beside it.
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    step(f"ray {ray.__version__} started ({cpus} CPUs, {gpus} GPUs)", t)
    try:
        t = time.monotonic()
        ds = ray.data.range(8).map(lambda r: {"id": r["id"], "sq": r["id"] ** 2}).map_batches(
            lambda b: {"id": b["id"], "sq": b["sq"] + 1}, batch_format="numpy")
        rows = sorted(ds.take_all(), key=lambda r: r["id"])
        assert [r["sq"] for r in rows] == [i * i + 1 for i in range(8)], rows
        step("ray data: range -> map -> map_batches", t)

        t = time.monotonic()
        from ray.util.state import list_nodes
        nodes = list_nodes(address=os.environ["RAY_ADDRESS"])
        assert len(nodes) == 1 and nodes[0].state == "ALIVE", nodes
        step("state api (dashboard process): list_nodes", t)

        t = time.monotonic()
        from finegym_ray.train.engine import torch_trainer
        with tempfile.TemporaryDirectory(prefix="fg_smoke_") as runs:
            trainer = torch_trainer(_train_fn, {"steps": 5}, name="smoke", runs=runs, workers=1, cpus_per_worker=1,
                                    use_gpu=gpus > 0, max_failures=0)
            result = trainer.fit()
            m = result.metrics
            assert m and math.isfinite(m["loss"]) and m["loss"] < m["first_loss"], m
            with result.checkpoint.as_directory() as d:
                assert set(torch.load(os.path.join(d, "model.pt"))) == {"weight", "bias"}
        step(f"ray train: 1-worker TorchTrainer, 5 steps on {m['device']}, loss {m['first_loss']:.3f} -> "
             f"{m['loss']:.3f}", t)

        if not args.no_tune:
            t = time.monotonic()
            from ray import tune
            from ray.tune.schedulers import ASHAScheduler
            with tempfile.TemporaryDirectory(prefix="fg_smoke_") as store:
                tuner = tune.Tuner(
                    _trial, param_space={"x": tune.grid_search([1.0, 2.0])},
                    tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=2,
                                                scheduler=ASHAScheduler(max_t=3, grace_period=1)),
                    run_config=tune.RunConfig(name="smoke", storage_path=store, verbose=0))
                grid = tuner.fit()
                assert not grid.errors and grid.get_best_result().config["x"] == 2.0, grid.errors
            step("ray tune: 2 trials, ASHA", t)
    finally:
        ray.shutdown()
    print(f"[smoke] all passed in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
