"""The README's main command, as a user runs it (a real local Ray, small settings)."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from finegym_ray.lease import writer_lease
from tests.support.output import assert_no_ray_internals, assert_progress_with_rate, assert_some_ray_internals
from tests.support.processes import own_pids_with, own_pids_with_env

# The demo command, run as a user runs it.
pytestmark = pytest.mark.e2e


def test_demo_runs_then_reuses_its_synthetic_data(tmp_path, ray_cluster):
    tiny_training = ["epochs=1", "base_width=8", "segments=2", "crop=32", "test_short=32", "input_width=48"]
    cmd = [sys.executable, "-m", "finegym_ray.cli", "demo", "--out", str(tmp_path / "d"), "--videos", "2",
           "--set", "width=192", "--set", "height=108", *[a for o in tiny_training for a in ("--train-set", o)]]
    # From a folder of its own, as a user's checkout: the runs go to ./finegym_runs there.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[synth] 2/2 videos" in r.stdout and "unmatched split keys: 0" in r.stdout
    manifest = tmp_path / "d" / "store" / "manifest"
    assert str(manifest) in r.stdout
    rows = pq.read_table(manifest / "subactions.parquet").num_rows
    assert rows > 0
    clips = pq.read_table(tmp_path / "d" / "store" / "clips")
    assert clips.num_rows == rows and "units: " in r.stdout and f"clips: {rows} written" in r.stdout
    # Trained one epoch, evaluated, printed the metrics table.
    run = tmp_path / "finegym_runs" / "tsm_flow_set"
    assert (run / "epoch_0001" / "state.pt").exists() and (run / "eval" / "metrics.json").exists()
    assert "mean class" in r.stdout and "tsm_flow_set" in r.stdout
    assert r.stdout.rstrip().endswith("runs are in finegym_runs: 'finegym-ray runs' lists them"), r.stdout[-500:]
    # Where every command looks by default: `runs` lists the demo's run, `evaluate` finds it.
    listed = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "runs"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert listed.returncode == 0 and re.search(r"^tsm_flow_set .* finished", listed.stdout, re.M), listed.stdout
    # On the session's cluster: a third Ray start here would add nothing the demo's two do not show.
    scored = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "evaluate", "--run", "finegym_runs/tsm_flow_set",
                             "--address", ray_cluster.address], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert scored.returncode == 0 and "mean class" in scored.stdout, scored.stdout[-2000:] + scored.stderr[-2000:]
    # The project's lines only: one line of settings (all of them in demo.yaml), progress
    # with rates, no Ray internals.
    assert_no_ray_internals(r.stdout + r.stderr)
    settings = [line for line in r.stdout.splitlines() if line.startswith("[demo] synth videos=2")]
    assert len(settings) == 1 and f"all settings in {tmp_path / 'd' / 'store' / 'demo.yaml'}" in settings[0]
    assert_progress_with_rate(r.stdout, "preprocess") and assert_progress_with_rate(r.stdout, "train")
    # Ray said once: which Ray, then what it has.
    ray_lines = [line for line in r.stdout.splitlines() if line.startswith("[ray]")]
    ready = r"\[ray\] ready in \d+\.\d s: 1 node, \d+ CPU, 0 GPU, .* GiB object store"
    assert len(ray_lines) == 2 and re.fullmatch(ready, ray_lines[1]), ray_lines
    assert "[manifest] summary:\n" in r.stdout

    t0 = time.monotonic()  # again, on the session's cluster: the Ray start is checked above
    again = subprocess.run([*cmd, "--address", ray_cluster.address], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    wall = time.monotonic() - t0
    assert again.returncode == 0, again.stderr[-3000:]
    # The time it says is the command's wall time, Ray's start and the checks included.
    said = float(re.search(r"^demo finished in ([\d.]+) s", again.stdout, re.M)[1])
    assert wall / 2 <= said <= wall, (said, wall)
    assert "reusing" in again.stdout and "[synth] 1/2" not in again.stdout
    assert pq.read_table(manifest / "subactions.parquet").num_rows == rows
    assert "0 done" in again.stdout and pq.read_table(tmp_path / "d" / "store" / "clips").num_rows == rows
    assert "has trained all 1 epochs" in again.stdout and not (run / "epoch_0002").exists()


def _demo_cli(tmp_path, store, *extra: str) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", "demo", "--smoke-test", "--no-train", "--out",
            str(tmp_path / "d"), "--store", str(store), "--runs", str(tmp_path / "runs"), *extra]


def _plant_run(runs: Path, name: str, *, data: Path) -> None:
    """A run as a training on ``data`` leaves it: config.yaml, two checkpoints, an evaluation."""
    for part in ("epoch_0001/state.pt", "epoch_0002/state.pt", "eval/metrics.json"):
        (runs / name / part).parent.mkdir(parents=True, exist_ok=True)
        (runs / name / part).write_bytes(b"weights")
    (runs / name / "config.yaml").write_text(yaml.safe_dump({"data": str(data), "name": name}))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_refuses_a_store_it_did_not_make_and_touches_nothing(tmp_path):
    store = tmp_path / "store"
    for name in ("clips/real-unit.parquet", "runs/x/epoch_0049/state.pt"):
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(b"the user's own data")
    before = _tree(store)
    r = subprocess.run(_demo_cli(tmp_path, store), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and str(store) in errors[0] and "not made by the demo" in errors[0], r.stderr
    assert _tree(store) == before


def test_changed_settings_replace_only_what_the_demo_made(tmp_path, ray_cluster):
    store, runs = tmp_path / "store", tmp_path / "runs"
    # On the session's cluster: starting a Ray of its own is the first demo test's part.
    joined = ("--address", ray_cluster.address)
    first = subprocess.run(_demo_cli(tmp_path, store, *joined), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    # The demo's run (as a training would leave it) and a user's own run beside it, on the same data.
    _plant_run(runs, "tsm_flow_set", data=store)
    _plant_run(runs, "mine", data=store)
    marker = yaml.safe_load((store / "demo.yaml").read_text())
    marker["runs"] = ["tsm_flow_set"]
    (store / "demo.yaml").write_text(yaml.safe_dump(marker))
    mine = _tree(runs / "mine")

    # A bad preprocessing setting of the demo: one line naming it, before anything runs.
    bad = subprocess.run(_demo_cli(tmp_path, store, "--preprocess-set", "short_sid=64"), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "short_sid" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, \
        bad.stderr
    again = subprocess.run(_demo_cli(tmp_path, store, "--set", "noise=3", "--preprocess-set", "jpeg_quality=85",
                                     "--verbose", *joined), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_some_ray_internals(again.stdout + again.stderr)  # --verbose: Ray prints as it does
    said = [line for line in again.stdout.splitlines() if "settings changed" in line]
    assert len(said) == 1 and "noise 2.0 -> 3.0" in said[0] and "tsm_flow_set" in said[0], again.stdout[-3000:]
    assert "jpeg_quality" in said[0]  # the demo's preprocessing settings take --preprocess-set
    assert json.loads((store / "preprocess.json").read_text())["settings"]["jpeg_quality"] == 85
    assert _tree(runs / "mine") == mine
    assert not (runs / "tsm_flow_set").exists()  # its folders too, not a tree of empty epoch_NNNN/
    assert pq.read_table(store / "clips").num_rows > 0  # cut again from the new videos
    assert yaml.safe_load((store / "demo.yaml").read_text())["synth"]["noise"] == 3.0


def _plant_demo_store(store: Path, runs: list[str]) -> None:
    """A store as an earlier demo left it (its record and outputs), made with settings
    other than the demo's today: the next demo replaces what it made."""
    for name in ("manifest/subactions.parquet", "clips/u0.parquet", "config.yaml", "preprocess.json"):
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(b"the demo's own output")
    (store / "demo.yaml").write_text(yaml.safe_dump({"made_by": "finegym-ray demo", "synth": {"seed": 7},
                                                     "preprocess": {"short_side": 96}, "train": None, "runs": runs}))


