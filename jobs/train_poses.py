"""Ray job entry point: `finegym-ray train-poses` on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/train_poses.py --config configs/pose/stgcn_gym99.yaml --data s3://b/finegym/clips \
        --runs s3://b/finegym/runs

Resume after a failure by submitting the same command again (same run name).

Takes the same options as ``finegym-ray train-poses`` (see ``--help``).
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-poses", *sys.argv[1:]]))
