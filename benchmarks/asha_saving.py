"""ASHA's saving on a study's grid: the grid sweep trained in full against the same
configs under ASHA, one trial at a time both ways.

    python benchmarks/asha_saving.py [--config configs/studies/syngym/frames.yaml]
        [--grace-period 1] [--reduction-factor 2] [--set KEY=VALUE ...] [--address ADDR]

The grid is the study's own sweep (``SWEEPS/NAME``: run by ``finegym-ray study NAME``,
whose finished trials are reused here, or trained now); the ASHA sweep is the same
search space and base config in ``SWEEPS/NAME_asha_gG_rR`` (G, R: the grace period and
reduction factor) with ``scheduler: asha``. Both are
resumable like any sweep. With the SynGym preset (the default config), the study store
is made first when it is not there, as ``finegym-ray study --preset syngym`` does.

Prints a row per config (its grid metric and epochs, its ASHA metric and epochs, stopped
or not) and the two targets of the issue: ASHA's best config within 1 point of the
grid's best (judged on the grid's full training of that config, and on ASHA's own
figure), with at most half of the grid's epochs.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

from finegym_ray.runtime.connect import init_ray
from finegym_ray.tune.config import load_sweep
from finegym_ray.tune.studies import make_study_store, store_settings
from finegym_ray.tune.sweep import run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "studies", "syngym", "frames.yaml")


def by_config(trials, params: list[str]) -> dict[str, dict]:
    """Trial figures keyed by their swept values (JSON text), so grid and ASHA rows pair up."""
    out = {}
    for t in trials:
        key = json.dumps({p: t.params.get(p) for p in params}, sort_keys=True)
        scored = [m for m in t.history if m.get("val_mean_class") is not None]
        out[key] = {"best": max((m["val_mean_class"] for m in scored), default=None),
                    "epochs": len(t.history), "status": t.status}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="the study's sweep file (default: SynGym frames)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA's first rung, epochs (default 1)")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA's reduction factor (default 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="sweep setting, train.KEY for training ones (applies to both sides)")
    p.add_argument("--address", help="Ray cluster (default: a new local Ray)")
    args = p.parse_args()

    sweep, base = load_sweep(args.config, args.overrides)
    if sweep.metric != "val_mean_class" or sweep.mode != "max":
        raise SystemExit("this benchmark compares val_mean_class (mode max); the sweep file asks for "
                         f"{sweep.metric} ({sweep.mode})")
    init_ray(args.address, log_to_driver=False)
    say = lambda m: print(f"[asha] {m}", flush=True)  # noqa: E731
    if os.path.abspath(args.config).startswith(os.path.join(ROOT, "configs", "studies", "syngym")):
        make_study_store(base.data, *store_settings(os.path.join(os.path.dirname(args.config), "store.yaml")),
                         say=say)
    params = list(sweep.space)
    grid = by_config(run_sweep(sweep, base, say=say)["trials"], params)
    rf = f"{args.reduction_factor:g}"
    asha_sweep = replace(sweep, name=f"{sweep.name}_asha_g{args.grace_period}_r{rf}", scheduler="asha",
                         grace_period=args.grace_period, reduction_factor=args.reduction_factor)
    asha = by_config(run_sweep(asha_sweep, base, say=say)["trials"], params)

    print(f"\n{'config':<28}{'grid mean class':>16}{'epochs':>8}{'ASHA mean class':>17}{'epochs':>8}  ASHA")
    for key in grid:
        g, a = grid[key], asha.get(key, {})
        cell = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        print(f"{key:<28}{cell(g['best']):>16}{g['epochs']:>8}{cell(a.get('best')):>17}{a.get('epochs', 0):>8}  "
              f"{a.get('status', '-')}")
    if any(g["best"] is None for g in grid.values()) or all(a["best"] is None for a in asha.values()):
        raise SystemExit("a trial has no validation metric (errored?): see the sweeps' folders")
    grid_best_key = max(grid, key=lambda k: grid[k]["best"])
    asha_best_key = max((k for k in asha if asha[k]["best"] is not None), key=lambda k: asha[k]["best"])
    grid_epochs, asha_epochs = sum(g["epochs"] for g in grid.values()), sum(a["epochs"] for a in asha.values())
    # Differences to the grid's best, in points (negative: below it).
    own = 100 * (asha[asha_best_key]["best"] - grid[grid_best_key]["best"])
    regrid = 100 * (grid[asha_best_key]["best"] - grid[grid_best_key]["best"])
    print(f"\ngrid best: {grid_best_key} at {100 * grid[grid_best_key]['best']:.1f} % mean class, "
          f"{grid_epochs} epochs")
    print(f"ASHA best: {asha_best_key} at {100 * asha[asha_best_key]['best']:.1f} % in its own run ({own:+.1f} "
          f"points against the grid's best); the grid's run of that config: {100 * grid[asha_best_key]['best']:.1f} "
          f"% ({regrid:+.1f} points)")
    print(f"epochs: ASHA {asha_epochs} of the grid's {grid_epochs} ({100 * asha_epochs / grid_epochs:.0f} %); "
          f"target: within 1 point using <= 50 %: "
          f"{'met' if regrid >= -1 and asha_epochs <= grid_epochs / 2 else 'not met'}")


if __name__ == "__main__":
    main()
