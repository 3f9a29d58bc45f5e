"""Feature extraction (localize/extract.py) on the session's Ray cluster and tiny SynGym.

The backbone is a run with one checkpoint of a freshly initialised tiny TSN
(tests/train/test_evaluate.write_run): what is checked here is the pipeline (times,
shapes, resume, failures), not what the features are worth.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from finegym_ray.dataset.manifest import build_manifest_from
from finegym_ray.localize import features as F
from finegym_ray.localize.backbone import open_backbone
from finegym_ray.localize.config import ExtractConfig
from finegym_ray.localize.extract import Pools, plan_items, pool_sizes, run_extract
from finegym_ray.localize.snippets import snippet_starts
from tests.test_cli import cli_no_ray, one_error_line
from tests.train.test_evaluate import write_run

FPS = 4.0
CONFIG = ExtractConfig(snippet_frames=8, stride_frames=4, fps=FPS, segments=3, batch_size=16)
quiet = lambda _m: None  # noqa: E731


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory) -> str:
    store, _ = tiny_store
    return write_run(tmp_path_factory.mktemp("runs"), "tsn", data=store)


@pytest.fixture(scope="module")
def action(ray_cluster, run, tiny_gym, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("features"))
    summary = run_extract(CONFIG, run, str(tiny_gym / "videos"), str(tiny_gym / "annotations"), out, say=quiet)
    return out, summary


def _feature_dim(run: str) -> int:
    from finegym_ray.models import MODELS
    from finegym_ray.train import checkpoint as ckpt
    from finegym_ray.train.run import checkpoint_config

    config = checkpoint_config(ckpt.find_latest(run))
    return MODELS[config.model](**config.model_kwargs(3)).backbone.out_features


@pytest.mark.e2e
def test_action_level_snippets_cover_each_video_at_the_set_rate(action, run, tiny_gym):
    from finegym_ray.video.decode import probe

    out, summary = action
    videos = sorted(p.stem for p in (tiny_gym / "videos").glob("*.mp4"))
    uris = F.list_sequences(out, "action")
    assert [u.rsplit("/", 1)[-1] for u in uris] == [f"{v}.parquet" for v in videos]
    c = _feature_dim(run)
    for uri, vid in zip(uris, videos):
        seq = F.read_sequence(uri)
        info = probe(tiny_gym / "videos" / f"{vid}.mp4")
        duration = info.duration_s
        # The first frame of each 1/FPS s interval is kept: one per interval up to the last frame's.
        frames = int(np.floor((info.num_frames - 1) / info.fps * FPS + 1e-9)) + 1
        assert seq.video_id == vid and seq.features.shape == (len(snippet_starts(frames, 8, 4)), c)
        np.testing.assert_allclose(np.diff(seq.starts), 4 / FPS, atol=0.05)  # a snippet every 4 frames
        np.testing.assert_allclose(seq.ends - seq.starts, 8 / FPS, atol=0.05)
        assert seq.starts[0] < 0.05 and seq.ends[-1] <= duration + 1 / FPS
        assert np.isfinite(seq.features).all() and seq.features.std() > 0
        assert seq.meta["run"] == run and seq.meta["level"] == "action" and seq.meta["snippet_frames"] == 8
        assert seq.meta["settings_hash"] == summary["settings_hash"]["sequence"]
    assert summary["items"]["failed"] == 0 and summary["snippets"] > 0


@pytest.mark.e2e
def test_element_features_are_segments_x_c_per_instance_key(action, run, tiny_store):
    out, _ = action
    store, _ = tiny_store
    elements = F.read_elements(out)
    clips = pq.read_table(os.path.join(store, "clips"), columns=["key", "kind"]).to_pylist()
    want = sorted(r["key"] for r in clips if r["kind"] == "subaction")
    assert sorted(elements.keys) == want
    assert elements.features.shape == (len(want), 3, _feature_dim(run))
    assert elements.meta["segments"] == 3 and elements.meta["run"] == run


def _cli(cluster, run, videos, tiny_gym, out, *extra):
    sets = ["snippet_frames=8", "stride_frames=4", f"fps={FPS}", "segments=3", "batch_size=4", "elements=false",
            "level=subaction"]
    return [sys.executable, "-m", "finegym_ray.cli", "extract-features", "--run", run, "--videos",
            str(videos), "--annotations", str(tiny_gym / "annotations"), "--out", str(out),
            "--address", cluster.address, *[a for s in sets for a in ("--set", s)], *extra]


@pytest.mark.e2e
def test_subaction_level_resumes_after_a_killed_driver_and_records_a_bad_video(ray_cluster, run, tiny_gym,
                                                                                  tmp_path):
    """One job at sub-action level, killed (SIGKILL) after its first file, then run again:
    complete files are kept, not redone; the rest is written with times relative to each
    routine's start; the routines of a truncated video are recorded in errors/."""
    videos = tmp_path / "videos"
    shutil.copytree(tiny_gym / "videos", videos)
    bad = sorted(videos.glob("*.mp4"))[-1]
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated: the file does not open
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(ray_cluster, run, videos, tiny_gym, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "subaction").exists() or not list((out / "subaction").glob("*.parquet")):
        assert proc.poll() is None, "the job ended before writing a file"
        assert time.monotonic() < deadline, "no file written in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "subaction").glob("*.parquet")}

    events = build_manifest_from(str(tiny_gym / "annotations")).events.to_pylist()
    good = {e["event_key"]: e for e in events if e["video_id"] != bad.stem}
    failed = sorted(e["event_key"] for e in events if e["video_id"] == bad.stem)
    assert failed and len(first) < len(good), "the kill came too late to test anything"
    # The same job again (here, in this process, to spare a second driver's start).
    said = []
    config = replace(CONFIG, level="subaction", elements=False, batch_size=4)
    summary = run_extract(config, run, str(videos), str(tiny_gym / "annotations"), str(out), say=said.append)
    assert any("snippets/s" in line and "items/s" in line for line in said), said
    assert json.loads((out / "summary.json").read_text())["items"] == summary["items"]
    assert summary["items"] == {"planned": len(events), "skipped": len(first),
                                "written": len(good) - len(first), "failed": len(failed)}
    after = {p.name: p.stat().st_mtime_ns for p in (out / "subaction").glob("*.parquet")}
    assert sorted(after) == [f"{k}.parquet" for k in sorted(good)]
    assert all(after[n] == t for n, t in first.items())  # not redone
    for key, e in good.items():
        seq = F.read_sequence(F.sequence_uri(str(out), "subaction", key))
        length = e["end_s"] - e["start_s"]
        assert seq.video_id == key and len(seq) >= 1 and seq.meta["level"] == "subaction"
        assert -0.01 < seq.starts[0] < 1 / FPS + 0.01  # relative to the routine start, not the video
        assert seq.ends[-1] <= length + 1 / FPS + 0.01
        assert np.all(seq.ends - seq.starts <= 8 / FPS + 0.05)  # 8 frames, fewer for a routine under one snippet
    errors = sorted(os.listdir(out / "errors"))
    assert errors == [f"subaction_{k}.json" for k in failed]
    record = json.loads((out / "errors" / errors[0]).read_text())
    assert record["uri"].endswith(bad.name) and record["reason"]
    # Another stride into the same output is refused before Ray starts, naming the settings.
    r = cli_no_ray(*_cli(ray_cluster, run, videos, tiny_gym, out, "--set", "stride_frames=2")[3:])
    one_error_line(r, str(out), "other settings", "stride_frames=4")


