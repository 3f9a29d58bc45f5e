"""Fixtures of the sweep tests."""

import pytest


@pytest.fixture(autouse=True)
def state_key_home(tmp_path, monkeypatch):
    """A config folder of the test's own, so that the key that signs sweep state
    (tune/state.py) is made there, as on a user's first sweep, never in the home
    folder; subprocesses started with os.environ find it too."""
    monkeypatch.delenv("FINEGYM_RAY_STATE_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"