@pytest.mark.parametrize("how", ["a name that climbs out", "a link that points out", "a run on other data"])
def test_a_run_recorded_in_demo_yaml_deletes_only_the_demos_own_run(tmp_path, how):
    # The runs folder is shared with the user's trainings: the demo deletes a recorded
    # run only inside it, through no link, and only one trained on the demo's store.
    victim, store, runs = tmp_path / "victim", tmp_path / "d" / "store", tmp_path / "runs"
    _plant_run(victim.parent, victim.name, data=tmp_path / "their_data")
    if how == "a name that climbs out":
        _plant_demo_store(store, ["../victim"])
    elif how == "a link that points out":
        _plant_demo_store(store, ["tsm_flow_set"])
        runs.mkdir()
        (runs / "tsm_flow_set").symlink_to(victim)
    else:
        _plant_demo_store(store, ["victim"])
        runs = tmp_path
    before, theirs = _tree(store), _tree(victim)
    r = subprocess.run([*_demo_cli(tmp_path, store), "--runs", str(runs)], capture_output=True, text=True,
                       timeout=300)
    assert _tree(victim) == theirs
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    said = {"a name that climbs out": "not one plain folder name", "a link that points out": f"outside {runs}",
            "a run on other data": f"{victim} was not trained by the demo on its store {store}"}[how]
    assert len(errors) == 1 and said in errors[0], r.stderr
    assert _tree(store) == before


