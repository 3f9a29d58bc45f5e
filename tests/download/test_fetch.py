"""`finegym-ray download`'s parts without Ray: reason classes, the failures file, which ids,
which files count as there, and one video at a time through yt-dlp's generic extractor
from a local server (tests/support/mirror.py), no internet."""

import csv
import os
import shutil
import socket
import time

import pytest

from finegym_ray.dataset.manifest import build_manifest_from
from finegym_ray.download import failures
from finegym_ray.download.fetch import (
    DEFAULT_FORMAT,
    DOWNLOADED,
    FAILED,
    PARTIAL,
    FetchSettings,
    cookie_values,
    fetch_video,
    parse_rate,
    read_cookies,
    redact_url,
    remove_abandoned_attempts,
    whole_problem,
)
from finegym_ray.download.plan import present, read_ids, select_ids
from finegym_ray.errors import InputError
from finegym_ray.video.files import find_videos
from tests.support import mirror
from tests.support.media import write_video

yt_dlp = pytest.importorskip("yt_dlp", reason="yt-dlp is not installed (pip install -e '.[test]' brings it)")


@pytest.mark.parametrize("message, expect", [
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", "private"),
    ("ERROR: [youtube] abc: Video unavailable. This video is private", "private"),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", "removed"),
    ("ERROR: [youtube] abc: This video has been removed for violating YouTube's Terms of Service", "removed"),
    ("ERROR: [youtube] abc: Video unavailable. This video is no longer available because the YouTube account "
     "associated with this video has been terminated.", "removed"),
    ("ERROR: [youtube] abc: Video unavailable. This video is no longer available due to a copyright claim by X",
     "removed"),
    ("ERROR: [youtube] abc: Video unavailable. The uploader has not made this video available in your country",
     "unavailable"),
    ("ERROR: [youtube] abc: Video unavailable. This video contains content from X, who has blocked it in your "
     "country on copyright grounds", "unavailable"),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.",
     "unavailable"),
    ("ERROR: [youtube] abc: Video unavailable", "unavailable"),
    ("ERROR: [generic] abc: Unable to download webpage: HTTP Error 404: File not found", "unavailable"),
    ("ERROR: [youtube] abc: Sign in to confirm you’re not a bot. Use --cookies", "network"),
    ("ERROR: \r[download] Got error: HTTPConnectionPool(host='x', port=1): Read timed out.. Giving up", "network"),
    ("ERROR: [generic] abc: Unable to download webpage: HTTP Error 503: Service Unavailable", "network"),
    ("ERROR: [download] Got error: 2995 bytes read, 2996 more expected. Giving up after 1 retries", "network"),
    ("ERROR: [youtube] abc: Requested format is not available. Use --list-formats", "other"),
    ("ERROR: Unsupported URL: http://x/abc", "other"),
])
def test_failure_reasons_fall_in_their_classes(message, expect):
    assert failures.classify(failures.one_line(message)) == expect


def _format(fid, ext, vcodec, acodec, height):
    return {"format_id": fid, "ext": ext, "vcodec": vcodec, "acodec": acodec, "height": height,
            "url": f"https://example.invalid/{fid}", "protocol": "https"}


def test_the_default_format_is_h264_mp4_at_720p_where_youtube_offers_it():
    # YouTube's usual offer today: progressive 360p (18), video-only 720p in H.264 (136),
    # VP9 (247) and AV1 (398), audio alone (140); older videos still have 720p progressive (22).
    offer = [_format("18", "mp4", "avc1.42001E", "mp4a.40.2", 360), _format("136", "mp4", "avc1.4d401f", "none", 720),
             _format("247", "webm", "vp9", "none", 720), _format("140", "m4a", "none", "mp4a.40.2", None),
             _format("398", "mp4", "av01.0.05M.08", "none", 720)]
    with yt_dlp.YoutubeDL({"quiet": True}) as ydl:
        select = ydl.build_format_selector(DEFAULT_FORMAT)

        def chosen(formats):
            return [f["format_id"] for f in select({"formats": formats, "has_merged_format": False,
                                                    "incomplete_formats": False})]

        assert chosen(offer) == ["136"]
        assert chosen([*offer, _format("22", "mp4", "avc1.64001F", "mp4a.40.2", 720)]) == ["22"]
        assert chosen([f for f in offer if f["format_id"] != "136"]) == ["18"]
        assert chosen([_format("43", "webm", "vp8", "vorbis", 360)]) == ["43"]


