import json
from pathlib import Path

import pytest

from finegym_ray.dataset.annotations import Event, SubAction, format_annotations, parse_annotations
from finegym_ray.dataset.errors import FormatError

DATA = Path(__file__).parent / "data"


def load():
    return parse_annotations((DATA / "annotations.json").read_text(), "annotations.json")


def test_events_subactions_and_absolute_times():
    events = {e.key: e for e in load()}
    assert len(events) == 4
    bb = events["A0xAXXysHUo_E_002184_002237"]
    assert (bb.label, bb.name, bb.start_s, bb.end_s) == (3, "BB", 2184.05, 2237.9)
    s = bb.subactions[0]
    assert s.key == "A0xAXXysHUo_E_002184_002237_A_0035_0036"
    assert s.start_s == pytest.approx(2184.05 + 35.1)
    assert s.end_s == pytest.approx(2184.05 + 36.5)


def test_vault_spans_first_stage_start_to_last_stage_end():
    vt = next(e for e in load() if e.label == 1)
    (s,) = vt.subactions
    assert len(s.stages) == 3
    assert (s.rel_start_s, s.rel_end_s) == (0.04, 6.57)
    assert s.end_s == pytest.approx(2681.88 + 6.57)


def test_segments_null_is_an_event_without_subactions():
    men = next(e for e in load() if e.label == 5)
    assert men.subactions is None
    assert men.name == "event_5"


def test_format_round_trips():
    events = load()
    text = format_annotations(events)
    assert parse_annotations(text) == events
    assert json.loads(text) == json.loads((DATA / "annotations.json").read_text())


@pytest.mark.parametrize("text, line, msg", [
    ('{"v": {"E_000001_000002": {"event": 1, "timestamps": [[1.0, 2.0]], "segments": null}', 1, "malformed JSON"),
    ('{\n"v": {\n"E_000001_000002": {"event": "1", "timestamps": [[1.0, 2.0]], "segments": null}}}', 3, "'event'"),
    ('{"v": {"E_1_2": {"event": 1, "timestamps": [[1.0, 2.0]], "segments": null}}}', 1, "event id"),
    ('{"v": {"E_000001_000002": {"event": 1, "timestamps": [[2.0, 1.0]], "segments": null}}}', 1, "timestamps"),
    ('{"v": {"E_000001_000002": {"event": 1, "timestamps": [[1.0, 2.0]]}}}', 1, "segments"),
    ('{"v": {"E_000001_000002": {"event": 1, "timestamps": [[1.0, 2.0]], "segments": '
     '{"A_0000_0001": {"stages": 3, "timestamps": [[0.1, 0.5]]}}}}}', 1, "3 \\[start, end\\] pairs"),
    ('[1, 2]', 1, "JSON object of videos"),
])
def test_bad_input_names_file_and_line(text, line, msg):
    with pytest.raises(FormatError, match=msg) as e:
        parse_annotations(text, "ann.json")
    assert e.value.path == "ann.json"
    assert e.value.line == line
    assert str(e.value).startswith(f"ann.json:{line}: ")


def test_records_are_plain_values():
    s = SubAction("v", "E_000001_000002", "A_0000_0001", 1.0, ((0.0, 0.5),))
    ev = Event("v", "E_000001_000002", 2, 1.0, 2.0, (s,))
    assert ev.key == "v_E_000001_000002" and ev.name == "FX"


@pytest.mark.parametrize("video_id", ["../../escaped/evil", "/etc/evil", "a.b", "", "a\\b", "a\x00b"])
def test_a_video_id_outside_the_grammar_is_a_format_error_naming_file_and_key(video_id):
    text = json.dumps({"A0xAXXysHUo": {}, video_id: {
        "E_000001_000002": {"event": 1, "timestamps": [[1.0, 2.0]], "segments": None}}}, indent=1)
    with pytest.raises(FormatError, match="video id") as e:
        parse_annotations(text, "ann.json")
    assert e.value.path == "ann.json"
    assert e.value.line == 3  # the line of the bad key
    assert repr(video_id) in str(e.value)
