"""Submit a stage as a Ray job (Ray's JobSubmissionClient), optionally following it.

The job runs ``python jobs/<stage>.py ARGS`` with this checkout as its working
directory, so the cluster runs the code you have. Ray uploads it minus what the
checkout's ``.rayignore`` lists (credentials, environments, outputs, weights, videos,
Parquet: the one list, also cluster/aws.yaml's ``rsync_exclude``); without that file
nothing is uploaded. Where this is an installed package rather than a
checkout, it runs ``finegym-ray <stage> ARGS`` and the cluster's image must hold the
package.

Only non-secret settings go into the job's environment (the S3 endpoint and region):
a runtime env is shown in Ray's dashboard and logs, so credentials must reach the
workers from their own environment (instance profile, IRSA, a Kubernetes secret).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

# The one list of what never leaves this machine; Ray reads it from the working dir.
UPLOAD_IGNORE = ".rayignore"


def project_root() -> Path | None:
    """The checkout this package runs from (it has jobs/), or None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "jobs").is_dir() and (root / "pyproject.toml").exists() else None


def stages() -> list[str]:
    """Stages with a job entry point."""
    root = project_root()
    if root is None:
        return ["preprocess"]
    return sorted(p.stem for p in (root / "jobs").glob("*.py") if not p.stem.startswith("_"))


def config_as_overrides(path: str) -> list[str]:
    """A YAML config file as ``key=value`` overrides (dotted keys for sections), so that
    a config on this machine reaches the job without being uploaded."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")

    def flatten(node: dict, prefix: str) -> list[str]:
        out = []
        for k, v in node.items():
            if isinstance(v, dict):
                out.extend(flatten(v, f"{prefix}{k}."))
            else:
                out.append(f"{prefix}{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        return out

    return flatten(data, "")


def sweep_file_args(path: str) -> list[str]:
    """``--config`` for a sweep file inside the uploaded checkout, as the job sees it
    (relative to the checkout). A sweep names its base config by a path relative to its
    own folder and takes its name from its file: flattened into overrides it would lose
    both, so a sweep file elsewhere is refused."""
    root = project_root()
    resolved = Path(path).resolve()
    if root is None:
        raise ValueError("submit tune needs a checkout (this is an installed package): run it from the project")
    if not resolved.is_relative_to(root):
        raise ValueError(f"{path}: a sweep file must be inside the checkout the job uploads ({root}); "
                         f"copy it under configs/sweeps/")
    return ["--config", str(resolved.relative_to(root))]


def job_spec(stage: str, args: list[str]) -> dict[str, Any]:
    """Entry point and runtime env for ``stage`` with its command-line ``args``."""
    root = project_root()
    from .storage import worker_env

    env = worker_env()
    runtime_env: dict[str, Any] = {"env_vars": env} if env else {}
    quoted = " ".join(shlex.quote(a) for a in args)
    if root is not None:
        if not (root / UPLOAD_IGNORE).is_file():
            # Without the list Ray would upload everything here: keys, outputs, weights.
            raise ValueError(f"{root / UPLOAD_IGNORE} is missing: refusing to upload {root} without it")
        runtime_env["working_dir"] = str(root)
        entrypoint = f"python jobs/{stage}.py {quoted}".strip()
    else:
        entrypoint = f"finegym-ray {stage} {quoted}".strip()
    return {"entrypoint": entrypoint, "runtime_env": runtime_env}


def auth_headers(token_file: str | None) -> dict[str, str]:
    """The Jobs API header carrying the cluster's token read from ``token_file``; {} for
    None, which leaves it to Ray (it sends RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH's file or
    ~/.ray/auth_token when RAY_AUTH_MODE=token). The token goes only into this header:
    never into the job's runtime env, the output or a log."""
    if token_file is None:
        return {}
    token = Path(token_file).expanduser().read_text().strip()
    if not token:
        raise ValueError(f"{token_file}: the token file is empty")
    return {"Authorization": f"Bearer {token}"}


def submit(stage: str, address: str, args: list[str], *, wait: bool, submission_id: str | None = None,
           token_file: str | None = None) -> int:
    """Submit; print the job id; with ``wait`` follow the logs and return 0 only if the
    job succeeded (1 if it failed or was stopped). ``token_file``: see ``auth_headers``."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from ray.exceptions import AuthenticationError

    spec = job_spec(stage, args)
    headers = auth_headers(token_file)
    try:
        client = JobSubmissionClient(address, headers=headers or None)
        job_id = client.submit_job(entrypoint=spec["entrypoint"], runtime_env=spec["runtime_env"] or None,
                                   submission_id=submission_id)
    except AuthenticationError as e:
        # Ray's message explains its lookup at length; one line says what to do here.
        sent = "the token of --token-file" if headers else "no token (or Ray's default lookup's)"
        refused = "rejected" if "403" in str(e) or "nvalid" in str(e) else "needs a token"
        raise PermissionError(f"the Ray cluster at {address} {refused}; sent {sent}. Pass the cluster's token with "
                              "--token-file PATH (see cluster/README.md)") from None
    print(f"submitted {job_id}: {spec['entrypoint']}", flush=True)
    print(f"  logs:   ray job logs --address {address} --follow {job_id}", flush=True)
    if not wait:
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can close just before the status changes
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
