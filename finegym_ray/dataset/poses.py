"""2-D skeleton poses in mmaction2's format (FineGym's ``gym_2d.pkl``): read without
running code.

mmaction2 publishes FineGym's poses (HRNet on ground-truth boxes) as a pickle: a dict
``{"split": {name: [frame_dir, ...]}, "annotations": [record, ...]}`` (older files: the
list of records alone), each record a dict with ``frame_dir`` (the sub-action key),
``label``, ``img_shape`` and ``original_shape`` (height, width in pixels),
``total_frames``, ``keypoint`` (persons x frames x 17 x 2, pixels, COCO-17 order) and
``keypoint_score`` (persons x frames x 17, 0 to 1).

A pickle names the functions that rebuild its objects, so an ordinary ``pickle.load``
of a file from others runs whatever the file names. :func:`read_pose_pickle` admits
only what numpy arrays and scalars need and plain containers; any other name refuses
the whole file in one line, before anything it names is called. Each record is then
checked (types, shapes, finite values, a key that is one plain name).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass

import numpy as np

from .. import storage
from .errors import FormatError
from .keys import safe_name

# gym_2d.pkl is ~1 GB for 29k sub-actions (float16 keypoints); bounded so that a file
# cannot ask for unbounded memory before it is read.
MAX_POSE_BYTES = 4 << 30
# The keypoints' order, COCO-17's (mmaction2's pose files and SynGym's)
COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
          "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
          "right_ankle")
JOINTS = len(COCO17)
# COCO-17's bones: legs, arms, the trunk's four sides, and the face to the shoulders.
BONES = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (9, 7), (7, 5), (10, 8),
         (8, 6), (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6))
# What pickled numpy arrays, dtypes and scalars name (numpy 1 and 2 spell the module
# differently), and what protocol 2 builds bytes with; nothing of them runs code beyond
# building an array from bytes.
_ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                for name in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


@dataclass(frozen=True)
class PoseRecord:
    """One sub-action's poses. ``keypoint``: persons x frames x 17 x 2 float32 (pixels);
    ``score``: persons x frames x 17 float32 (0 to 1); ``img_shape``: (height, width)
    in pixels of the frames the keypoints are in."""

    key: str
    label: int
    img_shape: tuple[int, int]
    total_frames: int
    keypoint: np.ndarray
    score: np.ndarray


class _DataOnly(pickle.Unpickler):
    """An unpickler that builds plain containers, numbers, strings and numpy arrays,
    and refuses every other name a pickle asks for."""

    def __init__(self, data: bytes, uri: str):
        super().__init__(io.BytesIO(data))
        self.uri = uri

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise FormatError(self.uri, None, f"refused: the pickle asks for {module}.{name}, which a pose file "
                                          f"never needs (only numpy arrays and plain containers are read)")

    def persistent_load(self, pid):
        raise FormatError(self.uri, None, "refused: the pickle refers to outside objects (persistent ids)")


def read_pose_pickle(uri: str) -> tuple[list[PoseRecord], dict[str, list[str]]]:
    """The records and the splits (name -> keys; empty for a file without them) of the
    mmaction2 pose pickle at ``uri`` (local or s3://). FormatError naming the file, in
    one line, for a pickle that names anything but numpy's array builders, or a record
    that is not poses as described in this module's docstring."""
    data = storage.read_bytes(uri, max_bytes=MAX_POSE_BYTES)
    try:
        loaded = _DataOnly(data, uri).load()
    except FormatError:
        raise
    except Exception as e:  # a truncated or not-a-pickle file raises anything pickle can
        raise FormatError(uri, None, f"not a pose pickle ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(loaded, dict) and "annotations" in loaded:
        records, splits = loaded["annotations"], loaded.get("split", {})
    else:
        records, splits = loaded, {}
    if not isinstance(records, list):
        raise FormatError(uri, None, f"the annotations must be a list of records, not {type(records).__name__}")
    if not (isinstance(splits, dict) and all(isinstance(k, str) and isinstance(v, list)
                                             and all(isinstance(x, str) for x in v) for k, v in splits.items())):
        raise FormatError(uri, None, "split must map split names to lists of keys")
    return [_record(r, uri, n) for n, r in enumerate(records)], splits


def _record(raw: object, uri: str, n: int) -> PoseRecord:
    def bad(message: str) -> FormatError:
        key = raw.get("frame_dir") if isinstance(raw, dict) else None
        return FormatError(uri, None, f"record {n}" + (f" ({key!r})" if isinstance(key, str) else "")
                                      + f": {message}")

    if not isinstance(raw, dict):
        raise bad(f"must be a dict, not {type(raw).__name__}")
    missing = [k for k in ("frame_dir", "label", "img_shape", "total_frames", "keypoint") if k not in raw]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    key = raw["frame_dir"]
    try:
        safe_name(".", key)
    except ValueError:
        raise bad("frame_dir must be one plain name (a FineGym key)") from None
    label, frames, shape = raw["label"], raw["total_frames"], raw["img_shape"]
    if not _is_int(label) or label < 0:
        raise bad(f"label must be an integer >= 0, not {label!r}")
    if not _is_int(frames) or frames < 1:
        raise bad(f"total_frames must be an integer >= 1, not {frames!r}")
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(_is_int(v) and v > 0 for v in shape)):
        raise bad(f"img_shape must be (height, width) in pixels, not {shape!r}")
    keypoint = _numeric(raw["keypoint"], bad, "keypoint")
    if keypoint.ndim != 4 or keypoint.shape[1:] != (frames, JOINTS, 2):
        raise bad(f"keypoint must be persons x {frames} frames x {JOINTS} joints x 2, not {keypoint.shape}")
    persons = keypoint.shape[0]
    if "keypoint_score" in raw:
        score = _numeric(raw["keypoint_score"], bad, "keypoint_score")
        if score.shape != (persons, frames, JOINTS):
            raise bad(f"keypoint_score must be {persons} x {frames} x {JOINTS}, not {score.shape}")
    else:
        score = np.ones((persons, frames, JOINTS), np.float32)  # coordinates without confidences
    return PoseRecord(key=key, label=int(label), img_shape=(int(shape[0]), int(shape[1])), total_frames=int(frames),
                      keypoint=keypoint, score=score)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _numeric(value: object, bad, name: str) -> np.ndarray:
    """``value`` as a finite float32 array; ``bad(message)`` otherwise."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise bad(f"{name} must be a numeric numpy array, not {type(value).__name__}"
                  + (f" of {value.dtype}" if isinstance(value, np.ndarray) else ""))
    array = value.astype(np.float32)
    if not np.isfinite(array).all():
        raise bad(f"{name} holds values that are not finite")
    return array


def write_pose_pickle(uri: str, records: list[PoseRecord], splits: dict[str, list[str]]) -> None:
    """``records`` and ``splits`` as an mmaction2 pose pickle at ``uri`` (what SynGym
    writes for its poses): keypoints and scores as float16, as mmaction2's files hold
    them."""
    annotations = [{"frame_dir": r.key, "label": r.label, "img_shape": r.img_shape, "original_shape": r.img_shape,
                    "total_frames": r.total_frames, "keypoint": r.keypoint.astype(np.float16),
                    "keypoint_score": r.score.astype(np.float16)} for r in records]
    storage.write_bytes(uri, pickle.dumps({"split": splits, "annotations": annotations},
                                          protocol=pickle.HIGHEST_PROTOCOL))