def test_the_failures_file_keeps_one_row_per_id_and_goes_when_empty(tmp_path):
    out = str(tmp_path)
    rows = {"b": failures.failure_row("b", "ERROR: [youtube] b: Video unavailable\nsecond line", at=0),
            "a": failures.failure_row("a", "timed out", reason_class=failures.NETWORK, at=0)}
    failures.write_failures(out, rows)
    read = list(csv.DictReader(open(failures.failures_uri(out))))
    assert [r["video_id"] for r in read] == ["a", "b"]
    assert read[1] == {"video_id": "b", "reason_class": "unavailable", "reason": "[youtube] b: Video unavailable "
                       "second line", "failed_at": "1970-01-01T00:00:00Z"}
    assert failures.read_failures(out) == {r["video_id"]: r for r in read}
    failures.write_failures(out, {})
    assert not os.path.exists(failures.failures_uri(out))


def test_rates_read_as_yt_dlp_reads_them():
    assert (parse_rate("500K"), parse_rate("4.2M"), parse_rate("1G"), parse_rate("100")) == (
        500 * 1024, int(4.2 * 1024 ** 2), 1024 ** 3, 100)
    for bad in ("fast", "-1K", "0"):
        with pytest.raises(InputError, match="--rate-limit"):
            parse_rate(bad)


def test_the_ids_of_a_subset_and_split_of_a_list_and_of_everything(tiny_gym, tmp_path):
    manifest = build_manifest_from(str(tiny_gym / "annotations"))
    rows = manifest.subactions.to_pylist()
    every = sorted({r["video_id"] for r in manifest.events.to_pylist()})
    assert select_ids(manifest) == every
    assert select_ids(manifest, subset="gym99", split="val") == sorted(
        {r["video_id"] for r in rows if r["gym99_split"] == "val"})
    assert select_ids(manifest, split="train") == sorted({r["video_id"] for r in rows if r["split"] == "train"})
    with pytest.raises(InputError, match="no gym42 split files.*gym99"):
        select_ids(manifest, subset="gym42")
    with pytest.raises(InputError, match="no labelled key of gym99 test"):
        select_ids(manifest, subset="gym99", split="test")
    listed = tmp_path / "ids.txt"
    listed.write_text("# dead ones\nabc_DEF-123\n\nxyz  # again below\nabc_DEF-123\n")
    assert read_ids(str(listed)) == ["abc_DEF-123", "xyz"]
    listed.write_text("ok\n../etc/passwd\n")
    with pytest.raises(InputError, match="line 2"):
        read_ids(str(listed))


