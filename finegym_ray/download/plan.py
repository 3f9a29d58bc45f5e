"""Which videos a download asks for, and which of them are already there whole.

The ids: every video the annotations name; or those with labelled keys in one subset's
split (``--subset gym99 --split val``: the videos of gym99's val keys; a subset alone:
any of its splits; a split alone: that split in any subset's files); or an id list. An
id is there when a file of it is in the output folder (``<id>.mp4``, or another
container ``check`` reads) and ``fetch.whole_problem``, ``check``'s probe, finds it whole.
No Ray, no yt-dlp.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow.compute as pc

from .. import storage
from ..dataset.keys import check_video_id
from ..dataset.manifest import Manifest, subset_split_column
from ..errors import InputError
from ..video.check import annotated_videos
from ..video.files import find_videos
from .fetch import whole_problem


def read_ids(uri: str) -> list[str]:
    """The video ids of an id list (local or s3://): one per line, blank lines and ``#``
    comments skipped, each id once, in the list's order."""
    ids: dict[str, None] = {}
    for n, line in enumerate(storage.read_text(uri).splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids[check_video_id(text)] = None
        except InputError as e:
            raise InputError(f"--ids {uri}, line {n}: {e}") from None
    if not ids:
        raise InputError(f"--ids {uri}: no video id in it")
    return list(ids)


def select_ids(manifest: Manifest, *, subset: str | None = None, split: str | None = None) -> list[str]:
    """The videos of ``manifest`` to download, sorted: all of them, or those with labelled
    keys in ``subset``'s ``split`` (either alone: see the module docstring)."""
    if subset is None and split is None:
        return sorted(set(manifest.events.column("video_id").to_pylist()))
    table = manifest.subactions
    column = "split" if subset is None else subset_split_column(subset)
    if column not in table.column_names:
        loaded = sorted(name[:-len("_split")] for name in table.column_names
                        if name.endswith("_split") and name != "split")
        raise InputError(f"--subset {subset}: the annotations have no {subset} split files (subsets with "
                         f"splits: {', '.join(loaded) or 'none'})")
    mask = pc.is_valid(table[column]) if split is None else pc.equal(table[column], split)
    ids = sorted(set(table.filter(mask).column("video_id").to_pylist()))
    if not ids:
        what = " ".join(x for x in (subset, split) if x)
        splits = sorted({s for s in table[column].to_pylist() if s})
        raise InputError(f"no labelled key of {what} in the annotations (splits there: {', '.join(splits) or 'none'})")
    return ids


def annotated_ends(manifest: Manifest) -> dict[str, float]:
    """video id -> the end of its last annotated event, in seconds."""
    return {vid: end for vid, (_, end) in annotated_videos(manifest).items()}


def present(out: str, ids: list[str], ends: dict[str, float], *, threads: int = 8,
            progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Which of ``ids`` have a file in ``out``: (id -> URI of the whole ones, id -> (URI,
    why it is not whole) of the others), probed ``threads`` at a time. ``ends``: each
    id's annotated end in seconds (an id without one is probed to its own end).
    ``progress(done, total)`` after each probe."""
    found = find_videos(out)
    there = [(vid, found[vid]) for vid in ids if vid in found]
    whole: dict[str, str] = {}
    broken: dict[str, tuple[str, str]] = {}
    if not there:
        return whole, broken

    def probe(item: tuple[str, str]) -> tuple[str, str, str]:
        vid, uri = item
        return vid, uri, whole_problem(uri, vid, ends.get(vid, 0.0))

    with ThreadPoolExecutor(max(1, min(threads, len(there)))) as pool:
        for done, (vid, uri, problem) in enumerate(pool.map(probe, there), start=1):
            if problem:
                broken[vid] = (uri, problem)
            else:
                whole[vid] = uri
            if progress:
                progress(done, len(there))
    return whole, broken