def test_a_demo_yaml_of_nested_aliases_is_refused_in_one_line_and_touches_nothing(tmp_path):
    from tests.support.hostile import alias_bomb

    store = tmp_path / "d" / "store"
    _plant_demo_store(store, [])
    # A million run names once its aliases are expanded, from about 200 bytes.
    record = (store / "demo.yaml").read_text().replace("runs: []", "runs: *f")
    (store / "demo.yaml").write_text(alias_bomb(levels=6, width=10) + record)
    before = _tree(store)
    r = subprocess.run(_demo_cli(tmp_path, store), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"{store / 'demo.yaml'}" in errors[0] and "aliases" in errors[0], r.stderr[:2000]
    assert len(errors[0]) < 1000, len(errors[0])
    assert _tree(store) == before


def test_a_demo_yaml_without_its_runs_is_refused_in_one_line_and_touches_nothing(tmp_path):
    from finegym_ray.demo import read_demo_record

    store = tmp_path / "store"
    _plant_demo_store(store, [])
    record = yaml.safe_load((store / "demo.yaml").read_text())
    del record["runs"]  # as another version wrote it
    (store / "demo.yaml").write_text(yaml.safe_dump(record))
    before = _tree(store)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(store / 'demo.yaml'))} is damaged or made by another "
                                         r"version: runs must be a list of run names; give the demo .* --store$"):
        read_demo_record(str(store))
    assert _tree(store) == before


def test_a_second_demo_on_a_store_being_written_is_refused_and_changes_nothing(tmp_path):
    store = tmp_path / "d" / "store"
    _plant_demo_store(store, [])
    before = _tree(tmp_path / "d")
    # Demo A at work: it holds the store's lease, as its preprocessing does.
    with writer_lease(str(store), what="demo A"):
        r = subprocess.run(_demo_cli(tmp_path, store, "--preprocess-set", "jpeg_quality=85"), capture_output=True,
                           text=True, timeout=300)
        after = {k: v for k, v in _tree(tmp_path / "d").items() if k != "store/lease.json"}
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "demo A" in errors[0] and "being written by another job" in errors[0], r.stderr
    assert after == before


