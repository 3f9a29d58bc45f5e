"""Runs that work from anywhere: absolute paths recorded (relative ones, as another
version recorded them, refused rather than guessed at), evaluate's --data override
(checked against the run's preprocessing hash), --checkpoint best|last and checkpoint
URIs, scores reused when the checkpoint is unchanged, fused folders that cannot
collide, and `submit`'s relative paths. Runs are checkpoints of untrained tiny models (what is evaluated needs weights,
not training); the Ray tests reuse the session's cluster and tiny store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from finegym_ray.cli import main
from finegym_ray.config import to_yaml
from finegym_ray.models.recognizers import MODELS
from finegym_ray.submit import job_paths
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TrainConfig, with_absolute_paths
from finegym_ray.train.evaluate import checkpoint_at_test, eval_folder, evaluate, fused_folder_name
from finegym_ray.train.run import _check_same_config

TINY = dict(depth=10, base_width=8, crop=32, test_short=48, test_views=1, test_crops=1, batch_size=4, segments=2)


def make_run(run: Path, *, data: str, runs: str, modality: str = "rgb", task: str = "subaction_event",
             class_names=("a", "b", "c"), data_hash: str | None = None, val_mean_class=(0.5,),
             pretrained: str | None = None) -> str:
    """RUN with one checkpoint per ``val_mean_class`` entry (epochs 0, 1, ...) of a freshly
    initialised tiny TSN, its config recorded with ``data`` and ``runs`` as given."""
    torch.manual_seed(0)
    config = TrainConfig(data=data, runs=runs, name=run.name, model="tsn", modality=modality, task=task,
                         pretrained=pretrained, **TINY)
    state = {"model": MODELS["tsn"](**config.model_kwargs(len(class_names))).state_dict()}
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(config))
    history = [{"epoch": e, "val_mean_class": v} for e, v in enumerate(val_mean_class)]
    for epoch in range(len(val_mean_class)):
        ckpt.write(str(run), epoch, state=state, config_yaml=to_yaml(config),
                   meta={"class_names": list(class_names), "data_hash": data_hash, "history": history[:epoch + 1]})
    return str(run)


def fake_store(path: Path, settings_hash: str) -> str:
    """A folder whose preprocessing settings hash is ``settings_hash`` (all the hash check reads)."""
    path.mkdir(parents=True)
    (path / "preprocess.json").write_text(json.dumps({"hash": settings_hash, "settings": {}}))
    return str(path)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finegym-ray: error: "), err
    return err[0]


# ------------------------------------------------------------------ no Ray

def test_configs_are_recorded_absolute_and_relative_recorded_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = with_absolute_paths(TrainConfig(data="store", runs="./runs", pretrained="w/r.pth"))
    assert (config.data, config.runs, config.pretrained) == (f"{tmp_path}/store", f"{tmp_path}/runs",
                                                             f"{tmp_path}/w/r.pth")
    assert with_absolute_paths(TrainConfig(data="s3://b/store", runs="file:///x/../runs")).data == "s3://b/store"
    assert with_absolute_paths(TrainConfig(runs="file:///x/../runs")).runs == "/runs"

    # A run recorded with relative paths (as another version did) is read as recorded:
    # resumed, the relative pretrained weights differ from any absolute ones...
    run = make_run(tmp_path / "runs" / "tsn_rgb", data="store", runs="runs", pretrained="w/r.pth",
                   data_hash="hash-of-the-run")
    resumed = with_absolute_paths(TrainConfig(**yaml.safe_load((Path(run) / "config.yaml").read_text())))
    with pytest.raises(ValueError, match=r"trained with other settings \(pretrained='w/r.pth'\)"):
        _check_same_config(run, resumed)
    # ... and evaluated, its clips are not taken from wherever "store" happens to be.
    with pytest.raises(ValueError, match="its recorded data store holds no preprocessing output"):
        checkpoint_at_test(run, verify_state=False)


def test_checkpoint_best_last_and_by_uri(tmp_path, capsys):
    run = make_run(tmp_path / "runs" / "tsn_rgb", data="unused", runs=str(tmp_path / "runs"),
                   val_mean_class=(0.2, 0.6, 0.4))
    last, best = ckpt.select(run), ckpt.select(run, "best")
    assert (last.epoch, best.epoch) == (2, 1)
    by_uri = ckpt.select(best.uri, "last")  # a checkpoint folder names itself, whatever `which`
    assert by_uri.epoch == 1 and by_uri.identity == best.identity != last.identity
    assert ckpt.open_at(run) is None  # a run folder is not a checkpoint folder
    # What evaluate --run RUN/epoch_NNNN reads (refused as "no such run" before).
    checkpoint, config = checkpoint_at_test(best.uri, verify_state=False)
    assert checkpoint.epoch == 1 and config.model == "tsn"
    # The newest checkpoint's results stay in RUN/eval/; another's get a folder of their own.
    assert eval_folder(last) == f"{run}/eval" and eval_folder(best) == f"{run}/eval/{best.uri.rsplit('/', 1)[-1]}"
    with pytest.raises(ValueError, match="best or last"):
        ckpt.select(run, "first")
    with pytest.raises(SystemExit):  # argparse's choices
        main(["evaluate", "--run", run, "--checkpoint", "first"])
    assert "invalid choice: 'first'" in capsys.readouterr().err


def test_data_override_is_refused_naming_both_hashes(tmp_path, capsys):
    ours = fake_store(tmp_path / "store", "hash-of-the-run")
    run = make_run(tmp_path / "runs" / "tsn_rgb", data=ours, runs=str(tmp_path / "runs"), data_hash="hash-of-the-run")
    other = fake_store(tmp_path / "other", "another-hash")
    assert main(["evaluate", "--run", run, "--data", other]) == 2
    line = one_error_line(capsys)
    assert "hash-of-the-run" in line and "another-hash" in line and f"--data {other}" in line
    # The same settings elsewhere (a copy): accepted, and it is what is scored.
    copy = fake_store(tmp_path / "copy", "hash-of-the-run")
    assert checkpoint_at_test(run, data=copy, verify_state=False)[1].data == copy
    # Its recorded data is checked too, should it have been cut again with other settings.
    (tmp_path / "store" / "preprocess.json").write_text(json.dumps({"hash": "recut"}))
    with pytest.raises(ValueError, match="its recorded data .* holds hash recut"):
        checkpoint_at_test(run, verify_state=False)


def test_fusing_runs_of_other_tasks_is_refused_before_any_work(tmp_path, capsys):
    a = make_run(tmp_path / "runs" / "a", data="unused", runs=str(tmp_path / "runs"))
    b = make_run(tmp_path / "runs" / "b", data="unused", runs=str(tmp_path / "runs"), task="set")
    assert main(["evaluate", "--run", a, "--fuse", b]) == 2  # before Ray starts, before the data is read
    line = one_error_line(capsys)
    assert "cannot fuse" in line and "task 'subaction_event' vs 'set'" in line
    with pytest.raises(ValueError, match="cannot fuse"):
        evaluate(a, fuse=b, say=lambda _m: None)
    assert not (Path(a) / "eval").exists() and not (Path(b) / "eval").exists()


def test_fused_folders_of_same_named_runs_under_other_roots_differ(tmp_path):
    one = ckpt.select(make_run(tmp_path / "x" / "runs" / "tsn_flow", data="u", runs="runs"))
    two = ckpt.select(make_run(tmp_path / "y" / "runs" / "tsn_flow", data="u", runs="runs"))
    names = {fused_folder_name(one, True), fused_folder_name(two, True)}
    assert len(names) == 2 and all(n.startswith("fused_tsn_flow_") for n in names)
    assert fused_folder_name(one, True) == fused_folder_name(ckpt.select(str(tmp_path / "x/runs/tsn_flow/")), True)
    assert fused_folder_name(one, False) != fused_folder_name(one, True)  # another checkpoint of it


def test_submit_sends_relative_paths_absolute_and_refuses_a_config_the_job_cannot_see(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, notes = job_paths(["--run", "runs/a", "--fuse=s3://b/runs/b", "--data", "/abs/store", "--set",
                             "data=store", "--set", "train.runs=./r", "--set", "epochs=3", "--smoke-test"])
    assert args == ["--run", f"{tmp_path}/runs/a", "--fuse", "s3://b/runs/b", "--data", "/abs/store", "--set",
                    f"data={tmp_path}/store", "--set", f"train.runs={tmp_path}/r", "--set", "epochs=3",
                    "--smoke-test"]
    assert len(notes) == 3 and all("uploaded working directory" in n for n in notes)
    root = Path(__file__).resolve().parents[2]
    # A stage's own --config is read from the upload: sent relative to the checkout.
    assert job_paths(["--config", str(root / "configs" / "tsm_flow_demo.yaml")])[0] == \
        ["--config", "configs/tsm_flow_demo.yaml"]
    (tmp_path / "mine.yaml").write_text("epochs: 1\n")
    with pytest.raises(ValueError, match="uploaded working directory .* submit's own --config"):
        job_paths(["--config", "mine.yaml"])


# ------------------------------------------------------------------ on the session's cluster

@pytest.fixture(scope="module")
def two_runs(tiny_store, tmp_path_factory):
    """A flow run (in TRAINED/runs) with two checkpoints, the best the first, and an RGB
    run (in OTHER/runs); both on tiny_store, recorded with absolute paths."""
    from finegym_ray.store import recorded_hash as settings_hash
    from finegym_ray.train.data import load_split_labels

    data, _ = tiny_store
    names = load_split_labels(data, "subaction_event", "val").class_names
    root = tmp_path_factory.mktemp("portable")
    trained = root / "trained"
    flow = make_run(trained / "runs" / "tsn_flow", data=data, runs=str(trained / "runs"), modality="flow",
                   class_names=names, data_hash=settings_hash(data), val_mean_class=(0.6, 0.3))  # best: epoch 0
    rgb = make_run(root / "other" / "runs" / "tsn_rgb", data=data, runs=str(root / "other" / "runs"),
                   class_names=names, data_hash=settings_hash(data))
    (root / "elsewhere").mkdir()
    return root, flow, rgb


def _mtimes(*folders: str) -> dict[str, int]:
    return {f: os.stat(Path(f) / "scores.parquet").st_mtime_ns for f in folders}


@pytest.mark.e2e
def test_evaluate_from_another_folder_and_a_second_fusion_reuses_the_scores(ray_cluster, two_runs, monkeypatch):
    root, flow, rgb = two_runs
    # The CLI, as a driver started in a folder that is neither the runs' nor the data's.
    r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "evaluate", "--run", rgb, "--fuse", flow,
                        "--address", ray_cluster.address], cwd=root / "elsewhere", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    fused = Path(rgb) / "eval" / fused_folder_name(ckpt.select(flow), True)
    assert json.loads((fused / "metrics.json").read_text())["fused"] == [rgb, flow]
    before = _mtimes(f"{rgb}/eval", f"{flow}/eval")

    # The same fusion again, from yet another folder: both runs' scores are reused.
    monkeypatch.chdir(root)
    said = []
    results = evaluate(rgb, fuse=flow, say=said.append)
    assert sum("reusing the scores" in line for line in said) == 2, said
    assert _mtimes(f"{rgb}/eval", f"{flow}/eval") == before
    assert results["fused"]["top1"] == json.loads((fused / "metrics.json").read_text())["top1"]
    # The newest checkpoint named by its URI is the same checkpoint: reused as well.
    said = []
    evaluate(ckpt.select(flow).uri, say=said.append)
    assert any("reusing the scores" in line for line in said) and _mtimes(f"{flow}/eval") == \
        {f"{flow}/eval": before[f"{flow}/eval"]}


@pytest.mark.cluster
def test_evaluate_as_a_job_with_relative_paths_the_best_checkpoint_and_a_data_override(ray_cluster, two_runs,
                                                                                       tiny_store, monkeypatch):
    from ray.job_submission import JobSubmissionClient

    from finegym_ray.submit import job_spec

    root, flow, _ = two_runs
    data, _ = tiny_store
    link = root / "store_link"  # the same clips under another name: accepted (same hash)
    link.symlink_to(data)
    cwd = Path(flow).parents[1]  # TRAINED/: the run and the link given relative to it, as submit sends them
    monkeypatch.chdir(cwd)
    args, _ = job_paths(["--run", os.path.relpath(flow, cwd), "--checkpoint", "best", "--data",
                         os.path.relpath(link, cwd)])
    assert args[1] == flow and args[5] == str(link)
    # submit's own job (this checkout uploaded as its working directory), started with
    # this interpreter: the session's cluster has no `python` with the package on PATH.
    client = JobSubmissionClient(f"http://{ray_cluster.head_node.webui_url}")
    with job_spec("evaluate", args) as spec:
        job = client.submit_job(entrypoint=spec["entrypoint"].replace("python ", f"{sys.executable} ", 1),
                                runtime_env=spec["runtime_env"])
    status = None
    for _ in range(600):
        status = client.get_job_status(job)
        if status.is_terminal():
            break
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert status.value == "SUCCEEDED", logs[-3000:]
    best = ckpt.select(flow, "best")
    out = Path(flow) / "eval" / best.uri.rsplit("/", 1)[-1]  # not the newest: a folder of its own
    assert f"-> {out}" in logs
    m = json.loads((out / "metrics.json").read_text())
    assert (m["data"], m["epoch"], m["checkpoint_sha256"]) == (str(link), 0, best.identity)
    # The same checkpoint named by its URI, with the same clips: its scores are reused.
    said = []
    evaluate(best.uri, data=str(link), say=said.append)
    assert any(f"reusing the scores in {out}" in line for line in said), said
