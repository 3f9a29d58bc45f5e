"""Which file holds a FineGym video: ``<video_id>.<ext>`` under a videos folder.

FineGym names videos by their YouTube id (the part of an annotation key before
``_E_``); downloaders leave ``<id>.mp4``, or ``.mkv``/``.webm`` when YouTube served
another container. No ray or torch here: ``check``, preprocessing and feature extraction use it.
"""

from __future__ import annotations

import os

from .. import storage
from ..errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")


def find_videos(videos: str) -> dict[str, str]:
    """video id (file name without extension) -> URI, for every video below ``videos``
    (a folder or s3:// prefix, listed recursively). Hidden folders are left out: a
    downloader's partial files are there (``download/fetch.py``)."""
    found: dict[str, str] = {}
    for uri in storage.list_uris(videos):
        if any(part.startswith(".") for part in uri[len(videos):].strip("/").split("/")[:-1]):
            continue
        stem, ext = os.path.splitext(uri.rsplit("/", 1)[-1])
        if ext.lower() in VIDEO_EXTENSIONS:
            # Prefer .mp4 when a video exists in several containers (mmaction2's downloader
            # can leave .mkv/.webm beside it).
            if stem not in found or ext.lower() == ".mp4":
                found[stem] = uri
    return found


def require_videos(videos: str) -> dict[str, str]:
    """``find_videos``, refusing (InputError) a folder that does not exist or holds no
    video file at all: every item of a job would fail for want of its video. Some videos
    missing is fine (the jobs record their items as failed)."""
    found = find_videos(videos)
    if not found:
        kinds = ", ".join(VIDEO_EXTENSIONS)
        loc = storage.parse_uri(videos)
        what = "no such folder" if not loc.is_s3 and not os.path.exists(loc.key) else "no video files in it"
        raise InputError(f"--videos {videos}: {what} (looked for files ending in {kinds})")
    return found
