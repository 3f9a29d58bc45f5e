"""Ray job entry point for the demo: every stage on a generated SynGym, on the cluster
this job runs in (``ray job submit --working-dir . -- python jobs/demo.py [--out DIR]``).

Takes the same options as ``finegym-ray demo``.
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
