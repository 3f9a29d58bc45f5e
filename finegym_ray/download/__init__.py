"""``finegym-ray download``: FineGym's videos from YouTube (or a mirror) with yt-dlp.

- ``plan.py``: which ids to fetch (annotations, a subset and split, an id list) and which
  are already there whole (``check``'s probe);
- ``fetch.py``: one video with yt-dlp into a private partial folder, probed, then put in
  place whole (no Ray);
- ``failures.py``: the one owner of ``OUT/download_failures.csv`` and of the reason classes;
- ``job.py``: the downloads as Ray tasks, a bounded number at a time, and the summary.
"""
