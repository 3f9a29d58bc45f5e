"""Ray job entry point: `finegym-ray evaluate` on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/evaluate.py --run s3://b/finegym/runs/tsm_rgb_gym99 \
        --fuse s3://b/finegym/runs/tsm_flow_gym99

Takes the same options as ``finegym-ray evaluate`` (see ``--help``).
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
