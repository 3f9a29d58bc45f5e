import pyarrow as pa
import pytest

from finegym_ray.preprocess.units import event_windows, merge_windows, plan_units, subaction_windows


def _table(rows):
    return pa.Table.from_pylist([dict(key=k, video_id=v, event_id="E_000010_000020", event_label=2, start_s=s, end_s=e)
                                 for k, v, s, e in rows])


ROWS = [(f"v_{i}", "vidA" if i < 6 else "vid-B", 10.0 + 3 * i, 12.0 + 3 * i) for i in range(9)]


def test_units_balance_never_span_videos_and_cover_every_clip_once():
    units = plan_units(subaction_windows(_table(ROWS)), seconds_per_unit=5.0)
    keys = [w.key for u in units for w in u.windows]
    assert sorted(keys) == sorted(r[0] for r in ROWS)  # no clip lost, none twice
    assert all(u.seconds <= 5.0 for u in units)
    assert all({w.key for w in u.windows} <= {r[0] for r in ROWS if r[1] == u.video_id} for u in units)
    assert [u.seconds for u in units] == sorted((u.seconds for u in units), reverse=True)


def test_unit_ids_are_stable_and_distinct():
    a = plan_units(subaction_windows(_table(ROWS)), 5.0)
    b = plan_units(subaction_windows(_table(list(reversed(ROWS)))), 5.0)
    assert [u.unit_id for u in a] == [u.unit_id for u in b]
    assert len({u.unit_id for u in a}) == len(a)


def test_a_corrected_window_time_gives_another_unit_and_fingerprint():
    units = plan_units(subaction_windows(_table(ROWS)), 5.0)
    moved = [(k, v, s + 0.001 if k == "v_0" else s, e) for k, v, s, e in ROWS]  # same second, same key
    again = plan_units(subaction_windows(_table(moved)), 5.0)
    gone = [u for u in units if u.unit_id not in {b.unit_id for b in again}]
    assert len(gone) == 1 and "v_0" in {w.key for w in gone[0].windows}
    kept = next(u for u in units if u.unit_id != gone[0].unit_id)
    twin = next(b for b in again if b.unit_id == kept.unit_id)
    assert kept.fingerprint("abc") == twin.fingerprint("abc") != kept.fingerprint("abd")


def test_a_clip_longer_than_the_target_is_its_own_unit():
    units = plan_units(subaction_windows(_table([("k", "v", 0.0, 100.0), ("j", "v", 200.0, 201.0)])), 10.0)
    assert sorted(len(u.windows) for u in units) == [1, 1]
    with pytest.raises(ValueError, match="seconds_per_unit"):
        plan_units({}, 0)


def test_event_windows_merge_with_subactions_in_time_order():
    events = pa.Table.from_pylist([dict(event_key="vidA_E_000009_000040", video_id="vidA", event_id="E_000009_000040",
                                        event_label=2, start_s=9.0, end_s=40.0)])
    merged = merge_windows(subaction_windows(_table(ROWS)), event_windows(events))
    assert [w.kind for w in merged["vidA"]] == ["event"] + ["subaction"] * 6
    assert len(merged["vid-B"]) == 3
    units = plan_units(merged, seconds_per_unit=20.0)
    assert sorted(w.key for u in units for w in u.windows) == sorted([r[0] for r in ROWS] + ["vidA_E_000009_000040"])


@pytest.mark.parametrize("video_id", ["../../escaped/evil", "a/b", "..", "a.b"])
def test_a_video_id_that_could_name_a_path_plans_no_unit(video_id):
    # A manifest written by hand or by an older version never went through the
    # annotation parser's check: the unit id, a file name, is checked again.
    with pytest.raises(ValueError, match="video id"):
        plan_units(subaction_windows(_table([("k", video_id, 1.0, 2.0)])), 5.0)
