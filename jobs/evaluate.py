"""Ray job entry point: `finegym-ray evaluate` on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/evaluate.py --run s3://b/finegym/runs/tsm_rgb_gym99 \
        --fuse s3://b/finegym/runs/tsm_flow_gym99

The paper's test-time studies (results in RUN/eval/VARIANT/, RUN/eval/ untouched):

    ... python jobs/evaluate.py --run s3://b/finegym/runs/tsn_rgb_gym99 --segments 12
    ... python jobs/evaluate.py --run s3://b/finegym/runs/trn_rgb_gym99 --shuffle-frames --seed 0

Takes the same options as ``finegym-ray evaluate`` (see ``--help``); every argument is
passed through unchanged.
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