def _stop_processes_of(root: str) -> None:
    """SIGTERM, then SIGKILL, this session's processes of the Ray whose temp folder is
    under ``root`` (GCS may ignore SIGTERM for long); returns once none is left."""
    def pids() -> set[int]:
        return set(own_pids_with(root)) | set(own_pids_with_env("RAY_TMPDIR", root))

    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 10
        while pids() and time.monotonic() < deadline:
            for pid in pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.2)
    assert not pids(), f"processes of the Ray in {root} outlived the test"


@contextlib.contextmanager
def _recorded_ray_cluster(num_cpus: int):
    """A head node started with `ray start`, as a user leaves one: Ray records its address
    on the host (RAY_TMPDIR/ray/ray_current_cluster), where a plain ray.init() finds and
    joins it. Yields (its address, the env of a shell on that host); stops exactly its
    processes (those whose command line holds its temp dir)."""
    root = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=root, RAY_AUTH_MODE="disabled")
    ray = Path(sys.executable).with_name("ray")
    try:
        for _ in range(2):  # a loaded machine can pass Ray's 30 s wait for its raylet
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            started = subprocess.run([str(ray), "start", "--head", f"--port={port}", f"--num-cpus={num_cpus}",
                                      "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={root}/ray"],
                                     env=env, capture_output=True, text=True, timeout=180)
            if started.returncode == 0:
                break
            _stop_processes_of(root)
        assert started.returncode == 0, started.stderr[-2000:]
        yield (Path(root) / "ray" / "ray_current_cluster").read_text().strip(), env
    finally:
        _stop_processes_of(root)
        shutil.rmtree(root, ignore_errors=True)


def test_the_demo_starts_its_own_ray_and_joins_a_running_cluster_only_when_told(tmp_path):
    # 7 CPUs: a number this machine's own local Ray does not have.
    with _recorded_ray_cluster(num_cpus=7) as (address, env):
        # Training too many workers for any of these clusters: the demo stops right after
        # it has connected and described its cluster (exit 2, nothing run).
        cmd = [sys.executable, "-m", "finegym_ray.cli", "demo", "--smoke-test", "--out", str(tmp_path / "d"),
               "--train-set", "workers=64"]
        own = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        joined = subprocess.run([*cmd, "--address", address], env=env, capture_output=True, text=True, timeout=300)
    assert own.returncode == 2 and joined.returncode == 2, own.stderr[-2000:] + joined.stderr[-2000:]
    assert "[ray] starting a local Ray on this machine for this demo (--address joins" in own.stdout, own.stdout
    assert "7 CPU" not in own.stdout, own.stdout
    assert f"[ray] joining the Ray cluster at {address} (--address {address})" in joined.stdout, joined.stdout
    assert re.search(r"^\[ray\] ready in .*: 1 node, 7 CPU", joined.stdout, re.M), joined.stdout


@pytest.mark.parametrize("setting, flag", [("epochs=3", "--train-set"), ("short_side=96", "--preprocess-set")])
def test_a_training_or_preprocessing_key_in_set_names_the_flag_it_belongs_to(tmp_path, setting, flag):
    from tests.test_cli import cli_no_ray

    r = cli_no_ray("demo", "--out", tmp_path / "demo", "--set", setting)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"{flag} {setting}" in line, line
    assert not (tmp_path / "demo").exists()


def test_clips_hashed_by_another_version_are_replaced_as_changed_settings_are(tmp_path, capsys):
    from finegym_ray.demo import claim_store
    from finegym_ray.synth.config import SynthConfig

    out, store = tmp_path / "d", tmp_path / "d" / "store"
    claim_store(str(out), SynthConfig(videos=2))
    # What a preprocessing run of another finegym-ray version left: its own settings hash.
    (store / "clips").mkdir(parents=True)
    (store / "clips" / "u.parquet").write_bytes(b"clips")
    (store / "preprocess.json").write_text(json.dumps({"hash": "0123456789ab", "settings": {}}))
    claim_store(str(out), SynthConfig(videos=2))
    assert not (store / "clips" / "u.parquet").exists() and not (store / "preprocess.json").exists()
    assert "another finegym-ray version" in capsys.readouterr().out
