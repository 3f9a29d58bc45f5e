"""Ray job entry point: `finegym-ray tune` (a Ray Tune sweep) on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/tune.py --config configs/sweeps/tsm_rgb_gym99.yaml \
        --set train.data=s3://b/finegym/clips --set sweeps=s3://b/finegym/sweeps

Resume after the driver died by submitting the same command again (same sweep name):
finished trials stay, unfinished ones continue from their newest checkpoint.

Takes the same options as ``finegym-ray tune`` (see ``--help``).
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
