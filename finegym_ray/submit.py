"""Submit a stage as a Ray job (Ray's JobSubmissionClient), optionally following it.

The job runs ``python jobs/<stage>.py ARGS`` in a working directory that holds only
what a job needs of this checkout (``UPLOAD``: the package's Python files, the job entry
points, the configs, pyproject.toml), so the cluster runs the code you have. Nothing
else is uploaded: not keys and tokens of any tool, outputs, weights or data, whatever
their names; within those folders ``.rayignore``'s patterns are kept back too (a
checkout without that file is not uploaded). Where this is an installed package rather
than a checkout, it runs ``finegym-ray <stage> ARGS`` and the cluster's image must hold
the package.

Only non-secret settings go into the job's environment (the S3 endpoint and region):
a runtime env is shown in Ray's dashboard and logs, so credentials must reach the
workers from their own environment (instance profile, IRSA, a Kubernetes secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

# What a job reads of the checkout, by top-level entry: a file, or a folder and the
# names of its files (at any depth) that are uploaded. Everything else stays here.
UPLOAD = {"pyproject.toml": None, "finegym_ray": "*.py", "jobs": "*.py", "configs": "*.yaml"}
# The one list of what never leaves this machine (also cluster/aws.yaml's rsync_exclude
# and Ray's own `ray job submit --working-dir .`): kept back inside UPLOAD's folders too.
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
        raise InputError(f"{path}: expected a mapping at the top level")

    def flatten(node: dict, prefix: str) -> list[str]:
        out = []
        for k, v in node.items():
            if isinstance(v, dict):
                out.extend(flatten(v, f"{prefix}{k}."))
            else:
                value = yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
                out.append(f"{prefix}{k}={value}")
        return out

    return flatten(data, "")


def sweep_file_args(path: str) -> list[str]:
    """``--config`` for a sweep file among the uploaded configs, as the job sees it
    (relative to the checkout). A sweep names its base config by a path relative to its
    own folder and takes its name from its file: flattened into overrides it would lose
    both, so a sweep file elsewhere is refused."""
    root = project_root()
    if root is None:
        raise InputError("submit tune needs a checkout (this is an installed package): run it from the project")
    uploaded = _uploaded_path(path)
    if uploaded is None:
        raise InputError(f"{path}: a sweep file must be inside the checkout's configs, which the job uploads "
                         f"({root / 'configs'}, *.yaml); copy it under configs/sweeps/")
    return ["--config", uploaded]


def _uploaded_path(path: str) -> str | None:
    """``path`` relative to the checkout where the job's upload holds that file, else None."""
    root = project_root()
    resolved = Path(path).resolve()
    if root is None or not resolved.is_relative_to(root):
        return None
    relative = str(resolved.relative_to(root))
    return relative if relative in upload_files(root) else None


# Stage options and --set keys (the last part of a dotted key: train.data) that name
# local files or folders. A job runs in its uploaded working directory on the cluster,
# so a path relative to where submit ran is made absolute before it is sent.
PATH_OPTIONS = ("--annotations", "--videos", "--out", "--data", "--runs", "--run", "--fuse", "--store")
PATH_SET_KEYS = ("data", "runs", "pretrained", "sweeps")


def _relative_local(value: str) -> bool:
    from .storage import parse_uri

    try:
        loc = parse_uri(value)
    except ValueError:
        return False
    return not loc.is_s3 and not value.startswith("file://") and not os.path.isabs(value)


