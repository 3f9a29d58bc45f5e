"""Shared pytest fixtures."""

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.support.clips import TINY_PREPROCESS
from tests.support.env import isolated_environ
from tests.support.media import write_audio_only, write_video
from tests.support.processes import SESSION_ENV, new_session_mark
from tests.support.s3 import S3ServerError, free_ports, start_s3_server

# What every Ray the tests start inherits, as it inherits RAY_TMPDIR. Ray Train's
# controller looks at its workers every 2 s by default, so a tiny run waited about that
# long at each of its steps (workers started, training done), and the suite trains some
# 60 tiny runs; Ray's usage statistics are an actor per Ray and a report that has nowhere
# to go here. Each Ray's log monitor looks for new log files ten times a second while it
# holds fewer than this many, a glob of a folder that grows to hundreds of files over the
# session (the two session clusters' monitors used 100 CPU s of a 26 min run); at 0 it
# looks twice a second, and it still reads every file it follows ten times a second.
# Ray Train's preemption watcher, an actor per run (about 2 CPU s to start here) that polls
# whether a node is being drained, has nothing to watch: no test drains a node.
RAY_FOR_TESTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_USAGE_STATS_ENABLED": "0",
                 "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}

# The files that take longest (several minutes each on 2 cores), longest first.
LONG_FILES = ("tests/train/test_train.py", "tests/tune/test_sweep.py", "tests/tune/test_studies.py",
              "tests/test_demo.py", "tests/localize/test_train.py", "tests/test_cli.py")


def pytest_collection_modifyitems(session, config, items):
    """The longest files first, then the other files with end-to-end or cluster tests,
    then the rest: with two test processes (``-n 2 --dist loadfile``, a file runs in one
    of them) the long files start at once and the many quick ones fill in beside them,
    instead of a long file running alone at the end."""
    def file_of(item) -> str:
        return item.nodeid.split("::")[0]

    slow = {file_of(i) for i in items if i.get_closest_marker("e2e") or i.get_closest_marker("cluster")}
    files = list(dict.fromkeys(file_of(i) for i in items))
    rank = {f: (LONG_FILES.index(f) if f in LONG_FILES else len(LONG_FILES) + (f not in slow), n)
            for n, f in enumerate(files)}
    items.sort(key=lambda item: rank[file_of(item)])


@pytest.fixture(scope="session", autouse=True)
def isolated_session():
    """The whole run without the caller's Ray, S3 and finegym-ray settings (a user's
    RAY_ADDRESS would send the tests' drivers to the user's cluster) and with this
    session's mark, which every process the tests start inherits (see
    tests/support/processes.py); os.environ as it was afterwards.

    Ray's temp folder is the session's own: the session's cluster records its address
    there instead of in /tmp/ray, where another user's ``ray.init()`` would find and join
    it, and a driver a test starts without an address looks for a cluster only there. Short,
    under /tmp: Ray's socket paths must fit 107 bytes."""
    ray_tmp = tempfile.mkdtemp(prefix="fgr", dir="/tmp")
    try:
        with isolated_environ(RAY_TMPDIR=ray_tmp, **{SESSION_ENV: new_session_mark()}, **RAY_FOR_TESTS):
            yield
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------
# S3: a real SeaweedFS server for the session (tests/support/s3.py)
# ----------------------------------------------------------------------------------
def _clear_storage_clients() -> None:
    # Cached boto3 clients captured the old environment's keys and endpoint.
    from finegym_ray import storage

    storage.clear_client_cache()


@pytest.fixture(scope="session")
def s3_server():
    """A running SeaweedFS S3 server with a fresh bucket and random keys.

    Sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL and
    AWS_DEFAULT_REGION for the session (restored afterwards); no other AWS_ variable is
    set (isolated_session removed the caller's). Fails, never skips, when
    the server cannot start: a storage test that silently did not run proves nothing.
    """
    try:
        server = start_s3_server(bucket="finegym-test")
    except S3ServerError as e:
        pytest.fail(f"cannot start the SeaweedFS S3 server for tests: {e}", pytrace=False)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    _clear_storage_clients()
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_storage_clients()
        server.stop()


