"""The checkpoint format (train/checkpoint.py), without Ray: complete only when verified,
fallback to the newest complete one, no code run from a checkpoint, retention."""

from __future__ import annotations

import json
import pickle
import random
import re

import numpy as np
import pytest
import torch

from finegym_ray import storage
from finegym_ray.train import checkpoint as ckpt
from tests.support.hostile import WritesMarker as _WritesMarker


def _write(run: str, epoch: int, val: float | None = None, history: list | None = None) -> str:
    metrics = {"epoch": epoch, "val_mean_class": val}
    state = {"model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch, "rng": ckpt.rng_state()}
    return ckpt.write(run, epoch, state=state, config_yaml=f"epochs: {epoch + 1}\n",
                      meta={"class_names": ["a", "b"], "data_hash": "h", "history": (history or []) + [metrics]})


def test_write_then_find_and_load_round_trip(tmp_path):
    run = str(tmp_path / "run")
    _write(run, 0)
    _write(run, 1)
    found = ckpt.find_latest(run, verify_state=True)
    assert found.epoch == 1 and found.uri == storage.join(run, "epoch_0002")
    assert found.meta["class_names"] == ["a", "b"] and found.meta["epoch"] == 1
    assert found.config_yaml == "epochs: 2\n"
    assert torch.equal(found.load_state()["model"]["w"], torch.full((3,), 1.0))
    manifest = json.loads((tmp_path / "run" / "epoch_0002" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"state.pt", "config.yaml", "meta.json"}


@pytest.mark.parametrize("damage", ["state.pt missing", "manifest missing", "state.pt truncated",
                                    "meta.json edited"])
def test_a_damaged_newest_checkpoint_is_passed_over_and_named(tmp_path, damage):
    run = str(tmp_path / "run")
    _write(run, 0)
    _write(run, 1)
    folder = tmp_path / "run" / "epoch_0002"
    if damage == "state.pt missing":  # what a non-atomic upload cut short leaves
        (folder / "state.pt").unlink()
    elif damage == "manifest missing":
        (folder / "manifest.json").unlink()
    elif damage == "state.pt truncated":
        data = (folder / "state.pt").read_bytes()
        (folder / "state.pt").write_bytes(data[: len(data) // 2])
    else:
        (folder / "meta.json").write_text((folder / "meta.json").read_text().replace('"h"', '"x"'))
    said = []
    found = ckpt.find_latest(run, say=said.append, verify_state=True)
    assert found.epoch == 0
    assert len(said) == 1 and "epoch_0002" in said[0]
    loaded, state = ckpt.load_latest(run, say=said.append)
    assert loaded.epoch == 0 and torch.equal(state["model"]["w"], torch.zeros(3))


def test_no_complete_checkpoint_is_none(tmp_path):
    run = str(tmp_path / "run")
    assert ckpt.find_latest(run) is None and ckpt.load_latest(run) is None
    _write(run, 0)
    (tmp_path / "run" / "epoch_0001" / "manifest.json").unlink()
    assert ckpt.find_latest(run) is None


def test_a_state_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    from finegym_ray.train.run import load_checkpoint_model

    run = str(tmp_path / "run")
    marker = tmp_path / "marker"
    ckpt.write(run, 0, state={}, config_yaml="task_version: 2\n", meta={"class_names": ["a", "b"], "history": []})
    # A hostile state.pt with a manifest that vouches for it, as anyone with write
    # access to a shared bucket could make.
    folder = tmp_path / "run" / "epoch_0001"
    torch.save({"model": _WritesMarker(str(marker))}, folder / "state.pt")
    data = (folder / "state.pt").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"bytes": len(data), "sha256": ckpt._sha256(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    found = ckpt.find_latest(run, verify_state=True)
    with pytest.raises(ckpt.UnsafeCheckpointError, match="refused"):
        found.load_state()
    with pytest.raises(ckpt.UnsafeCheckpointError):
        ckpt.load_latest(run)
    with pytest.raises(ckpt.UnsafeCheckpointError):
        load_checkpoint_model(found)
    assert not marker.exists()
    assert pickle.dumps(_WritesMarker("x"))  # the object itself pickles: the refusal is the loader's


@pytest.mark.parametrize("file,content,says", [
    ("meta.json", b'{"class_names": ["a", "b"], "history": [', "malformed JSON"),
    ("meta.json", b'{"epoch": 0}' + b" " * (17 << 20), "more than"),  # valid JSON, past the 16 MiB bound
    ("meta.json", b'{"epoch": ' + b"9" * 400 + b"}", "beyond 64 bits"),
    ("meta.json", b'["a", "b"]', "not a JSON object"),
    ("config.yaml", b"epochs: \xff\n", "not UTF-8"),
])
def test_a_malformed_or_huge_meta_json_vouched_for_is_one_error_naming_it(tmp_path, file, content, says):
    run = str(tmp_path / "run")
    _write(run, 0)
    _write(run, 1)
    # Written with a manifest that vouches for it, as anyone with write access to a
    # shared bucket could.
    folder = tmp_path / "run" / "epoch_0002"
    (folder / file).write_bytes(content)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][file] = {"bytes": len(content), "sha256": ckpt._sha256(content)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.open_at(str(folder))
    message = str(info.value)
    assert message.startswith(storage.join(run, "epoch_0002", file)) and says in message and "\n" not in message
    said = []
    assert ckpt.find_latest(run, say=said.append).epoch == 0  # passed over, and named
    assert len(said) == 1 and storage.join(run, "epoch_0002", file) in said[0]


def test_a_huge_manifest_is_passed_over_and_named(tmp_path):
    run = str(tmp_path / "run")
    _write(run, 0)
    _write(run, 1)
    manifest = tmp_path / "run" / "epoch_0002" / "manifest.json"
    manifest.write_text(manifest.read_text() + " " * (17 << 20))  # valid JSON, past the 16 MiB bound
    said = []
    assert ckpt.find_latest(run, say=said.append).epoch == 0
    assert len(said) == 1 and "manifest.json" in said[0] and "more than" in said[0]


def test_rng_states_load_with_weights_only_and_restore_every_generator(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = ckpt.rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(torch.load(path, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_prune_keeps_the_newest_k_and_the_best(tmp_path):
    run = str(tmp_path / "run")
    vals = [0.2, 0.9, 0.4, None, 0.5]  # epoch 3 not validated
    history = []
    for epoch, v in enumerate(vals):
        _write(run, epoch, v, history)
        history.append({"epoch": epoch, "val_mean_class": v})
        ckpt.prune(run, keep_last=2, keep_best=True)
    assert [f.epoch for f in ckpt.listing(run)] == [1, 3, 4]
    ckpt.prune(run, keep_last=1, keep_best=False)
    assert [f.epoch for f in ckpt.listing(run)] == [4]
    assert ckpt.find_latest(run, verify_state=True).epoch == 4
    # No empty folder is left behind for the ones deleted.
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("epoch_")) == ["epoch_0005"]


def test_prune_leaves_incomplete_folders_and_keep_zero_keeps_all(tmp_path):
    run = str(tmp_path / "run")
    for epoch in range(4):
        _write(run, epoch)
    (tmp_path / "run" / "epoch_0001" / "manifest.json").unlink()
    assert ckpt.prune(run, keep_last=0, keep_best=True) == []
    deleted = ckpt.prune(run, keep_last=1, keep_best=False)
    assert deleted == [storage.join(run, "epoch_0002"), storage.join(run, "epoch_0003")]
    assert [f.epoch for f in ckpt.listing(run)] == [0, 3]


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("keep_best", [False, True])
def test_prune_keeps_what_resume_would_use_when_the_newest_is_damaged(tmp_path, keep_best):
    run = str(tmp_path / "run")
    for epoch in range(3):
        _write(run, epoch, val=0.1 * epoch)
        ckpt.prune(run, keep_last=1, keep_best=keep_best)
    assert [f.epoch for f in ckpt.listing(run)] == [2]
    _flip_a_byte(tmp_path / "run" / "epoch_0003" / "state.pt")
    assert ckpt.load_latest(run) is None  # the rerun trains from the first epoch again
    history = []
    for epoch in range(2):
        _write(run, epoch, val=0.1 * epoch, history=history)
        history.append({"epoch": epoch, "val_mean_class": 0.1 * epoch})
        ckpt.prune(run, keep_last=1, keep_best=keep_best)
        resumed, _ = ckpt.load_latest(run)
        assert resumed.epoch == epoch
    # The damaged folder is newer than anything rewritten yet: it waits for its epoch.
    assert [f.epoch for f in ckpt.listing(run)] == [1, 2]


def test_damaged_checkpoints_do_not_count_towards_the_kept_ones(tmp_path):
    run = str(tmp_path / "run")
    for epoch in range(4):
        _write(run, epoch, val=[0.9, 0.2, 0.3, 0.1][epoch], history=[
            {"epoch": e, "val_mean_class": v} for e, v in enumerate([0.9, 0.2, 0.3][:epoch])])
    _flip_a_byte(tmp_path / "run" / "epoch_0003" / "state.pt")
    _flip_a_byte(tmp_path / "run" / "epoch_0001" / "state.pt")  # the best by val_mean_class
    deleted = ckpt.prune(run, keep_last=2, keep_best=True)
    # Kept: the newest two that verify (epochs 3 and 1) and the best of those that
    # verify (epoch 1 again); the damaged epochs 0 and 2 are of no use to anyone.
    assert deleted == [storage.join(run, "epoch_0001"), storage.join(run, "epoch_0003")]
    assert [f.epoch for f in ckpt.listing(run)] == [1, 3]
    assert ckpt.find_best(run, verify_state=True).epoch == 1


def test_rewriting_an_epoch_never_leaves_a_stale_manifest_vouching(tmp_path):
    run = str(tmp_path / "run")
    _write(run, 0)
    folder = tmp_path / "run" / "epoch_0001"
    old_manifest = (folder / "manifest.json").read_text()
    _write(run, 0, val=0.7)
    assert (folder / "manifest.json").read_text() != old_manifest
    assert ckpt.find_latest(run, verify_state=True).meta["history"][-1]["val_mean_class"] == 0.7


def test_checkpoints_on_s3(s3_prefix):
    run = storage.join(s3_prefix, "run")
    _write(run, 0)
    _write(run, 1)
    storage.delete(storage.join(run, "epoch_0002", "state.pt"))
    loaded, state = ckpt.load_latest(run)
    assert loaded.epoch == 0 and torch.equal(state["model"]["w"], torch.zeros(3))


def test_folders_count_epochs_from_one_as_the_log_does(tmp_path):
    run = str(tmp_path / "run")
    uri = _write(run, 0)
    assert uri == storage.join(run, "epoch_0001") and ckpt.dir_name(0) == "epoch_0001"
    found = ckpt.find_latest(run, verify_state=True)
    assert found.epoch == 0 and found.meta["history"][-1]["epoch"] == 0  # indices inside stay 0-based


def _as_format_1(folder) -> None:
    """The checkpoint a folder holds as an earlier finegym-ray wrote it: named by its
    0-based epoch, manifest format 1."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    folder.rename(folder.parent / f"epoch_{manifest['epoch']:04d}")


def test_a_checkpoint_of_another_format_is_refused_in_one_line_never_passed_over(tmp_path):
    run = str(tmp_path / "run")
    for epoch in (0, 1):
        _write(run, epoch)
    for epoch in (0, 1):  # epoch_0001 -> epoch_0000 before epoch_0002 -> epoch_0001
        _as_format_1(tmp_path / "run" / f"epoch_{epoch + 1:04d}")
    newest = storage.join(run, "epoch_0001")
    refusal = rf"^{re.escape(run)}/epoch_000[01]: checkpoint format 1, this finegym-ray reads 2 .*train the run again"
    for read in (lambda: ckpt.find_latest(run, verify_state=True), lambda: ckpt.load_latest(run),
                 lambda: ckpt.open_checkpoint(run), lambda: ckpt.open_checkpoint(newest),
                 lambda: ckpt.prune(run, keep_last=1, keep_best=False)):
        with pytest.raises(ckpt.CheckpointFormatError, match=refusal) as info:
            read()
        assert "\n" not in str(info.value)
    assert [f.uri for f in ckpt.listing(run)] == [storage.join(run, "epoch_0000"), newest]  # nothing pruned


def test_checkpoints_under_a_doubled_slash_are_found_under_either_spelling(s3_prefix):
    bucket, _, prefix = s3_prefix[len("s3://"):].partition("/")
    doubled, single = f"s3://{bucket}//{prefix}//run//", f"s3://{bucket}/{prefix}/run"
    for epoch in range(3):
        _write(doubled, epoch)
    for run in (doubled, single):
        assert [f.epoch for f in ckpt.listing(run)] == [0, 1, 2]
        assert ckpt.find_latest(run, verify_state=True).epoch == 2
        assert ckpt.load_latest(run)[0].epoch == 2
    assert ckpt.prune(doubled, keep_last=2, keep_best=False) == [storage.join(doubled, "epoch_0001")]
    assert [f.epoch for f in ckpt.listing(single)] == [1, 2]


def test_open_checkpoint_takes_a_run_or_one_of_its_epoch_folders(tmp_path):
    """What feature extraction's --run takes: each refusal names the folder and why."""
    run = str(tmp_path / "run")
    _write(run, 0)
    _write(run, 1)
    newest = ckpt.open_checkpoint(run + "/")
    assert newest.uri == storage.join(run, "epoch_0002") and ckpt.run_of(newest.uri) == run
    first = ckpt.open_checkpoint(storage.join(run, "epoch_0001"))
    assert first.epoch == 0 and ckpt.run_of(first.uri) == run
    with pytest.raises(FileNotFoundError, match=r"/run/epoch_0007: no such checkpoint folder$"):
        ckpt.open_checkpoint(storage.join(run, "epoch_0007"))
    with pytest.raises(FileNotFoundError, match=r"/run/epoch_1: no such checkpoint folder$"):
        ckpt.open_checkpoint(storage.join(run, "epoch_1"))
    with pytest.raises(FileNotFoundError, match=r"/nothing: no such run \(a run is RUNS/NAME"):
        ckpt.open_checkpoint(str(tmp_path / "nothing"))
    (tmp_path / "run" / "epoch_0001" / "manifest.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"/run/epoch_0001: no manifest.json"):
        ckpt.open_checkpoint(storage.join(run, "epoch_0001"))
    (tmp_path / "run" / "epoch_0002" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"/run: no complete checkpoint \(train the run first\)$"):
        ckpt.open_checkpoint(run)
