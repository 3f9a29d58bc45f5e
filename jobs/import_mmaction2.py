"""Ray job entry point for importing mmaction2's FineGym sub-actions (trimmed videos or
rawframes) into a preprocessed store, on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/import_mmaction2.py --annotations s3://b/finegym/annotations \
        --rawframes s3://b/gym/subaction_frames --out s3://b/finegym/store

Takes the same options as ``finegym-ray import-mmaction2`` (see ``--help``). Resume
after a failure by submitting the same command again.
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["import-mmaction2", *sys.argv[1:]]))