@pytest.fixture
def s3_prefix(s3_server) -> str:
    """A fresh, empty ``s3://bucket/test-<uuid>`` prefix on the session server."""
    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------------
# Videos with known frame times (tests/support/media.py writes them, ~0.1 s each)
# ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """A generated video and the exact times its frames were written at."""

    path: Path
    times: list[Fraction]  # seconds, frame i at times[i]
    duration: Fraction  # seconds, end of the last frame
    fps: Fraction


CFR_RATES = {"25": Fraction(25), "29.97": Fraction(30000, 1001), "30": Fraction(30)}


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def cfr_clips(video_dir) -> dict[str, Clip]:
    """4 s constant-rate clips at 25, 29.97 and 30 frames/s, GOP 25 frames."""
    clips = {}
    for name, rate in CFR_RATES.items():
        n = int(4 * rate)
        path = write_video(video_dir / f"cfr_{name}.mp4", rate=rate, num_frames=n)
        clips[name] = Clip(path, [Fraction(i) / rate for i in range(n)], Fraction(n) / rate, rate)
    return clips


@pytest.fixture(scope="session", params=list(CFR_RATES))
def cfr_clip(request, cfr_clips) -> Clip:
    return cfr_clips[request.param]


@pytest.fixture(scope="session")
def vfr_clip(video_dir) -> Clip:
    """Irregular frame times on a 1/90000 s clock: 30 frames/s with dropped frames and
    1.5-frame gaps, as phone and screen recordings have."""
    rng = np.random.default_rng(7)
    gaps = rng.choice([3000, 3000, 3000, 3000, 4500, 6000, 9000], size=119)
    pts = [0, *np.cumsum(gaps).tolist()]
    tb = Fraction(1, 90000)
    path = write_video(video_dir / "vfr.mp4", rate=30, pts=pts, time_base=tb)
    times = [p * tb for p in pts]
    # The muxer gives the last frame the stream's nominal duration, 1/30 s.
    return Clip(path, times, times[-1] + Fraction(1, 30), Fraction(30))


