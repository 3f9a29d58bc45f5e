"""The signed Tune state of a sweep folder (tune/state.py), through the filesystem that
Tune gets: what it writes is signed first, what it reads is the signed bytes, and a
folder holding state that this key did not sign is refused before anything is read."""

from __future__ import annotations

import os
import pickle
import stat

import pyarrow.fs as pafs
import pytest

from finegym_ray.tune import state as signed
from finegym_ray.tune.state import SNAPSHOT, SignedTuneState, state_key


def _write(state: SignedTuneState, name: str, data: bytes) -> None:
    """As Tune writes a file into its experiment folder."""
    with state.filesystem.open_output_stream(f"{state.path}/{name}") as f:
        f.write(data)


def _read(state: SignedTuneState, name: str) -> bytes:
    with state.filesystem.open_input_file(f"{state.path}/{name}") as f:
        return f.read()


def test_the_key_is_made_once_for_its_owner_alone(state_key_home):
    key, source = state_key()
    assert source == str(state_key_home / "finegym-ray" / "state.key")
    assert stat.S_IMODE(os.stat(source).st_mode) == 0o600 and len(key) >= signed.MIN_KEY_CHARS
    assert state_key() == (key, source)

    os.chmod(source, 0o640)
    with pytest.raises(ValueError, match="must be its owner's alone.*mode 640.*chmod 600") as e:
        state_key()
    assert "\n" not in str(e.value)


def test_the_key_from_the_environment_wins_and_must_be_long(monkeypatch, state_key_home):
    monkeypatch.setenv(signed.KEY_ENV, "k" * 40)
    assert state_key() == (b"k" * 40, signed.KEY_ENV)
    assert not (state_key_home / "finegym-ray").exists()
    monkeypatch.setenv(signed.KEY_ENV, "short")
    with pytest.raises(ValueError, match="FINEGYM_RAY_STATE_KEY holds 5 characters"):
        state_key()


def test_what_tune_writes_is_signed_and_what_it_reads_is_the_signed_bytes(tmp_path):
    folder = str(tmp_path / "sweep")
    state = SignedTuneState.open(folder, sweep="sweep")
    assert not state.holds_experiment_state()
    _write(state, "tuner.pkl", b"tuner v1")
    _write(state, "experiment_state-1.json", b"state v1")
    state.filesystem.create_dir(f"{state.path}/trial")
    _write(state, "trial/result.json", b"{}")  # not state: passes through unsigned
    assert (tmp_path / "sweep" / "tuner.pkl").read_bytes() == b"tuner v1"
    assert (tmp_path / "sweep" / SNAPSHOT).exists()

    again = SignedTuneState.open(folder, sweep="sweep")
    assert again.holds_experiment_state()
    # The driver was killed after signing v2 and before its upload: the folder holds
    # v1, which is accepted, and Tune reads v2.
    _write(again, "experiment_state-1.json", b"state v2")
    (tmp_path / "sweep" / "experiment_state-1.json").write_bytes(b"state v1")
    (tmp_path / "sweep" / "tuner.pkl").unlink()
    restored = SignedTuneState.open(folder, sweep="sweep")
    assert _read(restored, "experiment_state-1.json") == b"state v2"
    assert _read(restored, "tuner.pkl") == b"tuner v1"  # from the snapshot, though the folder lost it
    listed = {os.path.basename(i.path) for i in restored.filesystem.get_file_info(pafs.FileSelector(restored.path))}
    assert {"tuner.pkl", "experiment_state-1.json", "trial"} <= listed and SNAPSHOT in listed

    # A trial's pickled error is never read: Tune falls back to its error.txt.
    (tmp_path / "sweep" / "trial" / "error.pkl").write_bytes(b"anything")
    assert restored.filesystem.get_file_info(f"{restored.path}/trial/error.pkl").type == pafs.FileType.NotFound
    with pytest.raises(FileNotFoundError):
        restored.filesystem.open_input_stream(f"{restored.path}/trial/error.pkl")


def test_pickled_it_holds_neither_the_key_nor_the_state(tmp_path):
    state = SignedTuneState.open(str(tmp_path / "sweep"), sweep="sweep")
    _write(state, "tuner.pkl", b"tuner bytes")
    data = pickle.dumps(state.filesystem)
    key, _ = state_key()
    assert key not in data and b"tuner bytes" not in data
    copy = pickle.loads(data)
    assert type(copy.handler) is signed._Passthrough
    with copy.open_input_stream(f"{state.path}/tuner.pkl") as f:  # a plain view of the folder
        assert f.read() == b"tuner bytes"


@pytest.mark.parametrize("change", ["unsigned", "changed", "snapshot", "other key", "other sweep"])
def test_a_folder_with_state_this_key_did_not_sign_is_refused_with_one_line(tmp_path, monkeypatch, change):
    folder = tmp_path / "sweep"
    state = SignedTuneState.open(str(folder), sweep="sweep")
    _write(state, "tuner.pkl", b"tuner")
    _write(state, "experiment_state-1.json", b"state")
    expected = {"unsigned": "basic-variant-state-2.json is Tune state that this machine's key",
                "changed": "experiment_state-1.json was changed after this machine's sweep signed it",
                "snapshot": f"{SNAPSHOT}: its signature does not match",
                "other key": f"{SNAPSHOT}: its signature does not match",
                "other sweep": f"{SNAPSHOT} was signed for sweep 'sweep', not 'other'"}[change]
    if change == "unsigned":
        (folder / "basic-variant-state-2.json").write_bytes(b"planted")
    elif change == "changed":
        (folder / "experiment_state-1.json").write_bytes(b"planted")
    elif change == "snapshot":
        snapshot = (folder / SNAPSHOT).read_bytes()
        (folder / SNAPSHOT).write_bytes(snapshot.replace(b'"sweep": "sweep"', b'"sweep": "swept"'))
    elif change == "other key":
        monkeypatch.setenv(signed.KEY_ENV, "o" * 40)
    with pytest.raises(ValueError) as e:
        SignedTuneState.open(str(folder), sweep="other" if change == "other sweep" else "sweep")
    assert expected in str(e.value) and "\n" not in str(e.value), e.value
    assert "delete" in str(e.value) and "another sweep name" in str(e.value)


def test_a_folder_without_a_snapshot_but_with_tune_state_is_refused(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "tuner.pkl").write_bytes(b"from before signing, or planted")
    (tmp_path / "sweep" / "lease.json").write_bytes(b"{}")  # not Tune's state: never read by Tune as a pickle
    with pytest.raises(ValueError, match="tuner.pkl is Tune state that this machine's key .* never signed"):
        SignedTuneState.open(str(tmp_path / "sweep"), sweep="sweep")


def test_tune_neither_sees_nor_overwrites_the_sweeps_lease(tmp_path):
    # Tune copies every top-level *.json of its folder into its staging folder on restore
    # and uploads that copy at each save: an old lease.json over the live one.
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "lease.json").write_text('{"pid": 1, "what": "the live sweep"}')
    state = SignedTuneState.open(str(folder), sweep="sweep")
    listed = [os.path.basename(i.path) for i in state.filesystem.get_file_info(pafs.FileSelector(state.path))]
    assert "lease.json" not in listed
    assert state.filesystem.get_file_info(f"{state.path}/lease.json").type == pafs.FileType.NotFound
    _write(state, "lease.json", b'{"pid": 2, "what": "a stale copy"}')
    assert (folder / "lease.json").read_text() == '{"pid": 1, "what": "the live sweep"}'
