"""`finegym-ray download` as a command: its refusals (no Ray), and one run on the session's
Ray killed with SIGKILL mid-download, then the same command again, against a local mirror
(tests/support/mirror.py) with a 404, a connection that always breaks off and a cookie."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from finegym_ray.cli import main
from finegym_ray.download.failures import failures_uri
from finegym_ray.download.fetch import PARTIAL, whole_problem
from finegym_ray.store import summary_uri
from tests.support import mirror
from tests.support.output import assert_no_ray_internals

needs_yt_dlp = pytest.mark.skipif(
    __import__("importlib").util.find_spec("yt_dlp") is None,
    reason="yt-dlp is not installed (pip install -e '.[test]' brings it)")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finegym-ray: error: "), err
    return err[0]


def test_without_yt_dlp_the_command_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # importing it fails, as when it is not installed
    assert main(["download", "--annotations", str(tmp_path), "--out", str(tmp_path / "v")]) == 2
    assert "pip install 'finegym-ray[download]'" in _error_line(capsys)


@needs_yt_dlp
def test_bad_download_options_are_refused_before_ray(capsys, tmp_path, tiny_gym):
    annotations = str(tiny_gym / "annotations")
    base = ["download", "--annotations", annotations, "--out", str(tmp_path / "v")]
    (tmp_path / "ids.txt").write_text("abc\n")
    assert main([*base, "--ids", str(tmp_path / "ids.txt"), "--subset", "gym99"]) == 2
    assert "two ways" in _error_line(capsys)
    assert main([*base, "--url-template", "http://mirror.example/video.mp4"]) == 2
    assert "must hold {id}" in _error_line(capsys)
    assert main([*base, "--url-template", "http://u:pw123456@mirror.example/{id}.mp4", "--retries", "-1"]) == 2
    assert "--retries" in _error_line(capsys)
    (tmp_path / "cookies.txt").write_text("not a cookie line secret-value-123\n")
    assert main([*base, "--cookies", str(tmp_path / "cookies.txt")]) == 2
    line = _error_line(capsys)
    assert "line 1" in line and "secret-value-123" not in line
    assert main([*base, "--subset", "gym99", "--split", "test"]) == 2
    assert "no labelled key of gym99 test" in _error_line(capsys)
    with pytest.raises(SystemExit) as e:
        main([*base, "--concurrency", "0"])
    assert e.value.code == 2


@needs_yt_dlp
def test_a_download_to_s3_is_uploaded_whole_and_then_counts_as_there(s3_prefix, tmp_path):
    from finegym_ray import storage
    from finegym_ray.download.fetch import DOWNLOADED, FetchSettings, fetch_video, partial_root
    from finegym_ray.download.plan import present
    from tests.support.media import write_video

    write_video(tmp_path / "s3_video_01.mp4", rate=25, num_frames=100, faststart=True)
    with mirror.serve(tmp_path) as m:
        got = fetch_video("s3_video_01", s3_prefix, FetchSettings(url_template=m.template()), annotated_end_s=3.0)
    assert got.status == DOWNLOADED and got.uri == f"{s3_prefix}/s3_video_01.mp4"
    assert storage.read_bytes(got.uri) == (tmp_path / "s3_video_01.mp4").read_bytes()
    assert present(s3_prefix, ["s3_video_01", "other_video"], {}) == ({"s3_video_01": got.uri}, {})
    assert not os.path.exists(partial_root(s3_prefix))  # the local copy is gone once uploaded


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", "download", *args]


def _wait_for(condition, proc: subprocess.Popen, log, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {log.read_text()[-3000:]}"
        time.sleep(0.2)


@needs_yt_dlp
@pytest.mark.e2e
def test_killed_mid_download_the_same_command_finishes_with_every_file_whole(ray_cluster, tiny_gym, tmp_path):
    videos = tiny_gym / "videos"
    real = sorted(p.stem for p in videos.glob("*.mp4"))
    served = tmp_path / "served"
    served.mkdir()
    for vid in real:
        os.symlink(videos / f"{vid}.mp4", served / f"{vid}.mp4")
    os.symlink(videos / f"{real[0]}.mp4", served / "cut_always1.mp4")
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([real[0], real[1], "gone_404_01", real[2], "cut_always1"]) + "\n")
    cookie = "cookie-value-e2e-5d1f0a"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\t{cookie}\n")
    out = tmp_path / "out"
    with mirror.serve(served, trickle_s=0.3) as m:
        # The first video comes slowly (about 10 s): the kill falls in the middle of it.
        m.behave.update({real[0]: mirror.TRICKLE, "cut_always1": mirror.CUT_ALWAYS})
        args = ["--annotations", str(tiny_gym / "annotations"), "--ids", str(ids), "--out", str(out),
                "--url-template", m.template(), "--pause", "0", "--retries", "1", "--timeout", "5",
                "--cookies", str(cookies), "--address", ray_cluster.address]
        with open(tmp_path / "first.log", "w") as log:
            first = subprocess.Popen(_command(args), stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: (out / f"{real[1]}.mp4").exists()
                      and any(name.endswith(".part") for _, _, names in os.walk(out / PARTIAL) for name in names),
                      first, tmp_path / "first.log", 120, "one video whole and another one's .part")
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        # What a kill leaves under a video's name is whole: the cut one is only in the hidden folder.
        assert not (out / f"{real[0]}.mp4").exists()
        assert all(whole_problem(str(p), p.stem, 0.0) == "" for p in out.glob("*.mp4"))

        m.behave.pop(real[0])
        second = subprocess.run(_command(args), capture_output=True, text=True, timeout=300)
    text = second.stdout + second.stderr
    assert second.returncode == 1, text  # two of the asked videos cannot be had
    assert "taking over the lease of a job that is gone" in text
    assert "3 of 5 asked videos are there (60.0 %); 2 missing (1 unavailable, 1 network)" in text, text
    assert "videos/s" in text and "gym99" in text
    assert_no_ray_internals(text)
    assert sorted(p.stem for p in out.glob("*.mp4")) == real
    assert all(whole_problem(str(out / f"{vid}.mp4"), vid, 0.0) == "" for vid in real)
    rows = {r["video_id"]: r for r in csv.DictReader(open(failures_uri(str(out))))}
    assert {vid: r["reason_class"] for vid, r in rows.items()} == {"gone_404_01": "unavailable",
                                                                  "cut_always1": "network"}
    assert "HTTP Error 404" in rows["gone_404_01"]["reason"]
    summary = json.loads(open(summary_uri(str(out))).read())
    assert (summary["asked"], summary["there"], summary["missing_by_class"]) == (
        5, 3, {"unavailable": 1, "network": 1})
    assert summary["runs"][-1]["settings"]["cookies"] is True
    # The cookie went to the server and nowhere else: not printed, not in any file of the output.
    assert any(c and cookie in c for _, _, c in m.requests)
    assert cookie not in text + (tmp_path / "first.log").read_text()
    for folder, _, names in os.walk(out):
        for name in names:
            assert cookie.encode() not in open(os.path.join(folder, name), "rb").read(), name