def test_only_a_whole_file_counts_as_there(tmp_path):
    """A whole file is kept; a cut one is not (fetched again); yt-dlp's .part file and
    anything in the hidden partial folder are not videos at all."""
    out = tmp_path / "videos"
    out.mkdir()
    whole = write_video(out / "whole_vid.mp4", rate=25, num_frames=100, faststart=True)
    data = whole.read_bytes()
    (out / "cut_vid.mp4").write_bytes(data[: len(data) * 8 // 10])
    (out / "part_vid.mp4.part").write_bytes(data)
    (out / PARTIAL / "host-1-hidden_vid-x").mkdir(parents=True)
    (out / PARTIAL / "host-1-hidden_vid-x" / "hidden_vid.mp4").write_bytes(data)
    assert set(find_videos(str(out))) == {"whole_vid", "cut_vid"}
    ids = ["whole_vid", "cut_vid", "part_vid", "hidden_vid"]
    there, broken = present(str(out), ids, {"whole_vid": 3.0, "cut_vid": 1.0})
    assert there == {"whole_vid": str(out / "whole_vid.mp4")}
    assert list(broken) == ["cut_vid"] and "no frame decodes" in broken["cut_vid"][1]


def test_attempt_folders_of_processes_that_are_gone_are_removed(tmp_path):
    gone = tmp_path / f"{socket.gethostname()}-999999999-vid-abcd"
    mine = tmp_path / f"{socket.gethostname()}-{os.getpid()}-vid-abcd"
    elsewhere = tmp_path / "otherhost-999999999-vid-abcd"
    for folder in (gone, mine, elsewhere):
        folder.mkdir()
    assert remove_abandoned_attempts(str(tmp_path)) == [str(gone)]
    assert mine.exists() and elsewhere.exists()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A mirror of four copies of one 4 s video (faststart, so that half of it still
    opens and only the probe tells it is cut)."""
    folder = tmp_path_factory.mktemp("mirror")
    write_video(folder / "good_video1.mp4", rate=25, num_frames=100, faststart=True)
    for name in ("cut_once_01", "cut_always1", "no_length01", "stalled_001"):
        shutil.copy(folder / "good_video1.mp4", folder / f"{name}.mp4")
    with mirror.serve(folder, stall_s=10.0) as m:
        m.behave.update({"cut_once_01": mirror.CUT_ONCE, "cut_always1": mirror.CUT_ALWAYS,
                         "no_length01": mirror.NO_LENGTH, "stalled_001": mirror.STALL})
        yield m


def _no_leftovers(out):
    assert not os.path.exists(os.path.join(out, PARTIAL)), os.listdir(os.path.join(out, PARTIAL))
    assert not [f for f in os.listdir(out) if f.endswith(".part")]


def test_a_video_arrives_whole_or_not_at_all(served, tmp_path):
    out = str(tmp_path)
    settings = FetchSettings(url_template=served.template(), retries=2, timeout_s=5)
    got = fetch_video("good_video1", out, settings, annotated_end_s=3.5)
    assert got.status == DOWNLOADED and got.uri == os.path.join(out, "good_video1.mp4") and got.size > 0
    assert whole_problem(got.uri, "good_video1", 3.5) == ""
    # A connection cut mid-file resumes with a range request and the file is whole.
    healed = fetch_video("cut_once_01", out, settings)
    assert healed.status == DOWNLOADED and whole_problem(healed.uri, "cut_once_01", 0.0) == ""
    assert any(vid == "cut_once_01" and rng for vid, rng, _ in served.requests)
    # A 404 and a connection that always breaks off: recorded with yt-dlp's reason, no file.
    gone = fetch_video("missing_404", out, settings)
    assert (gone.status, gone.reason_class) == (FAILED, "unavailable") and "HTTP Error 404" in gone.reason
    cut = fetch_video("cut_always1", out, settings)
    assert (cut.status, cut.reason_class) == (FAILED, "network"), cut
    # Cut short without a length: yt-dlp takes it for whole, the probe does not.
    short = fetch_video("no_length01", out, settings, annotated_end_s=1.0)
    assert (short.status, short.reason_class) == (FAILED, "other") and "not a whole video" in short.reason
    assert sorted(os.listdir(out)) == ["cut_once_01.mp4", "good_video1.mp4"]
    _no_leftovers(out)


def test_a_broken_file_there_is_replaced_by_a_whole_one(served, tmp_path):
    broken = tmp_path / "good_video1.mkv"
    broken.write_bytes(b"\x00" * 100)
    got = fetch_video("good_video1", str(tmp_path), FetchSettings(url_template=served.template()),
                      replaces=str(broken))
    assert got.status == DOWNLOADED and sorted(os.listdir(tmp_path)) == ["good_video1.mp4"]


def test_a_silent_server_times_out_and_the_rate_limit_slows_the_download(served, tmp_path):
    t0 = time.monotonic()
    stalled = fetch_video("stalled_001", str(tmp_path), FetchSettings(url_template=served.template(), retries=0,
                                                                      timeout_s=0.5))
    assert (stalled.status, stalled.reason_class) == (FAILED, "network") and "timed out" in stalled.reason
    assert time.monotonic() - t0 < 8  # the timeout, not the server's 10 s of silence
    size = os.path.getsize(served.folder / "good_video1.mp4")
    rate = size // 2  # bytes per second: about 2 s for the file
    t0 = time.monotonic()
    slow = fetch_video("good_video1", str(tmp_path), FetchSettings(url_template=served.template(), rate_limit=rate))
    assert slow.status == DOWNLOADED and time.monotonic() - t0 > 1.0
    _no_leftovers(str(tmp_path))


def test_cookies_reach_the_server_and_credentials_no_message(served, tmp_path):
    value = "cookie-value-7f3a9c1e55"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\t{value}\n")
    settings = FetchSettings(url_template=served.template(), cookies=read_cookies(str(cookies)),
                             proxy="http://alice:hunter2-secret@127.0.0.1:9")
    assert cookie_values(settings.cookies) == [value]
    assert value not in repr(settings) and "hunter2" not in repr(settings) + str(settings.record())
    assert settings.record()["proxy"] == "http://***@127.0.0.1:9"
    # Through a proxy that is not there: a network failure whose reason names no secret.
    failed = fetch_video("good_video1", str(tmp_path / "out"), settings)
    assert failed.status == FAILED and "hunter2" not in failed.reason and "alice" not in failed.reason
    direct = FetchSettings(url_template=served.template(), cookies=settings.cookies)
    assert fetch_video("good_video1", str(tmp_path / "out"), direct).status == DOWNLOADED
    assert any(cookie and value in cookie for vid, _, cookie in served.requests if vid == "good_video1")
    assert redact_url("socks5://u:p@h:1080") == "socks5://***@h:1080"
    cookies.write_text(f"127.0.0.1 FALSE / FALSE 0 SID {value}\n")  # spaces, not tabs
    with pytest.raises(InputError, match="line 1 is not a Netscape cookie line") as refused:
        read_cookies(str(cookies))
    assert value not in str(refused.value)
