"""OpenCV's TV-L1 (opencv-contrib) on image pairs from an .npz, on one thread.

    python benchmarks/opencv_tvl1.py IN.npz OUT.npz [--options JSON] [--repeats N]

Standalone (numpy and cv2 only): run it with an interpreter that has
``opencv-contrib-python-headless``, which cannot be installed beside the project's
``opencv-python-headless`` (benchmarks/flow.py runs it in a subprocess).
IN.npz holds ``first`` and ``second``, (K, H, W) uint8 grey. OUT.npz gets ``flow``
(K, H, W, 2) float32 px, (dx, dy) last, and ``seconds`` (K, repeats) float64, the
wall time of each ``calc`` call. ``--options`` takes the project's TVL1 keyword names
(tau, lambda_, theta, scales, scale_step, warps, epsilon, inner_iterations,
outer_iterations, median_filtering, gamma); missing ones keep OpenCV's defaults.
"""

import argparse
import json
import time

import cv2
import numpy as np

SETTERS = {  # the project's option name -> OpenCV's setter
    "tau": "setTau", "lambda_": "setLambda", "theta": "setTheta", "scales": "setScalesNumber",
    "scale_step": "setScaleStep", "warps": "setWarpingsNumber", "epsilon": "setEpsilon",
    "inner_iterations": "setInnerIterations", "outer_iterations": "setOuterIterations",
    "median_filtering": "setMedianFiltering", "gamma": "setGamma",
}


def tvl1(options: dict):
    method = cv2.optflow.DualTVL1OpticalFlow_create()
    for name, value in options.items():
        if name not in SETTERS:
            raise SystemExit(f"unknown TV-L1 option {name!r}; choose from {sorted(SETTERS)}")
        getattr(method, SETTERS[name])(value)
    return method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--options", default="{}", help="JSON object of TV-L1 options")
    ap.add_argument("--repeats", type=int, default=1, help="calls per pair (each timed)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    data = np.load(args.inp)
    first, second = data["first"], data["second"]
    method = tvl1(json.loads(args.options))
    flows = np.empty((*first.shape, 2), np.float32)
    seconds = np.empty((len(first), args.repeats))
    for k in range(len(first)):
        for r in range(args.repeats):
            t0 = time.perf_counter()
            flows[k] = method.calc(first[k], second[k], None)
            seconds[k, r] = time.perf_counter() - t0
    np.savez(args.out, flow=flows, seconds=seconds, version=cv2.__version__)


if __name__ == "__main__":
    main()
