import pytest
from hypothesis import given, strategies as st

from finegym_ray.dataset.keys import (
    event_id,
    instance_key,
    legacy_subaction_id,
    parse_event_key,
    parse_instance_key,
    subaction_id,
)

YOUTUBE_ID = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                     min_size=11, max_size=11)


def test_ids_truncate_seconds_and_pad():
    assert event_id(2407.32, 2435.28) == "E_002407_002435"
    assert event_id(2184.999, 2237.0) == "E_002184_002237"
    assert subaction_id([(3.45, 5.64)]) == "A_0003_0005"
    assert subaction_id([(35.1, 35.9)]) == "A_0035_0035"  # shorter than a second: ZZZZ == WWWW


def test_vault_end_comes_from_last_stage_and_legacy_from_first():
    stages = [(0.04, 3.2), (3.2, 4.49), (4.49, 6.57)]
    assert subaction_id(stages) == "A_0000_0006"
    assert legacy_subaction_id(stages) == "A_0000_0003"


def test_parse_the_documented_example():
    k = parse_instance_key("A0xAXXysHUo_E_002184_002237_A_0035_0036")
    assert (k.video_id, k.event_id, k.subaction_id) == ("A0xAXXysHUo", "E_002184_002237", "A_0035_0036")
    assert (k.event_start_s, k.event_end_s, k.subaction_start_s, k.subaction_end_s) == (2184, 2237, 35, 36)
    assert k.event_key == "A0xAXXysHUo_E_002184_002237"
    assert len(k.key) == 39


def test_video_ids_with_underscores_and_dashes_parse_from_the_right():
    k = parse_instance_key("a_E_0_B-c_d_E_000100_000140_A_0003_0005")
    assert k.video_id == "a_E_0_B-c_d"
    assert parse_event_key("x_-Yz9_Ab-Q_E_000100_000140") == ("x_-Yz9_Ab-Q", "E_000100_000140")


@pytest.mark.parametrize("bad", [
    "", "A0xAXXysHUo", "A0xAXXysHUo_E_2184_2237_A_0035_0036", "A0xAXXysHUo_E_002184_002237_A_35_36",
    "_E_002184_002237_A_0035_0036", "A0xAXXysHUo_E_002184_002237_A_0035_0036 ", "A0xAXXysHUo_E_002184_002237",
])
def test_bad_keys_raise_value_error(bad):
    with pytest.raises(ValueError, match="instance key"):
        parse_instance_key(bad)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), 1e7])
def test_bad_times_raise(bad):
    with pytest.raises(ValueError):
        event_id(bad, 10.0)


@given(YOUTUBE_ID, st.floats(0, 99999, allow_nan=False), st.floats(0, 999, allow_nan=False),
       st.lists(st.tuples(st.floats(0, 9999, allow_nan=False), st.floats(0, 9999, allow_nan=False)),
                min_size=1, max_size=3))
def test_key_round_trip(video, start, length, stages):
    ev = event_id(start, start + length)
    sub = subaction_id(stages)
    key = instance_key(video, ev, sub)
    k = parse_instance_key(key)
    assert (k.video_id, k.event_id, k.subaction_id) == (video, ev, sub)
    assert k.key == key
    assert k.event_start_s == int(start) and k.subaction_end_s == int(stages[-1][1])