def test_pools_too_big_for_the_cluster_are_refused(ray_cluster, run, tiny_gym, tmp_path):
    from dataclasses import replace

    from finegym_ray.capacity import CapacityError

    # A decoding actor of 1 CPU and a backbone actor of 2: 3 CPUs at once on a 2-CPU cluster.
    with pytest.raises(CapacityError, match=r"extract-features needs .*the cluster has 2 CPU"):
        run_extract(replace(CONFIG, model_cpus=2.0), run, str(tiny_gym / "videos"), str(tiny_gym / "annotations"),
                    str(tmp_path / "out"), say=quiet)


def test_bad_run_and_videos_are_refused_before_ray(run, tiny_gym, tmp_path):
    base = ["extract-features", "--annotations", tiny_gym / "annotations", "--out", tmp_path / "out"]
    r = cli_no_ray(*base, "--run", tmp_path / "no_run", "--videos", tiny_gym / "videos")
    one_error_line(r, str(tmp_path / "no_run"), "no such run")
    (tmp_path / "empty").mkdir()
    r2 = cli_no_ray(*base, "--run", run, "--videos", tmp_path / "empty")
    one_error_line(r2, str(tmp_path / "empty"), "no video files")
    r3 = cli_no_ray(*base, "--run", run, "--videos", tiny_gym / "videos", "--set", "stride_frames=0")
    one_error_line(r3, "stride_frames must be >= 1")
    assert not (tmp_path / "out").exists()
    # Each refusal is quick: no Ray, no torch (the process start is most of it).
    assert max(x.seconds for x in (r, r2, r3)) < 5.0, [x.seconds for x in (r, r2, r3)]


