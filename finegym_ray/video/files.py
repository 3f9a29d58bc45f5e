"""Which file holds a FineGym video: ``<video_id>.<ext>`` under a videos folder.

FineGym names videos by their YouTube id (the part of an annotation key before
``_E_``); downloaders leave ``<id>.mp4``, or ``.mkv``/``.webm`` when YouTube served
another container. No ray or torch here: ``check`` and preprocessing both use it.
"""

from __future__ import annotations

import os

from .. import storage

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")


def find_videos(videos: str) -> dict[str, str]:
    """video id (file name without extension) -> URI, for every video below ``videos``
    (a folder or s3:// prefix, listed recursively)."""
    found: dict[str, str] = {}
    for uri in storage.list_uris(videos):
        stem, ext = os.path.splitext(uri.rsplit("/", 1)[-1])
        if ext.lower() in VIDEO_EXTENSIONS:
            # Prefer .mp4 when a video exists in several containers (mmaction2's downloader
            # can leave .mkv/.webm beside it).
            if stem not in found or ext.lower() == ".mp4":
                found[stem] = uri
    return found
