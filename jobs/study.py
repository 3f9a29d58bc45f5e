"""Ray job entry point: `finegym-ray study NAME` (one of the paper's studies: a grid sweep,
then an evaluation grid over its runs) on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/study.py frames --set train.data=s3://b/finegym/clips --set sweeps=s3://b/finegym/sweeps

Resume after the driver died by submitting the same command again: finished trials and
evaluations stay. ``--smoke-test`` runs a tiny study on a generated SynGym.

Takes the same options as ``finegym-ray study`` (see ``--help``).
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