def test_a_backbone_state_that_would_run_code_is_refused_before_ray_in_one_line(tiny_store, tiny_gym, tmp_path):
    from tests.train.test_evaluate import _make_hostile

    run = write_run(tmp_path / "runs", "tsn", data=tiny_store[0])
    marker = tmp_path / "marker"
    _make_hostile(run, marker)
    before = {p: p.read_bytes() for p in Path(run).rglob("*") if p.is_file()}
    r = cli_no_ray("extract-features", "--run", run, "--videos", tiny_gym / "videos", "--annotations",
                   tiny_gym / "annotations", "--out", tmp_path / "out")
    one_error_line(r, f"{run}/epoch_0001/state.pt refused")
    # PyTorch's own text advises loading it with weights_only=False: never echoed.
    assert "weights_only" not in r.stdout + r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert {p: p.read_bytes() for p in Path(run).rglob("*") if p.is_file()} == before
    assert r.seconds < 30, r.seconds  # no Ray (cli_no_ray exits 99 if it would start): torch's import at most


def test_pool_sizes_in_one_place():
    cpu = pool_sizes(ExtractConfig(), {"CPU": 2.0}, items=10)
    assert cpu == Pools(decoders=1, embedders=1, gpus=0.0, cpus=1.0)
    gpu = pool_sizes(ExtractConfig(), {"CPU": 16.0, "GPU": 2.0}, items=100)
    assert gpu == Pools(decoders=16, embedders=2, gpus=1.0, cpus=0.0)
    assert pool_sizes(ExtractConfig(), {"CPU": 16.0, "GPU": 1.0}, items=3).decoders == 3  # no idle decoder


def test_snippet_starts():
    assert snippet_starts(0, 8, 4).tolist() == []
    assert snippet_starts(5, 8, 4).tolist() == [0]  # shorter than a snippet: one of all its frames
    assert snippet_starts(8, 8, 4).tolist() == [0]
    assert snippet_starts(17, 8, 4).tolist() == [0, 4, 8]


def test_open_backbone_reads_the_run_and_its_preprocessing(run, tiny_store):
    b = open_backbone(run, ExtractConfig())
    assert b.short_side == 64 and b.modality == "rgb" and b.input_size == (32, 32)
    assert re.fullmatch(r"epoch_\d{4}", b.checkpoint.rsplit("/", 1)[-1]) and b.store == tiny_store[0]
    assert open_backbone(b.checkpoint, ExtractConfig()).checkpoint == b.checkpoint


@pytest.mark.parametrize("model, modality", [("tsn", "flow"), ("i3d", "rgb")])
def test_stages_feed_flow_and_clip_models_as_they_were_tested(tiny_store, tiny_gym, tmp_path, model, modality):
    """The two stages called directly (no Ray): flow computed with the run's
    preprocessing method, and a clip model's dense frames, reach features() in the
    layout the model takes."""
    from finegym_ray.localize.backbone import backbone_weights
    from finegym_ray.localize.snippets import DecodeSnippets, EmbedSnippets
    from finegym_ray.video.files import require_videos

    run = write_run(tmp_path / "runs", model, data=tiny_store[0], modality=modality)
    config = replace(CONFIG, level="subaction", elements=False)
    backbone = open_backbone(run, config)
    assert (backbone.flow or {}).get("method") == ("dis" if modality == "flow" else None)
    items, _ = plan_items(config, backbone, str(tiny_gym / "annotations"), require_videos(str(tiny_gym / "videos")))
    decode, embed = DecodeSnippets(backbone, config), EmbedSnippets(backbone, backbone_weights(backbone), threads=1)
    batches = list(decode({k: [v] for k, v in items[0].items()}))
    rows = batches[0]
    assert set(rows["status"]) == {"ok"} and rows["count"][0] == sum(len(b["index"]) for b in batches)
    channels = 2 if modality == "flow" else 3
    assert rows["x"].shape[1:] == (2, channels, 32, 32) and rows["x"].dtype == np.uint8
    if modality == "flow":  # SynGym's gymnast moves: not every field is "no motion" (128)
        assert (np.abs(rows["x"].astype(int) - 128) > 2).any()
    out = embed(rows)
    feats = np.array(out.column("features").to_pylist())
    assert feats.shape == (len(rows["index"]), _feature_dim(run)) and np.isfinite(feats).all()
