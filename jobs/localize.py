"""Ray job entry point: `finegym-ray localize train|evaluate` (the temporal detector on
feature sequences) on the cluster this job runs in.

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/localize.py train --config configs/localize/syngym_action.yaml \
        --set features=s3://b/finegym/features --set runs=s3://b/finegym/runs

or ``finegym-ray submit localize --config configs/localize/syngym_action.yaml -- train``.
Resume after a failure by submitting the same command again (same run name); evaluate
with ``evaluate`` in place of ``train``. ``train --smoke-test`` trains a tiny detector on
toy feature sequences.

Takes the same options as ``finegym-ray localize`` (see ``--help``).
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["localize", *sys.argv[1:]]))
