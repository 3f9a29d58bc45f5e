"""Ray job entry point for preprocessing: annotations + videos -> clip shards, on the
cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/preprocess.py --annotations s3://b/finegym/annotations \
        --videos s3://b/finegym/videos --out s3://b/finegym/clips

Takes the same options as ``finegym-ray preprocess`` (see ``--help``). Resume after a
failure by submitting the same command again.
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
