"""Ray job entry point for feature extraction: a trained run's backbone over videos (or
routines) -> snippet feature sequences for localization, on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/extract_features.py --run s3://b/runs/tsm_rgb_gym99 \
        --videos s3://b/finegym/videos --annotations s3://b/finegym/annotations \
        --out s3://b/finegym/features --level action

or ``finegym-ray submit extract_features -- --run ... --out ...``. Takes the same options
as ``finegym-ray extract-features`` (see ``--help``). Resume after a failure by
submitting the same command again: complete files are kept.
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract-features", *sys.argv[1:]]))
