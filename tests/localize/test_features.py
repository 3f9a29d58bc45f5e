"""The feature file format (localize/features.py): round trips, atomicity, refusals."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegym_ray import storage
from finegym_ray.localize import features as F
from finegym_ray.video_job import settings_hash


def _seq(t=5, c=8, seed=0):
    rng = np.random.default_rng(seed)
    starts = np.arange(t) * 0.5
    return starts, starts + 1.0, rng.standard_normal((t, c)).astype(np.float32)


def test_round_trip_local(tmp_path):
    starts, ends, feats = _seq()
    uri = F.sequence_uri(str(tmp_path), "action", "-abc_DEF12")
    F.write_sequence(uri, video_id="-abc_DEF12", starts=starts, ends=ends, features=feats,
                     meta={"run": "runs/x", "settings_hash": "h1", "level": "action", "fps": 12.5})
    seq = F.read_sequence(uri)
    assert seq.video_id == "-abc_DEF12" and len(seq) == 5 and seq.feature_dim == 8
    np.testing.assert_array_equal(seq.starts, starts)
    np.testing.assert_array_equal(seq.ends, ends)
    assert seq.features.dtype == np.float32
    np.testing.assert_array_equal(seq.features, feats.astype(np.float16).astype(np.float32))
    assert seq.meta["run"] == "runs/x" and seq.meta["feature_dim"] == 8 and seq.meta["fps"] == 12.5
    assert F.read_meta(uri)[1]["settings_hash"] == "h1"
    # On disk: float16 fixed-size lists, as the format promises to other readers.
    assert pq.read_schema(uri).field("features").type == pa.list_(pa.float16(), 8)
    assert F.list_sequences(str(tmp_path), "action") == [uri]
    assert F.list_sequences(str(tmp_path), "subaction") == []


def test_round_trip_s3_and_listing(s3_prefix):
    for vid in ("b_vid", "a_vid"):
        starts, ends, feats = _seq(t=3, c=4)
        F.write_sequence(F.sequence_uri(s3_prefix, "subaction", vid), video_id=vid, starts=starts, ends=ends,
                         features=feats, meta={"level": "subaction"})
    uris = F.list_sequences(s3_prefix, "subaction")
    assert uris == [f"{s3_prefix}/subaction/a_vid.parquet", f"{s3_prefix}/subaction/b_vid.parquet"]
    seq = F.read_sequence(uris[0])
    assert seq.video_id == "a_vid" and seq.features.shape == (3, 4)
    assert F.read_meta(uris[1])[0] == "b_vid"
    with pytest.raises(FileNotFoundError):
        F.read_meta(f"{s3_prefix}/subaction/none.parquet")


def test_empty_sequence_keeps_its_width(tmp_path):
    uri = str(tmp_path / "e.parquet")
    F.write_sequence(uri, video_id="e", starts=[], ends=[], features=np.zeros((0, 6)), meta={})
    seq = F.read_sequence(uri)
    assert seq.features.shape == (0, 6) and len(seq) == 0


@pytest.mark.parametrize("bad, match", [
    (dict(features=np.zeros((3,))), r"\(T, C\)"),
    (dict(starts=np.zeros(2)), "one row per snippet"),
    (dict(ends=np.full(3, -1.0)), "end >= start"),
    (dict(features=np.full((3, 2), 1e6)), "float16"),
    (dict(features=np.full((3, 2), np.nan)), "NaN"),
    (dict(meta={"x": object()}), "JSON"),
])
def test_bad_sequences_refused_and_nothing_written(tmp_path, bad, match):
    args = dict(video_id="v", starts=np.zeros(3), ends=np.ones(3), features=np.zeros((3, 2)), meta={})
    args.update(bad)
    uri = str(tmp_path / "v.parquet")
    with pytest.raises((ValueError, TypeError), match=match):
        F.write_sequence(uri, **args)
    assert not os.path.exists(uri)


def test_unsafe_names_refused(tmp_path):
    for name in ("../x", "a/b", ""):
        with pytest.raises(ValueError):
            F.sequence_uri(str(tmp_path), "action", name)
    with pytest.raises(ValueError, match="level"):
        F.sequence_uri(str(tmp_path), "event", "v")


def test_partial_and_foreign_files_are_format_errors(tmp_path):
    uri = str(tmp_path / "v.parquet")
    starts, ends, feats = _seq()
    F.write_sequence(uri, video_id="v", starts=starts, ends=ends, features=feats, meta={})
    data = open(uri, "rb").read()
    cut = str(tmp_path / "cut.parquet")
    open(cut, "wb").write(data[: len(data) // 2])  # what a crash without atomic writes would leave
    with pytest.raises(F.FeatureFormatError, match="cut.parquet"):
        F.read_meta(cut)
    with pytest.raises(F.FeatureFormatError, match="cut.parquet"):
        F.read_sequence(cut)
    other = str(tmp_path / "other.parquet")
    pq.write_table(pa.table({"start": [0.0]}), other)
    with pytest.raises(F.FeatureFormatError, match="not a finegym-ray feature file"):
        F.read_meta(other)


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the old complete file (or none), never a part."""
    uri = str(tmp_path / "v.parquet")
    starts, ends, feats = _seq()
    F.write_sequence(uri, video_id="v", starts=starts, ends=ends, features=feats, meta={"n": 1})

    def boom(table, where, **kw):
        where.write(b"PAR1 partial")
        raise OSError("disk gone")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk gone"):
        F.write_sequence(uri, video_id="v", starts=starts, ends=ends, features=feats, meta={"n": 2})
    monkeypatch.undo()
    assert F.read_sequence(uri).meta["n"] == 1
    assert os.listdir(tmp_path) == ["v.parquet"]


def test_elements_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 12, 5))
    b = rng.standard_normal((2, 12, 5))
    F.write_elements(F.element_uri(str(tmp_path), "unit_0001"), keys=["k1", "k2", "k3"], features=a, meta={"run": "r"})
    F.write_elements(F.element_uri(str(tmp_path), "unit_0002"), keys=["k4", "k5"], features=b, meta={"run": "r"})
    got = F.read_elements(str(tmp_path))
    assert got.keys == ["k1", "k2", "k3", "k4", "k5"]
    assert got.features.shape == (5, 12, 5) and got.meta["segments"] == 12 and got.meta["feature_dim"] == 5
    np.testing.assert_array_equal(got.features[3:], b.astype(np.float16).astype(np.float32))
    assert len(F.list_elements(str(tmp_path))) == 2
    assert F.read_elements(F.element_uri(str(tmp_path), "unit_0002")).keys == ["k4", "k5"]
    with pytest.raises(ValueError, match="keys"):
        F.write_elements(str(tmp_path / "x.parquet"), keys=["a"], features=a, meta={})


def test_settings_hash_is_stable_and_order_free():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})
    assert len(settings_hash({})) == 16
    assert storage  # the module under test writes through storage
