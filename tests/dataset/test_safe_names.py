"""Names built from video and unit ids stay inside their folder, whatever the id holds."""

import os
import posixpath

import pytest
from hypothesis import given, settings, strategies as st

from finegym_ray.dataset.keys import check_video_id, parse_instance_key, safe_name

HOSTILE = ["../../escaped/evil", "..", ".", "", "a/b", "/etc/passwd", "a\\..\\b", "x\x00y", "..hidden",
           "ok/../..", "C:\\evil", "//server/share", "a/", "/"]


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_name_refuses_names_that_could_leave_the_folder(name):
    with pytest.raises(ValueError, match="file name"):
        safe_name("/data/out/errors", name, ".json")


@pytest.mark.parametrize("folder", ["/data/out/errors", "/data/out/errors/", "out/errors", "s3://bucket/out/errors",
                                    "file:///data/out/errors"])
def test_safe_name_is_a_direct_child_in_every_uri_style(folder):
    uri = safe_name(folder, "A0xAXXysHUo-0123456789ab", ".json")
    assert uri == folder.rstrip("/") + "/A0xAXXysHUo-0123456789ab.json"


def test_safe_name_refuses_a_hostile_suffix():
    with pytest.raises(ValueError, match="file name"):
        safe_name("/data/out", "ok", "/../x")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40),
                 st.lists(st.sampled_from(["..", ".", "/", "\\", "\x00", "a", "_", "-", "E"]), max_size=12)
                 .map("".join)),
       st.sampled_from(["", ".json", ".parquet"]))
def test_safe_name_never_leaves_its_folder(name, suffix):
    folder = "/data/out/errors"
    try:
        uri = safe_name(folder, name, suffix)
    except ValueError:
        return
    # Accepted: one path component directly below the folder, for POSIX and for S3 keys.
    assert posixpath.dirname(uri) == folder
    assert posixpath.normpath(uri) == uri
    assert os.path.dirname(os.path.normpath(uri)) == folder
    assert "\x00" not in uri and "\\" not in uri


@pytest.mark.parametrize("vid", ["A0xAXXysHUo", "x_-Yz9_Ab-Q", "-0ZMwLrDe0s", "v", "vid-B", "a" * 64])
def test_video_ids_of_the_documented_grammar_pass(vid):
    assert check_video_id(vid) == vid


@pytest.mark.parametrize("vid", ["../../escaped/evil", "", ".", "..", "a.b", "a/b", "a b", "a\x00", "é",
                                 "a" * 65, 5, None])
def test_other_video_ids_are_refused(vid):
    with pytest.raises(ValueError, match="video id"):
        check_video_id(vid)


def test_instance_keys_with_a_path_for_a_video_id_do_not_parse():
    with pytest.raises(ValueError, match="instance key"):
        parse_instance_key("../../x_E_002184_002237_A_0035_0036")
