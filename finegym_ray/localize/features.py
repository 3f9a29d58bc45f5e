"""The feature files of localization: the one module that reads and writes them.

Layout under an extraction output folder ``OUT`` (a path or ``s3://`` URI)::

    OUT/action/<video_id>.parquet        snippets over a whole video, times in the video
    OUT/subaction/<routine key>.parquet  snippets over one routine (event instance), times
                                         relative to the routine start
    OUT/elements/<shard>.parquet         per-instance features of the element splits
    OUT/errors/                          one JSON per video that failed (extract.py)
    OUT/summary.json                     what the last run did, and every run's (extract.py)

A sequence file holds one row per snippet ("step"): ``start`` and ``end`` (float64,
seconds) and ``features`` (fixed-size list of C float16). The Parquet schema metadata
holds the video id (or routine key) and a JSON ``meta`` dict: the backbone run URI, the
settings hash, the level, the snippet settings, the fps, the feature dimension and this
format's version.

An elements file holds one row per element instance: ``key`` (the FineGym instance key)
and ``features`` (fixed-size list of S * C float16, S segments of C each, row-major),
with the same kind of ``meta`` (plus ``segments``).

Every write is atomic (storage.write_parquet): a reader, and a resumed run, sees a
complete file or none. No ray or torch here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..dataset.keys import safe_name
from ..errors import InputError

FORMAT_VERSION = 1
LEVELS = ("action", "subaction")
ELEMENTS = "elements"
SUFFIX = ".parquet"

_ID_KEY = b"finegym_ray.video_id"
_META_KEY = b"finegym_ray.feature_meta"

__all__ = [
    "ELEMENTS",
    "FORMAT_VERSION",
    "LEVELS",
    "ElementFeatures",
    "FeatureFormatError",
    "FeatureSequence",
    "element_uri",
    "list_elements",
    "list_sequences",
    "read_elements",
    "read_meta",
    "read_sequence",
    "sequence_uri",
    "write_elements",
    "write_sequence",
]


class FeatureFormatError(InputError):
    """A feature file that is not what this module writes; the message names the file."""


@dataclass(frozen=True)
class FeatureSequence:
    """One video's (or routine's) snippet features.

    starts, ends: (T,) float64 seconds (in the video at action level, relative to the
    routine start at sub-action level); features: (T, C) float32; meta: the writer's
    settings (``run``, ``settings_hash``, ``level``, ``feature_dim``, ...).
    """

    video_id: str
    starts: np.ndarray
    ends: np.ndarray
    features: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class ElementFeatures:
    """Per-instance features: keys (N,) FineGym instance keys; features (N, S, C) float32."""

    keys: list[str]
    features: np.ndarray
    meta: dict[str, Any]


def _level_folder(out: str, level: str) -> str:
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return storage.join(out, level)


def sequence_uri(out: str | os.PathLike[str], level: str, video_id: str) -> str:
    """``OUT/<level>/<video_id>.parquet``; ValueError for a name that could leave the folder."""
    return safe_name(_level_folder(os.fspath(out), level), video_id, SUFFIX)


def element_uri(out: str | os.PathLike[str], name: str) -> str:
    """``OUT/elements/<name>.parquet``."""
    return safe_name(storage.join(os.fspath(out), ELEMENTS), name, SUFFIX)


def _meta_bytes(meta: dict[str, Any], extra: dict[str, Any]) -> bytes:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        return json.dumps({**meta, **extra}, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta must be JSON-serialisable: {exc}") from None


def _float16_list(features: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(features, dtype=np.float16).reshape(-1), type=pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def write_sequence(
    uri: str | os.PathLike[str],
    *,
    video_id: str,
    starts: np.ndarray,
    ends: np.ndarray,
    features: np.ndarray,
    meta: dict[str, Any],
) -> None:
    """Write one feature sequence as one Parquet file, atomically.

    starts, ends: (T,) seconds with start <= end; features: (T, C) (stored as float16,
    finite values only; T may be 0). ``meta`` must be JSON-able; ``feature_dim`` and
    ``format_version`` are added to it.
    """
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1)
    features = np.asarray(features)
    if features.ndim != 2:
        raise InputError(f"features must be (T, C), got shape {features.shape}")
    t, c = features.shape
    if starts.shape[0] != t or ends.shape[0] != t:
        raise InputError(f"starts ({starts.shape[0]}), ends ({ends.shape[0]}) and features ({t}) "
                         "must have one row per snippet")
    if c < 1:
        raise InputError("features need at least one channel")
    if not (np.isfinite(starts).all() and np.isfinite(ends).all() and (ends >= starts).all()):
        raise InputError(f"{video_id}: snippet times must be finite with end >= start")
    with np.errstate(over="ignore"):  # an overflow is reported below as a clear error
        half = features.astype(np.float16)
    if not np.isfinite(half).all():
        raise InputError(f"{video_id}: features hold NaN/inf or values beyond float16's range (65504)")
    table = pa.table({
        "start": pa.array(starts, type=pa.float64()),
        "end": pa.array(ends, type=pa.float64()),
        "features": _float16_list(half, c),
    })
    table = table.replace_schema_metadata({
        _ID_KEY: str(video_id).encode(),
        _META_KEY: _meta_bytes(meta, {"feature_dim": int(c), "format_version": FORMAT_VERSION}),
    })
    storage.write_parquet(table, uri)


def _decode_meta(uri: str, metadata: dict[bytes, bytes] | None) -> tuple[str, dict[str, Any]]:
    metadata = metadata or {}
    if _META_KEY not in metadata or _ID_KEY not in metadata:
        raise FeatureFormatError(f"{uri}: not a finegym-ray feature file (no feature metadata)")
    try:
        meta = json.loads(metadata[_META_KEY])
    except ValueError as exc:
        raise FeatureFormatError(f"{uri}: unreadable feature metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise FeatureFormatError(f"{uri}: feature format version {version!r}, this code reads {FORMAT_VERSION}")
    return metadata[_ID_KEY].decode(), meta


def read_meta(uri: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """(video id or name, meta) from the file's footer alone (ranged reads on S3).

    FileNotFoundError when missing; FeatureFormatError when it is not a complete feature
    file of this format (a resumed run then redoes it).
    """
    text = os.fspath(uri)
    fs, path = storage.pyarrow_filesystem(text)
    try:
        with fs.open_input_file(path) as f:
            metadata = pq.read_metadata(f).metadata
    except FileNotFoundError:
        raise FileNotFoundError(f"no feature file at {text}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, OSError) and "not exist" in str(exc).lower():
            raise FileNotFoundError(f"no feature file at {text}") from None
        raise FeatureFormatError(f"{text}: not a complete Parquet file: {exc}") from None
    return _decode_meta(text, metadata)


def _read_table(uri: str, columns: dict[str, pa.DataType]) -> pa.Table:
    try:
        table = storage.read_parquet(uri)
    except pa.ArrowInvalid as exc:
        raise FeatureFormatError(f"{uri}: not a complete Parquet file: {exc}") from None
    for name, kind in columns.items():
        if name not in table.column_names:
            raise FeatureFormatError(f"{uri}: no column {name!r}")
        found = table.schema.field(name).type
        ok = pa.types.is_fixed_size_list(found) if kind is None else found == kind
        if not ok:
            raise FeatureFormatError(f"{uri}: column {name!r} is {found}, expected {kind or 'a fixed-size list'}")
    return table


def _feature_matrix(uri: str, column: pa.ChunkedArray, rows: int) -> np.ndarray:
    width = column.type.list_size
    if not pa.types.is_float16(column.type.value_type):
        raise FeatureFormatError(f"{uri}: features are {column.type.value_type}, expected float16")
    combined = column.combine_chunks() if rows else None
    if combined is None:
        return np.zeros((0, width), dtype=np.float32)
    values = combined.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32).reshape(rows, width)


def read_sequence(uri: str | os.PathLike[str]) -> FeatureSequence:
    """Read a file written by :func:`write_sequence`; features come back as float32."""
    text = os.fspath(uri)
    table = _read_table(text, {"start": pa.float64(), "end": pa.float64(), "features": None})
    video_id, meta = _decode_meta(text, table.schema.metadata)
    features = _feature_matrix(text, table.column("features"), table.num_rows)
    if features.shape[1] != meta.get("feature_dim"):
        raise FeatureFormatError(f"{text}: features have {features.shape[1]} channels, "
                                 f"meta says {meta.get('feature_dim')}")
    return FeatureSequence(
        video_id=video_id,
        starts=table.column("start").to_numpy(),
        ends=table.column("end").to_numpy(),
        features=features,
        meta=meta,
    )


def list_sequences(folder_uri: str | os.PathLike[str], level: str) -> list[str]:
    """Sorted URIs of the sequence files of ``level`` under the output folder ``folder_uri``.

    Only complete files are ever there (writes are atomic); a missing folder gives [].
    """
    folder = _level_folder(os.fspath(folder_uri), level)
    return [u for u in storage.list_uris(folder, suffix=SUFFIX) if "/" not in u[len(folder.rstrip("/")) + 1:]]


def write_elements(
    uri: str | os.PathLike[str], *, keys: list[str], features: np.ndarray, meta: dict[str, Any]
) -> None:
    """Write per-instance features atomically: keys (N,), features (N, S, C) -> float16.

    ``segments`` (S), ``feature_dim`` (C) and ``format_version`` are added to ``meta``.
    """
    features = np.asarray(features)
    if features.ndim != 3:
        raise InputError(f"element features must be (N, segments, C), got shape {features.shape}")
    n, s, c = features.shape
    if len(keys) != n:
        raise InputError(f"{len(keys)} keys for {n} feature rows")
    if s < 1 or c < 1:
        raise InputError(f"element features need segments >= 1 and C >= 1, got shape {features.shape}")
    with np.errstate(over="ignore"):
        half = features.astype(np.float16)
    if not np.isfinite(half).all():
        raise InputError("element features hold NaN/inf or values beyond float16's range (65504)")
    table = pa.table({"key": pa.array(list(keys), type=pa.string()), "features": _float16_list(half, s * c)})
    name = os.path.basename(os.fspath(uri)).removesuffix(SUFFIX)
    table = table.replace_schema_metadata({
        _ID_KEY: name.encode(),
        _META_KEY: _meta_bytes(meta, {"segments": int(s), "feature_dim": int(c), "format_version": FORMAT_VERSION}),
    })
    storage.write_parquet(table, uri)


def read_elements(uri: str | os.PathLike[str]) -> ElementFeatures:
    """Read one elements file, or every file of an ``OUT/elements`` folder (or of ``OUT``),
    concatenated in file order: features (N, S, C) float32."""
    text = os.fspath(uri)
    if text.endswith(SUFFIX):
        uris = [text]
    else:
        uris = list_elements(text)
        if not uris:
            raise FileNotFoundError(f"no element feature files under {text}")
    keys: list[str] = []
    parts: list[np.ndarray] = []
    meta: dict[str, Any] = {}
    for u in uris:
        table = _read_table(u, {"key": pa.string(), "features": None})
        _, m = _decode_meta(u, table.schema.metadata)
        s, c = m.get("segments"), m.get("feature_dim")
        flat = _feature_matrix(u, table.column("features"), table.num_rows)
        if not isinstance(s, int) or not isinstance(c, int) or flat.shape[1] != s * c:
            raise FeatureFormatError(f"{u}: rows of {flat.shape[1]} values do not match segments={s} x feature_dim={c}")
        if meta and (meta["segments"], meta["feature_dim"]) != (s, c):
            raise FeatureFormatError(f"{u}: segments x C = {s} x {c}, "
                                     f"other files have {meta['segments']} x {meta['feature_dim']}")
        meta = meta or m
        keys.extend(table.column("key").to_pylist())
        parts.append(flat.reshape(-1, s, c))
    return ElementFeatures(keys=keys, features=np.concatenate(parts, axis=0), meta=meta)


def list_elements(folder_uri: str | os.PathLike[str]) -> list[str]:
    """Sorted URIs of the element feature files in ``folder_uri`` (``OUT`` or ``OUT/elements``)."""
    text = os.fspath(folder_uri).rstrip("/")
    folder = text if text.endswith("/" + ELEMENTS) or text == ELEMENTS else storage.join(text, ELEMENTS)
    return storage.list_uris(folder, suffix=SUFFIX)