@pytest.fixture(scope="session")
def broken_files(video_dir) -> dict[str, Path]:
    """Files that must raise VideoError, by what is wrong with them."""
    files = {"missing": video_dir / "does_not_exist.mp4"}
    for name, faststart in (("truncated_index_at_end", False), ("truncated_index_at_start", True)):
        whole = write_video(video_dir / f"whole_{name}.mp4", rate=25, num_frames=100, faststart=faststart)
        data = whole.read_bytes()
        files[name] = video_dir / f"{name}.mp4"
        files[name].write_bytes(data[: len(data) // 2])
    files["garbage"] = video_dir / "garbage.mp4"
    files["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["text"] = video_dir / "notes.mp4"
    files["text"].write_text("not a video\n" * 50)
    files["empty"] = video_dir / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["audio_only"] = write_audio_only(video_dir / "audio.wav")
    files["directory"] = video_dir
    return files


@pytest.fixture(scope="session")
def tiny_gym(tmp_path_factory) -> Path:
    """3 SynGym videos (192x108, ~2 min in all, 26 sub-actions), generated in ~2 s."""
    from finegym_ray.synth.config import SynthConfig
    from finegym_ray.synth.generate import generate

    out = tmp_path_factory.mktemp("tinygym")
    generate(SynthConfig(videos=3, width=192, height=108, events_per_video=[2, 3], subactions_per_event=[3, 5],
                         idle_range_s=[1.0, 3.0], clutter=5), str(out))
    return out


@pytest.fixture(scope="session")
def pose_store(tiny_gym, tmp_path_factory) -> str:
    """tiny_gym's poses imported into a store that holds its manifest (no clips)."""
    from finegym_ray.dataset.manifest import build_manifest_from, write_manifest
    from finegym_ray.dataset.pose_store import import_pose_pickle
    from finegym_ray.store import manifest_dir
    from finegym_ray.synth.generate import POSES

    out = str(tmp_path_factory.mktemp("posestore"))
    write_manifest(build_manifest_from(str(tiny_gym / "annotations")), manifest_dir(out))
    import_pose_pickle(str(tiny_gym / "annotations" / POSES), out)
    return out


# ----------------------------------------------------------------------------------
# Ray: one real local cluster for the session
# ----------------------------------------------------------------------------------
# Token authentication would make drivers started by tests (subprocesses joining with
# --address) fail unless every command agrees; local tests run without it.
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A Ray head node with 2 CPUs started for the session (its own processes, stopped
    at the end; never ``ray stop``). This process is connected to it; subprocess drivers
    join with ``--address cluster.address``. Started after the S3 server so that its
    workers inherit the S3 settings, as a cluster node inherits its instance profile."""
    import ray
    from ray.cluster_utils import Cluster

    # With the dashboard, as every real cluster has: Ray Train frees the CPUs of a Tune
    # trial that ASHA stops through the dashboard's State API. On a port of its own, so
    # that another Ray on this machine cannot hold it.
    # The job agent's HTTP port too: at its default (52365) another Ray on this host
    # leaves this one without an agent, and every job submit fails ("No available agent").
    dashboard_port, agent_port = free_ports(2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 300 * 2**20,
                                                            "include_dashboard": True,
                                                            "dashboard_port": dashboard_port,
                                                            "dashboard_agent_listen_port": agent_port})
    # The address in the workers' environment too, as init_ray gives it (see
    # runtime/connect.py GCS_PORT_ENV): other Rays may run on this host.
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_ADDRESS": cluster.address}})
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def tiny_store(ray_cluster, tiny_gym, tmp_path_factory) -> tuple[str, dict]:
    """tiny_gym preprocessed on the session cluster: (output folder, summary)."""
    from finegym_ray.preprocess.pipeline import run_preprocess

    out = str(tmp_path_factory.mktemp("tiny_store"))
    summary = run_preprocess(TINY_PREPROCESS, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), out,
                             say=lambda _m: None)
    return out, summary


@pytest.fixture(scope="session")
def partial_store(tiny_store, tiny_gym, tmp_path_factory) -> tuple[str, dict, str]:
    """tiny_store as preprocessing leaves it when one video, holding one of the val
    split's sub-actions, was never downloaded: (store, summary, that video's id). A copy
    of tiny_store without the video's shards, preprocessed again from a videos folder
    without it: the rerun cuts nothing and records the video's units as without a video."""
    import pyarrow.parquet as pq

    from finegym_ray.dataset.manifest import build_manifest_from
    from finegym_ray.preprocess.pipeline import run_preprocess

    rows = build_manifest_from(str(tiny_gym / "annotations")).subactions.to_pylist()
    val = {v: sum(r["split"] == "val" for r in rows if r["video_id"] == v) for v in {r["video_id"] for r in rows}}
    gone = min(sorted(v for v, n in val.items() if n), key=val.get)
    assert 0 < val[gone] < sum(val.values()), val
    root = tmp_path_factory.mktemp("partial_store")
    store = root / "store"
    shutil.copytree(tiny_store[0], store)
    for shard in (store / "clips").glob("*.parquet"):
        if pq.read_table(shard, columns=["video_id"]).column(0)[0].as_py() == gone:
            shard.unlink()
    videos = root / "videos"
    videos.mkdir()
    for path in (tiny_gym / "videos").iterdir():
        if path.stem != gone:
            (videos / path.name).symlink_to(path)
    summary = run_preprocess(TINY_PREPROCESS, str(tiny_gym / "annotations"), str(videos), str(store),
                             say=lambda _m: None)
    return str(store), summary, gone