def job_paths(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` of a stage with its relative local paths made absolute (against this
    directory), and a line per change. A job runs in its uploaded working directory
    (this checkout, unpacked on the cluster), where a relative path would name something
    else. A stage's ``--config`` is read by the job from the upload: one inside the
    checkout is sent relative to it; one outside is refused (ValueError) with a hint."""
    out, notes = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg.startswith("--") and name in (*PATH_OPTIONS, "--config"):
            if eq:
                value, step = inline, 1
            elif i + 1 < len(args):
                value, step = args[i + 1], 2
            else:
                out.append(arg)
                break
            if _relative_local(value) or (name == "--config" and not value.startswith("s3://")):
                value = _config_in_checkout(value) if name == "--config" else _absolute(value, name, notes)
            out += [name, value]
            i += step
            continue
        if arg == "--set" and i + 1 < len(args):
            key, eq, value = args[i + 1].partition("=")
            if eq and key.rsplit(".", 1)[-1] in PATH_SET_KEYS and _relative_local(value):
                value = _absolute(value, f"--set {key}", notes)
            out += ["--set", f"{key}{eq}{value}"]
            i += 2
            continue
        out.append(arg)
        i += 1
    return out, notes


def _absolute(value: str, what: str, notes: list[str]) -> str:
    resolved = os.path.abspath(value)
    notes.append(f"{what} {value} is relative to this directory; sent as {resolved} (a job runs in its uploaded "
                 f"working directory on the cluster, where {value} would name something else)")
    return resolved


def _config_in_checkout(path: str) -> str:
    """A stage's --config as the job sees it: relative to the uploaded checkout."""
    uploaded = _uploaded_path(path)
    if uploaded is not None:
        return uploaded
    root = project_root()
    raise InputError(f"--config {path}: the job reads its config from its uploaded working directory "
                     f"({root or 'the installed package'}: of its files only configs/**/*.yaml), which does not hold "
                     f"this file; use submit's own --config (sent as --set overrides) or copy the file under configs/")


def upload_files(root: Path) -> list[str]:
    """The files of the checkout ``root`` that a job gets, relative to it (sorted): those
    ``UPLOAD`` names, less hidden files, symbolic links and what ``.rayignore`` lists."""
    if not (root / UPLOAD_IGNORE).is_file():
        # The list keeps back what slipped into the uploaded folders (a secrets.yaml in configs/).
        raise InputError(f"{root / UPLOAD_IGNORE} is missing: refusing to upload {root} without it")
    lines = (root / UPLOAD_IGNORE).read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    files = []
    for top, names in UPLOAD.items():
        if names is None:
            files += [top] if (root / top).is_file() and not (root / top).is_symlink() else []
            continue
        for folder, dirs, found in os.walk(root / top):  # symbolic links to folders are not followed
            dirs[:] = [d for d in dirs if not _kept_back(d, True, ignored)]
            files += [os.path.relpath(os.path.join(folder, f), root) for f in found
                      if fnmatch.fnmatchcase(f, names) and not _kept_back(f, False, ignored)
                      and not os.path.islink(os.path.join(folder, f))]
    return sorted(files)


def _kept_back(name: str, is_dir: bool, patterns: list[str]) -> bool:
    """Whether a file or folder called ``name`` stays here: a hidden one (``.envrc``,
    ``.vault-token``: never code or config), or one matching a ``.rayignore`` pattern
    (names and globs matched at any depth, a trailing / for folders only: the only forms
    that file uses, tests/cluster/test_configs.py)."""
    return name.startswith(".") or any(fnmatch.fnmatchcase(name, p.rstrip("/")) for p in patterns
                                       if is_dir or not p.endswith("/"))


@contextlib.contextmanager
def job_spec(stage: str, args: list[str]) -> Iterator[dict[str, Any]]:
    """Entry point and runtime env for ``stage`` with its command-line ``args``. From a
    checkout the job's working directory is a copy of ``upload_files``, which lasts
    until the block ends: submit inside it."""
    root = project_root()
    from .storage import worker_env

    env = worker_env()
    runtime_env: dict[str, Any] = {"env_vars": env} if env else {}
    quoted = " ".join(shlex.quote(a) for a in args)
    if root is None:
        yield {"entrypoint": f"finegym-ray {stage} {quoted}".strip(), "runtime_env": runtime_env}
        return
    files = upload_files(root)
    with tempfile.TemporaryDirectory(prefix="finegym_upload_") as staged:
        for rel in files:
            (Path(staged) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, Path(staged) / rel)
        runtime_env["working_dir"] = staged
        yield {"entrypoint": f"python jobs/{stage}.py {quoted}".strip(), "runtime_env": runtime_env}


def auth_headers(token_file: str | None) -> dict[str, str]:
    """The Jobs API header carrying the cluster's token read from ``token_file``; {} for
    None, which leaves it to Ray (it sends RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH's file or
    ~/.ray/auth_token when RAY_AUTH_MODE=token). The token goes only into this header:
    never into the job's runtime env, the output or a log."""
    if token_file is None:
        return {}
    token = Path(token_file).expanduser().read_text().strip()
    if not token:
        raise InputError(f"{token_file}: the token file is empty")
    return {"Authorization": f"Bearer {token}"}


# Where a job goes without --address, first set first (Ray's own order). Ray's job client
# puts these before the address it is given (ray.dashboard.utils.
# get_address_for_submission_client): they are hidden from it, so that --address wins.
ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the Jobs API of a head on this machine
LAST_LINES = 20  # of a failed job's log, shown with its status


def jobs_address(address: str | None) -> tuple[str, str]:
    """The address a job is sent to and what chose it: ``address`` (``--address``) when
    given, else the first of ``ADDRESS_VARS`` that is set, else ``DEFAULT_ADDRESS``."""
    if address:
        return address, f"--address {address}"
    for var in ADDRESS_VARS:
        if os.environ.get(var):
            return os.environ[var], f"${var} {os.environ[var]}"
    return DEFAULT_ADDRESS, f"the default {DEFAULT_ADDRESS}"


@contextlib.contextmanager
def _address_vars_hidden() -> Iterator[None]:
    saved = {var: os.environ.pop(var) for var in ADDRESS_VARS if var in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def submit(stage: str, address: str | None, args: list[str], *, wait: bool, submission_id: str | None = None,
           token_file: str | None = None) -> int:
    """Submit to ``address`` (None: see ``jobs_address``); print the job id; with
    ``wait`` follow the logs and return 0 only if the job succeeded (1 if it failed or was
    stopped, with Ray's reason and the job's last lines). ``token_file``: see
    ``auth_headers``."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    from .runtime.output import quiet_client

    quiet_client()  # Ray's packaging and upload lines: to a log file unless --verbose
    headers = auth_headers(token_file)
    address, chosen_by = jobs_address(address)
    with job_spec(stage, args) as spec:  # Ray uploads the working directory in submit_job
        try:
            with _address_vars_hidden():
                client = JobSubmissionClient(address, headers=headers or None)
            job_id = client.submit_job(entrypoint=spec["entrypoint"], runtime_env=spec["runtime_env"] or None,
                                       submission_id=submission_id)
        except AuthenticationError as e:
            # Ray's message explains its lookup at length; one line says what to do here.
            sent = "the token of --token-file" if headers else "no token (or Ray's default lookup's)"
            refused = "rejected" if "403" in str(e) or "nvalid" in str(e) else "needs a token"
            raise PermissionError(f"the Ray cluster at {address} {refused}; sent {sent}. Pass the cluster's token "
                                  "with --token-file PATH (see cluster/README.md)") from None
    used = client.get_address()  # a cluster address (host:6379, ray://) becomes the Jobs API URL it serves
    print(f"submitted {job_id}: {spec['entrypoint']}", flush=True)
    print(f"  address: {used} ({chosen_by})", flush=True)
    print(f"  logs:   ray job logs --address {used} --follow {job_id}", flush=True)
    if not wait:
        return 0

    from .runtime.output import JobLogFilter

    shown = JobLogFilter()

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(shown.feed(lines))
            sys.stdout.flush()
        sys.stdout.write(shown.close())

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can close just before the status changes
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", flush=True)
    if status == JobStatus.SUCCEEDED:
        return 0
    print(failure_report(client.get_job_info(job_id), client.get_job_logs(job_id), job_id=job_id, address=used,
                         shown=shown.seen), flush=True)
    return 1


def failure_report(info: Any, log: str, *, job_id: str, address: str, shown: int = 0) -> str:
    """Why the job ``info`` (Ray's JobDetails) did not succeed: Ray's reason and the
    driver's exit code, the last lines of its ``log`` after the first ``shown`` (those
    already followed on the screen), and where the whole log is."""
    from .runtime.internals import job_log_name

    # Ray's message for a failed entry point goes on with the log's tail, shown below.
    reason = (info.message or "").strip().partition("\n")[0].partition(", last available logs")[0]
    lines = [f"  reason: {reason or 'none given by Ray'}"]
    if info.driver_exit_code is not None and "exit code" not in lines[0]:
        lines[0] += f" (exit code {info.driver_exit_code})"
    last = [line for line in log.splitlines()[shown:] if line.strip()][-LAST_LINES:]
    if last:
        which = f"last {len(last)} lines" if len(last) > 1 else "last line"
        lines.append(f"  {which} of its log{' (after those above)' if shown else ''}:")
        lines += [f"    {line}" for line in last]
    elif not log.strip():
        lines.append("  its log is empty (the job ended before its entry point wrote a line)")
    lines.append(f"  full log: ray job logs --address {address} {job_id} (the file {job_log_name(job_id)} in the "
                 f"logs folder of the head node's Ray session, <ray temp dir>/session_latest/logs)")
    return "\n".join(lines)
