"""cluster/local.sh --token: a real head and worker node with Ray's token authentication.
The Jobs API refuses a submit without the token or with a wrong one; `finegym-ray submit
--token-file` and Ray's own RAY_AUTH_TOKEN_PATH lookup get in; the token is never
printed and never lands in the job's runtime env."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.support.cluster import running_cluster

# A head and a worker node of cluster/local.sh in token mode, and jobs submitted to it.
pytestmark = pytest.mark.cluster

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _env(**extra: str) -> dict[str, str]:
    # Nothing of the test process's own auth settings leaks in: each call says its own.
    return {k: v for k, v in os.environ.items() if k not in AUTH_VARS} | extra


@pytest.fixture(scope="module")
def token_cluster():
    """(state folder, Jobs API address) of a head + 1 worker node in token mode."""
    with running_cluster("fgt-", "--workers", "1", "--token", env=_env()) as state:
        yield state, (state / "dashboard").read_text().strip()


def _submit(dashboard: str, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A job that only prints the stage's help: the point is who may submit.
    cmd = [sys.executable, "-m", "finegym_ray.cli", "submit", "preprocess", "--address", dashboard, "--wait",
           *extra, "--", "--help"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_token_mode_refuses_submits_without_the_token_and_accepts_it(token_cluster, tmp_path):
    state, dashboard = token_cluster
    token_file = state / "auth_token"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    up_log = (state / "logs" / "head.log").read_text()
    assert token not in up_log

    # No token, and a wrong one (also through Ray's own env lookup): refused, nothing runs.
    wrong = tmp_path / "wrong"
    wrong.write_text("0" * 64)
    for extra, env in (((), _env(RAY_AUTH_MODE="disabled")),
                       (("--token-file", str(wrong)), _env(RAY_AUTH_MODE="disabled")),
                       ((), _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong)))):
        r = _submit(dashboard, *extra, env=env)
        assert r.returncode == 2 and "submitted raysubmit_" not in r.stdout, (r.stdout + r.stderr)[-2000:]
        assert "--token-file" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr

    r = _submit(dashboard, "--token-file", str(token_file), env=_env(RAY_AUTH_MODE="disabled"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "SUCCEEDED" in r.stdout and token not in r.stdout + r.stderr

    # What cluster/README.md tells users of `ray job ...`: Ray's own lookup of the file.
    code = ("import json, sys; from ray.job_submission import JobSubmissionClient; "
            "print(json.dumps([j.runtime_env for j in JobSubmissionClient(sys.argv[1]).list_jobs()]))")
    listed = subprocess.run([sys.executable, "-c", code, dashboard], capture_output=True, text=True, timeout=120,
                            env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file)))
    assert listed.returncode == 0, listed.stderr[-2000:]
    runtime_envs = json.loads(listed.stdout.strip().splitlines()[-1])
    assert runtime_envs and token not in json.dumps(runtime_envs)  # shown in the dashboard: no token there
