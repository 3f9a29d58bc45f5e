"""The preprocessing job on a real Ray cluster: output, resume, kills, bad videos, S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from finegym_ray import storage
from finegym_ray.cli.preprocess import preprocess_exit_code
from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.manifest import build_manifest_from
from finegym_ray.preprocess.pipeline import format_summary, run_preprocess
from finegym_ray.video import WindowDecoder
from finegym_ray.video_job import rows_as_done
from tests.support.clips import TINY_PREPROCESS as CONFIG, row_digests, shards
from tests.support.hostile import WritesMarker as _WritesMarker
from tests.support.processes import own_pids_with
from tests.support.s3 import restart_when

OVERRIDES = ["short_side=64", "unit_seconds=4", "workers=2"]


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="session")
def reference(tiny_store) -> tuple[str, dict]:
    """An uninterrupted run: (output folder, its summary)."""
    return tiny_store


def test_a_video_id_that_is_a_path_writes_nothing_outside_out(tmp_path):
    """Issue 15's reproduction: an error record for video ``../../escaped/evil`` landed
    outside --out. Now the annotations are refused before anything is written."""
    ann = tmp_path / "in" / "ann.json"
    ann.parent.mkdir()
    event = {"event": 2, "timestamps": [[10.0, 20.0]],
             "segments": {"A_0001_0002": {"stages": 1, "timestamps": [[1.0, 2.5]]}}}
    ann.write_text(json.dumps({"A0xAXXysHUo": {"E_000010_000020": event},
                               "../../escaped/evil": {"E_000010_000020": event}}, indent=1))
    videos = tmp_path / "in" / "videos"
    videos.mkdir()
    out = tmp_path / "jobs" / "out"
    refused = None
    try:
        run_preprocess(CONFIG, str(ann), str(videos), str(out), say=quiet)
    except FormatError as e:
        refused = e
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents and p != ann]
    assert outside == []
    assert refused is not None and refused.path == str(ann) and "'../../escaped/evil'" in str(refused)
    assert not out.exists()  # refused before the first write


def test_shard_and_error_names_cannot_leave_their_folders(tmp_path):
    from finegym_ray.store import error_uri, shard_uri

    out = str(tmp_path / "out")
    assert error_uri(out, "A0xAXXysHUo-0123456789ab") == f"{out}/errors/A0xAXXysHUo-0123456789ab.json"
    assert shard_uri(out, "A0xAXXysHUo-0123456789ab") == f"{out}/clips/A0xAXXysHUo-0123456789ab.parquet"
    for hostile in ("../../escaped/evil-0123456789ab", "/abs", "..", ""):
        with pytest.raises(ValueError):
            error_uri(out, hostile)
        with pytest.raises(ValueError):
            shard_uri(out, hostile)


def test_every_clip_once_frame_exact_and_readable_with_plain_pyarrow(reference, tiny_gym):
    out, summary = reference
    manifest = build_manifest_from(str(tiny_gym / "annotations"))
    table = pq.read_table(os.path.join(out, "clips"))  # a folder of shards, read as one table
    digests = row_digests(table)
    assert sorted(digests) == sorted(manifest.subactions.column("key").to_pylist())
    assert summary["units"] == {"planned": len(shards(out)), "skipped": 0, "done": len(shards(out)), "failed": 0}
    assert summary["clips"] == {"written": table.num_rows, "failed": 0}
    assert summary["frames"] == sum(table.column("num_frames").to_pylist())
    written = json.loads(Path(out, "summary.json").read_text())
    assert written["totals"] == summary["totals"] and written["output"] == summary["output"]
    whole = ("output", "totals", "coverage", "missing_clips")
    assert all(written[k] == summary[k] for k in whole)
    assert written["runs"][-1] == {**{k: v for k, v in summary.items() if k not in whole},
                                   "finished_at": written["runs"][-1]["finished_at"]}
    # Every labelled key of every sub-action task has its clip (no routines cut: no event task).
    assert {r["task"] for r in summary["coverage"]} == {"gym99", "gym288", "gym530", "set"}
    assert all(r["present"] == r["labelled"] > 0 for r in summary["coverage"]) and summary["missing_clips"] == {}
    assert summary["totals"]["clips"] == table.num_rows and summary["totals"]["frames"] == summary["frames"]
    assert json.loads(Path(out, "preprocess.json").read_text())["hash"] == summary["config_hash"]
    assert Path(out, "manifest", "subactions.parquet").exists()
    # Frame counts equal the frames whose time falls in [start, end), per the decoder's index.
    rows = table.to_pylist()
    for row in rows[:: max(len(rows) // 6, 1)]:
        with WindowDecoder(tiny_gym / "videos" / f"{row['video_id']}.mp4", short_side=None) as dec:
            assert row["num_frames"] == len(dec.select(row["start_s"], row["end_s"]))
            assert len(row["flow_x"]) == row["num_frames"] - 1


def test_rerun_skips_everything_and_changes_nothing(reference, tiny_gym):
    out, first = reference
    before = {p: os.stat(os.path.join(out, "clips", p)).st_mtime_ns for p in shards(out)}
    runs_before = json.loads(Path(out, "summary.json").read_text())["runs"]
    summary = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), out, say=quiet)
    assert summary["units"]["skipped"] == len(before) and summary["units"]["done"] == 0
    assert {p: os.stat(os.path.join(out, "clips", p)).st_mtime_ns for p in shards(out)} == before
    # summary.json describes the whole output, not the rerun that cut nothing, and keeps
    # each run's own figures.
    table = pq.read_table(os.path.join(out, "clips"), columns=["num_frames", "start_s", "end_s"])
    written = json.loads(Path(out, "summary.json").read_text())
    assert written["totals"] == {"units_planned": len(before), "units_with_clips": len(before),
                                 "clips_planned": table.num_rows, "clips": table.num_rows,
                                 "frames": sum(table.column("num_frames").to_pylist()),
                                 "video_seconds": pytest.approx(sum(e - s for s, e in zip(
                                     table.column("start_s").to_pylist(), table.column("end_s").to_pylist())),
                                     abs=0.01)}
    assert written["runs"][:-1] == runs_before  # the history kept, this run's figures added
    assert written["runs"][-1]["units"]["done"] == 0 and written["runs"][-1]["clips"]["written"] == 0
    assert f"of {table.num_rows} planned clips on disk" in format_summary(summary)


@pytest.mark.e2e
def test_damaged_or_stale_shards_and_abandoned_temp_files_are_cut_again(reference, tiny_gym, tmp_path):
    ref_out, ref_summary = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    names = shards(str(out))
    truncated, stale, foreign = (out / "clips" / n for n in names[:3])
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    # A complete shard that holds something other than its unit: the fingerprint says so.
    table = pq.read_table(stale)
    pq.write_table(table.replace_schema_metadata({b"finegym_ray.unit_fingerprint": b"0" * 64}), stale)
    pq.write_table(table.replace_schema_metadata({}), foreign)  # no fingerprint at all
    old_temp, young_temp = (out / "clips" / f".{n}.tmp-{'0' * 31}{i}" for i, n in enumerate(names[3:5]))
    for temp in (old_temp, young_temp):
        temp.write_bytes(b"half a shard")
    os.utime(old_temp, (time.time() - 3600, time.time() - 3600))
    said = []
    summary = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out),
                             say=said.append)
    assert summary["units"]["done"] == 3 and summary["units"]["skipped"] == ref_summary["units"]["planned"] - 3
    assert summary["recut"] == {"unreadable (not complete Parquet)": 1, "made for other windows or settings": 1,
                                "without a fingerprint (an older version)": 1}
    assert sum("cutting 1 unit(s) again" in m for m in said) == 3, said
    assert any("removed 1 temporary file" in m for m in said), said
    assert not old_temp.exists() and young_temp.exists()  # a young one may be another writer's
    assert row_digests(pq.read_table(out / "clips")) == row_digests(pq.read_table(os.path.join(ref_out, "clips")))


def test_planning_reads_only_footers(reference, tiny_gym):
    from finegym_ray.preprocess.config import config_hash
    from finegym_ray.preprocess.pipeline import plan, verify_shards

    out, _ = reference
    units = plan(CONFIG, build_manifest_from(str(tiny_gym / "annotations")))
    done, redo = verify_shards(out, units, config_hash(CONFIG))
    assert done == {u.unit_id for u in units} and redo == {}
    done, redo = verify_shards(out, units, config_hash(replace(CONFIG, jpeg_quality=50)))
    assert done == set() and sum(len(v) for v in redo.values()) == len(units)


def test_other_settings_or_a_changed_plan_are_refused(reference, tiny_gym, tmp_path):
    out, _ = reference
    with pytest.raises(ValueError, match="other settings.*flow"):
        run_preprocess(replace(CONFIG, flow="farneback"), str(tiny_gym / "annotations"), str(tiny_gym / "videos"),
                       out, say=quiet)
    copy = str(tmp_path / "out")
    shutil.copytree(out, copy)
    with pytest.raises(ValueError, match="--prune"):
        run_preprocess(replace(CONFIG, unit_seconds=30.0), str(tiny_gym / "annotations"), str(tiny_gym / "videos"),
                       copy, say=quiet)


def _contents(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_a_refused_rerun_changes_nothing_in_out(reference, ray_cluster, tiny_gym, tmp_path):
    """A rerun whose plan lacks units the output has (other annotations) is refused,
    asking for --prune, and leaves every file as it was: the manifest too, which training
    would otherwise read. With --prune it deletes those units' shards and cuts nothing."""
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    annotations = tmp_path / "annotations"
    shutil.copytree(tiny_gym / "annotations", annotations)
    info = annotations / "finegym_annotation_info_v1.1.json"
    videos = json.loads(info.read_text())
    dropped = sorted(videos)[0]
    info.write_text(json.dumps({v: events for v, events in videos.items() if v != dropped}))
    before = _contents(out)
    r = subprocess.run(_cli(ray_cluster, annotations, tiny_gym / "videos", out), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "--prune" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    assert _contents(out) == before

    summary = run_preprocess(CONFIG, str(annotations), str(tiny_gym / "videos"), str(out), prune=True, say=quiet)
    assert summary["units"]["done"] == 0 and summary["units"]["skipped"] == len(shards(str(out)))
    assert not any(name.startswith(f"{dropped}-") for name in shards(str(out)))
    manifest = pq.read_table(out / "manifest" / "subactions.parquet", columns=["video_id"])
    assert set(manifest.column("video_id").to_pylist()) == set(videos) - {dropped}


def _cli(cluster, annotations, videos, out, *extra) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", "preprocess", "--annotations", str(annotations),
            "--videos", str(videos), "--out", str(out), "--address", cluster.address,
            *[a for o in OVERRIDES for a in ("--set", o)], *extra]


