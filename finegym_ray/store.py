"""The preprocessed store's layout: the one module that names its folders and files.

``finegym-ray preprocess --out STORE`` writes (local folder or s3:// prefix):

    STORE/preprocess.json          the settings that determine the clips, and their hash
    STORE/config.yaml              every setting of the last run
    STORE/manifest/                the annotations as Parquet tables (``manifest --out`` too):
        events.parquet, subactions.parquet, categories.parquet, unmatched_keys.parquet,
        summary.json
    STORE/clips/<unit>.parquet     one clip shard per work unit
    STORE/errors/<unit>.json       why a unit, or some of its windows, failed
    STORE/summary.json             the whole output and every run's figures
    STORE/poses/<video>.parquet    2-D poses per sub-action key (``import-poses``)

Who writes each: ``dataset/manifest.py`` the manifest, ``dataset/pose_store.py`` the
poses, ``preprocess/`` the rest; what each holds: docs/formats.md. A job's other output folders (a
manifest folder, feature files: ``localize/features.py``) name their failures and
their summary with the same ``ERRORS`` and ``SUMMARY``. Nothing else spells these names.
No Ray and no torch: what training's sampling workers import reads the store through it.
"""

from __future__ import annotations

import json

from . import storage
from .dataset.keys import safe_name
from .errors import InputError

MANIFEST = "manifest"
CLIPS = "clips"
POSES = "poses"
ERRORS = "errors"
SUMMARY = "summary.json"
SETTINGS = "preprocess.json"
CONFIG = "config.yaml"
SHARD_SUFFIX = ".parquet"
ERROR_SUFFIX = ".json"

# The manifest's tables, by name (``manifest_table``).
MANIFEST_TABLES = {"events": "events.parquet", "subactions": "subactions.parquet",
                   "categories": "categories.parquet", "unmatched_keys": "unmatched_keys.parquet"}

# What preprocessing writes at the top of a store (the demo replaces them all when its data changes).
PREPROCESS_OUTPUTS = (CLIPS, ERRORS, MANIFEST, SUMMARY, SETTINGS, CONFIG)


def manifest_dir(store: str) -> str:
    """``STORE/manifest``: the manifest preprocessing writes beside the clips."""
    return storage.join(store, MANIFEST)


def manifest_table(manifest: str, name: str) -> str:
    """``MANIFEST/<name>.parquet`` of a manifest folder: ``name`` one of MANIFEST_TABLES."""
    return storage.join(manifest, MANIFEST_TABLES[name])


def clips_dir(store: str) -> str:
    """``STORE/clips``: the clip shards."""
    return storage.join(store, CLIPS)


def shard_uri(store: str, unit_id: str) -> str:
    """``STORE/clips/<unit_id>.parquet``; ValueError for a unit id that would name a path elsewhere."""
    return safe_name(clips_dir(store), unit_id, SHARD_SUFFIX)


def shard_path(root: str, unit_id: str) -> str:
    """A shard's path inside a pyarrow filesystem whose store path is ``root`` (from
    ``storage.pyarrow_filesystem``); the unit id is checked with :func:`shard_uri` first."""
    return f"{root}/{CLIPS}/{unit_id}{SHARD_SUFFIX}"


def poses_dir(store: str) -> str:
    """``STORE/poses``: the pose shards, one per video."""
    return storage.join(store, POSES)


def pose_shard_uri(store: str, video_id: str) -> str:
    """``STORE/poses/<video_id>.parquet``; ValueError for a video id that would name a path elsewhere."""
    return safe_name(poses_dir(store), video_id, SHARD_SUFFIX)


def errors_dir(store: str) -> str:
    """``STORE/errors``: a job output's failure records (written only when something failed)."""
    return storage.join(store, ERRORS)


def error_uri(store: str, unit_id: str) -> str:
    """``STORE/errors/<unit_id>.json``; ValueError for a unit id that would name a path elsewhere."""
    return safe_name(errors_dir(store), unit_id, ERROR_SUFFIX)


def attempts_uri(store: str, unit_id: str, counter: str) -> str:
    """``STORE/errors/<unit_id><counter>``: a stage's count of its attempts at a unit."""
    return safe_name(errors_dir(store), unit_id, counter)


def summary_uri(folder: str) -> str:
    """``FOLDER/summary.json``: a store's, a manifest folder's or a feature folder's summary."""
    return storage.join(folder, SUMMARY)


def settings_uri(store: str) -> str:
    """``STORE/preprocess.json``: the settings that determine the clips, and their hash."""
    return storage.join(store, SETTINGS)


def recorded_hash(store: str) -> str | None:
    """The settings hash recorded in ``STORE/preprocess.json``, None if it has none;
    InputError for a file that is not a JSON object."""
    uri = settings_uri(store)
    try:
        recorded = json.loads(storage.read_text(uri))
    except FileNotFoundError:
        return None
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        raise InputError(f"{uri}: not a JSON object of preprocessing settings")
    return recorded.get("hash")


def require_store(store: str, *, option: str = "--data") -> None:
    """InputError unless ``store`` holds what preprocessing writes first, its settings
    (``SETTINGS``): a videos or annotation folder given by mistake is named as what it
    is not, before anything reads inside it."""
    if not storage.exists(settings_uri(store)):
        raise InputError(f"{option} {store}: not a preprocessed store (no {SETTINGS} there): give the --out of "
                         f"'finegym-ray preprocess', or preprocess into it first")


def config_uri(store: str) -> str:
    """``STORE/config.yaml``: every setting of the last preprocessing run."""
    return storage.join(store, CONFIG)
