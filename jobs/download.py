"""Ray job entry point for downloading FineGym's videos with yt-dlp, as Ray tasks on the
cluster this job runs in (every node needs yt-dlp: pip install 'finegym-ray[download]').

    ray job submit --address http://HOST:8265 --working-dir . -- \
        python jobs/download.py --annotations s3://b/finegym/annotations \
        --out s3://b/finegym/videos

Takes the same options as ``finegym-ray download`` (see ``--help``). Resume after a
failure by submitting the same command again.
"""

import sys

from finegym_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