def _wait_for_first_shard(proc: subprocess.Popen, out: Path, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (out / "clips").exists() and shards(str(out)):
            return len(shards(str(out)))
        assert proc.poll() is None, f"the job ended before writing a shard: {proc.communicate()}"
        time.sleep(0.02)
    raise AssertionError("no shard written in time")


@pytest.mark.e2e
def test_killed_driver_then_rerun_gives_the_uninterrupted_output(reference, ray_cluster, tiny_gym, tmp_path):
    ref_out, ref_summary = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(ray_cluster, tiny_gym / "annotations", tiny_gym / "videos", out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = _wait_for_first_shard(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert written < ref_summary["units"]["planned"], "the kill came too late to test anything"
    rerun = subprocess.run(_cli(ray_cluster, tiny_gym / "annotations", tiny_gym / "videos", out),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "skipped" in rerun.stdout
    for name in shards(str(out)):
        pq.read_metadata(out / "clips" / name)  # no partial file under a shard's name
    assert row_digests(pq.read_table(out / "clips")) == row_digests(pq.read_table(os.path.join(ref_out, "clips")))


@pytest.mark.e2e
def test_killed_worker_is_replaced_and_no_clip_is_lost(reference, ray_cluster, tiny_gym, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(ray_cluster, tiny_gym / "annotations", tiny_gym / "videos", out),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_first_shard(proc, out)
    workers = own_pids_with("MapWorker(MapBatches(CutUnits))")
    assert workers, "found no preprocessing actor to kill"
    os.kill(workers[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-2000:]
    assert row_digests(pq.read_table(out / "clips")) == row_digests(pq.read_table(os.path.join(ref_out, "clips")))


@pytest.mark.e2e
def test_bad_videos_are_recorded_and_the_job_goes_on(ray_cluster, tiny_gym, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(tiny_gym / "videos", videos)
    names = sorted(p.name for p in videos.iterdir())
    data = (videos / names[0]).read_bytes()
    (videos / names[0]).write_bytes(data[: len(data) // 3])  # truncated download
    (videos / names[1]).unlink()  # never downloaded
    out = tmp_path / "out"
    summary = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(videos), str(out), say=quiet)
    records = [json.loads(p.read_text()) for p in sorted((out / "errors").iterdir())]
    by_video = {}
    for r in records:
        by_video.setdefault(r["video_id"], []).append(r)
    assert set(by_video) == {names[0][:-4], names[1][:-4]}
    assert all("truncated" in r["reason"] or "corrupt" in r["reason"] for r in by_video[names[0][:-4]])
    assert all("no video file" in r["reason"] for r in by_video[names[1][:-4]])
    good = pq.read_table(out / "clips")
    assert set(good.column("video_id").to_pylist()) == {names[2][:-4]}
    assert summary["units"]["failed"] == len(records) and summary["units"]["done"] == len(shards(str(out)))
    assert summary["clips"]["failed"] == sum(len(r["keys"]) for r in records)
    # What that costs per task and split: only the keys of the good video have clips.
    from finegym_ray.dataset.coverage import task_labels

    manifest = build_manifest_from(str(tiny_gym / "annotations"))
    gym99 = task_labels("gym99", subactions=manifest.subactions, events=manifest.events,
                        categories=manifest.categories)
    cut = set(good.column("key").to_pylist())
    assert {r["split"]: (r["labelled"], r["present"]) for r in summary["coverage"] if r["task"] == "gym99"} == {
        split: (len(keys), len(cut & set(keys))) for split, keys in gym99.items()}
    lost = {vid: sum(len(r["keys"]) for r in by_video[vid[:-4]]) for vid in names[:2]}
    assert summary["missing_clips"] == {"failed unit": lost[names[0]], "no video": lost[names[1]]}
    assert "labelled keys with a clip on disk" in format_summary(summary) and "no video" in format_summary(summary)
    assert preprocess_exit_code(summary, strict=False) == 0
    assert preprocess_exit_code(summary, strict=True) == 1
    # The same command again retries only the two failed units, and fails them again: the
    # exit code describes the output over the whole plan, so it does not change.
    again = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(videos), str(out), say=quiet)
    assert again["units"]["done"] == 0 and again["units"]["skipped"] == summary["units"]["done"]
    assert preprocess_exit_code(again, strict=False) == 0
    assert preprocess_exit_code(again, strict=True) == 1

    # Every video broken: the job fails.
    (videos / names[2]).write_bytes(b"not a video")
    everything_bad = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(videos), str(tmp_path / "out2"),
                                    say=quiet)
    assert everything_bad["units"]["done"] == 0 and preprocess_exit_code(everything_bad, strict=False) == 1


@pytest.mark.e2e
def test_two_jobs_started_together_on_a_fresh_out_one_writes_and_the_other_is_refused(ray_cluster, reference,
                                                                                        tiny_gym, tmp_path):
    from finegym_ray.preprocess.config import config_hash
    from finegym_ray.preprocess.pipeline import plan, verify_shards

    out = tmp_path / "out"
    # Two plans of the same settings, each allowed to prune the other's shards: together
    # they would leave every clip twice, in shards of both plans.
    unit_seconds = (4, 8)
    procs = [subprocess.Popen(_cli(ray_cluster, tiny_gym / "annotations", tiny_gym / "videos", out, "--prune",
                                   "--set", f"unit_seconds={u}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for u in unit_seconds]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], [o[1][-2000:] for o in outputs]
    loser = outputs[codes.index(2)][1]
    assert "is being written by another job" in loser and "--break-lease" in loser, loser[-2000:]
    winner = replace(CONFIG, unit_seconds=float(unit_seconds[codes.index(0)]))
    units = plan(winner, build_manifest_from(str(tiny_gym / "annotations")))
    done, redo = verify_shards(str(out), units, config_hash(winner))
    assert len(done) == len(units) and redo == {}
    assert len(shards(str(out))) == len(units)  # no shard of the other plan
    assert not (out / "lease.json").exists()


def _smallest_unit(tiny_gym) -> str:
    from finegym_ray.preprocess.pipeline import plan

    return min(plan(CONFIG, build_manifest_from(str(tiny_gym / "annotations"))), key=lambda u: u.seconds).unit_id


@pytest.mark.e2e
def test_a_unit_that_kills_its_worker_is_recorded_after_three_attempts(ray_cluster, reference, tiny_gym, tmp_path,
                                                                       monkeypatch):
    ref_out, ref_summary = reference
    crashing = _smallest_unit(tiny_gym)
    monkeypatch.setenv("FINEGYM_RAY_TEST_CRASH_UNIT", crashing)  # the worker exits mid-unit, as on a segfault
    out = tmp_path / "out"
    summary = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out), say=quiet)
    assert summary["units"]["failed"] == 1 and summary["units"]["done"] == ref_summary["units"]["planned"] - 1
    record = json.loads((out / "errors" / f"{crashing}.json").read_text())
    assert record["scope"] == "worker" and "died during each of 3 attempts" in record["reason"]
    assert not list((out / "errors").glob("*.attempt"))
    assert summary["output"] == {"planned": ref_summary["units"]["planned"], "with_clips": summary["units"]["done"],
                                 "without_clips": 1, "with_errors": 1}


@pytest.mark.e2e
def test_a_failing_shard_write_fails_that_unit_only(ray_cluster, reference, tiny_gym, tmp_path):
    ref_out, ref_summary = reference
    blocked = _smallest_unit(tiny_gym)
    out = tmp_path / "out"
    (out / "clips" / f"{blocked}.parquet").mkdir(parents=True)  # the rename into place fails every time
    summary = run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out), say=quiet)
    assert summary["units"]["failed"] == 1 and summary["units"]["done"] == ref_summary["units"]["planned"] - 1
    record = json.loads((out / "errors" / f"{blocked}.json").read_text())
    assert record["scope"] == "storage" and "writing its output failed after 3 attempts" in record["reason"]


@pytest.mark.e2e
def test_s3_in_and_out_gives_the_same_clips(reference, s3_server, s3_prefix, tiny_gym, tmp_path):
    ref_out, _ = reference
    for sub in ("annotations", "videos"):
        for path in sorted((tiny_gym / sub).iterdir()):
            storage.upload_file(path, f"{s3_prefix}/{sub}/{path.name}")
    out = f"{s3_prefix}/out"
    config = replace(CONFIG, cache_dir=str(tmp_path / "cache"))
    summary = run_preprocess(config, f"{s3_prefix}/annotations", f"{s3_prefix}/videos", out, say=quiet)
    assert summary["units"]["failed"] == 0
    assert len(os.listdir(tmp_path / "cache")) - 1 == 3  # each video fetched once (plus the lock)

    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], scheme="http",
                           access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                           region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    table = pads.dataset(f"{out[len('s3://'):]}/clips", filesystem=fs, format="parquet").to_table()
    assert row_digests(table) == row_digests(pq.read_table(os.path.join(ref_out, "clips")))
    written = json.loads(storage.read_text(f"{out}/summary.json"))
    assert written["totals"] == summary["totals"] and written["runs"][-1]["units"] == summary["units"]


@pytest.mark.e2e
def test_an_s3_restart_mid_run_loses_nothing(ray_cluster, reference, s3_server, s3_prefix, tiny_gym, tmp_path):
    ref_out, ref_summary = reference
    for sub in ("annotations", "videos"):
        for path in sorted((tiny_gym / sub).iterdir()):
            storage.upload_file(path, f"{s3_prefix}/{sub}/{path.name}")
    out = f"{s3_prefix}/out"
    shards_at_restart = []

    def first_shard_written() -> bool:
        found = storage.list_uris(f"{out}/clips", suffix=".parquet")
        shards_at_restart[:] = found
        return bool(found)

    log = {}
    # One worker, so that units are still to be cut while the server is down.
    config = replace(CONFIG, workers=1, cache_dir=str(tmp_path / "cache"))
    restarter = restart_when(s3_server, first_shard_written, 3.0, log)
    summary = run_preprocess(config, f"{s3_prefix}/annotations", f"{s3_prefix}/videos", out, say=quiet)
    ended_at = time.monotonic()
    restarter.join(120)
    assert "up_at" in log and log["down_at"] < ended_at, "the restart did not happen during the run"
    assert len(shards_at_restart) < ref_summary["units"]["planned"], "the run was over before the restart"
    assert summary["units"]["failed"] == 0 and summary["output"]["with_clips"] == ref_summary["units"]["planned"]
    fs, root = storage.pyarrow_filesystem(out)
    table = pads.dataset(f"{root}/clips", filesystem=fs, format="parquet").to_table()
    assert row_digests(table) == row_digests(pq.read_table(os.path.join(ref_out, "clips")))


class _HeldBack:
    """Map callable: row 1 waits (up to ``hold_s`` seconds) for the file ``gate``."""

    def __init__(self, gate: str, hold_s: float):
        self.gate, self.hold_s = gate, hold_s

    def __call__(self, batch: dict) -> dict:
        deadline = time.monotonic() + self.hold_s
        while batch["i"][0] == 1 and not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        return batch


def test_each_result_arrives_while_the_next_unit_still_runs(ray_cluster, tmp_path):
    import ray

    gate, hold_s = tmp_path / "gate", 60.0
    ds = ray.data.from_items([{"i": 0}, {"i": 1}], override_num_blocks=2).map_batches(
        _HeldBack, fn_constructor_kwargs={"gate": str(gate), "hold_s": hold_s}, batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=1))
    rows = rows_as_done(ds)
    t0 = time.monotonic()
    first = next(rows)
    waited = time.monotonic() - t0
    gate.touch()  # lets row 1 finish
    # iter_rows would hand over row 0 only once row 1 is done, i.e. after hold_s.
    assert first == {"i": 0} and waited < hold_s / 2, waited
    assert list(rows) == [{"i": 1}]


# TV-L1 options that keep the CPU run short (its defaults take ~1 s per 340x256 pair).
TVL1_FAST = {"scales": 2, "warps": 2, "outer_iterations": 2, "inner_iterations": 10, "batch_pairs": 8}


@pytest.mark.e2e
def test_tvl1_runs_in_a_flow_stage_of_its_own_on_a_cluster_without_gpus(ray_cluster, tiny_gym, tmp_path):
    from finegym_ray.preprocess.clips import clip_schema
    from finegym_ray.preprocess.config import FlowConfig
    from finegym_ray.video import decode_jpeg, dequantize_flow

    config = replace(CONFIG, short_side=48, max_fps=5.0, workers=1, flow=FlowConfig("tvl1", TVL1_FAST))
    out = tmp_path / "out"
    said = []
    summary = run_preprocess(config, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out),
                             say=said.append)
    assert summary["units"]["failed"] == 0 and summary["units"]["done"] == summary["units"]["planned"]
    assert "flow tvl1: 1 decoding actor(s), 1 flow actor(s) on CPUs" in said, said
    table = pq.read_table(out / "clips")
    manifest = build_manifest_from(str(tiny_gym / "annotations"))
    assert sorted(table.column("key").to_pylist()) == sorted(manifest.subactions.column("key").to_pylist())
    assert table.schema.remove_metadata() == clip_schema(with_flow=True)
    moving = 0
    for row in table.to_pylist():
        assert len(row["flow_x"]) == len(row["flow_y"]) == row["num_frames"] - 1 and row["flow_bound"] == 20.0
        for x, y in zip(row["flow_x"], row["flow_y"]):
            flow = dequantize_flow(decode_jpeg(x), 20.0), dequantize_flow(decode_jpeg(y), 20.0)
            assert flow[0].shape == (48, 86)
            moving += max(np.abs(f).max() for f in flow) > 1.0  # pixels: the figure moves (JPEG noise is ~0.2)
    assert moving >= len(table) // 2, moving
    # Where and in what batches the flow runs does not change the settings: a rerun resumes.
    rerun = replace(config, flow=FlowConfig("tvl1", {**TVL1_FAST, "device": "cpu", "batch_pairs": 3}))
    again = run_preprocess(rerun, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out), say=quiet)
    assert again["units"]["skipped"] == summary["units"]["planned"] and again["units"]["done"] == 0


def test_a_shard_whose_counts_are_pickles_is_not_counted_and_runs_nothing(tmp_path):
    # Ray's pickled-object type is registered in this process (as in every driver that
    # has imported ray.data): converting such a column would unpickle its values.
    import pyarrow as pa
    from ray.data.extensions import ArrowPythonObjectArray

    from finegym_ray.preprocess.pipeline import output_totals
    from finegym_ray.preprocess.units import WorkUnit

    marker = tmp_path / "marker"
    out = str(tmp_path / "out")
    storage.write_parquet(pa.table({"num_frames": ArrowPythonObjectArray.from_objects([_WritesMarker(str(marker))]),
                                    "start_s": [0.0], "end_s": [1.0]}), storage.join(out, "clips", "u1.parquet"))
    totals = output_totals(out, [WorkUnit("u1", "v", ())], {})
    assert totals["units_with_clips"] == 1 and totals["clips"] == 0  # unreadable: cut again by the next run
    assert not marker.exists()


def test_an_output_whose_settings_match_but_whose_hash_does_not_names_the_version(tiny_gym, tmp_path):
    """Settings recorded as ours but hashed by another finegym-ray version: the refusal says
    so, instead of asking for 'the same settings' that are the same already."""
    from finegym_ray.preprocess.config import output_settings

    out = tmp_path / "out"
    out.mkdir()
    (out / "preprocess.json").write_text(json.dumps({"hash": "0123456789ab", "settings": output_settings(CONFIG)}))
    before = _contents(out)
    with pytest.raises(ValueError) as e:
        run_preprocess(CONFIG, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out), say=quiet)
    assert "another finegym-ray version" in str(e.value) and "changed: ," not in str(e.value)
    assert _contents(out) == before
