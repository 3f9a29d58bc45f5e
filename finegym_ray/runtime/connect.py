"""Joining a Ray cluster, or starting one on this machine with settings that suit us."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time

from ..errors import InputError
from .internals import cluster_to_join, node_ip_address, recorded_cluster_file

# Ray ends an idle worker process after 1 s once a node has more worker processes than
# CPUs. On a small machine Ray Train's and Ray Data's actors alone pass that, so every
# switch between the training and validation datasets started a fresh sampling process
# (3 to 4 s to its first result on 2 cores, while the trainer waited). Kept a minute.
IDLE_WORKER_ENV = "RAY_idle_worker_killing_time_threshold_ms"
IDLE_WORKER_MS = 60_000
# Set by Ray's job manager in a submitted job's driver: the job's runtime env.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
OVERRIDE_JOB_ENV = "RAY_OVERRIDE_JOB_RUNTIME_ENV"
# Ray Train's placement group cleaner (the actor that frees the CPUs of a trial that
# Tune stops) asks the State API, which finds its cluster by RAY_ADDRESS or else by
# looking for Ray processes on the host: beside another Ray (a notebook's ray.init())
# that fails with "Found multiple active Ray instances", the stopped trial keeps its CPUs
# and the next trial waits forever. So every worker of a job has RAY_ADDRESS naming the
# cluster it belongs to. Not through a runtime env (a worker setup hook, or env_vars for
# a Ray started here): a job with one cannot use the worker processes Ray starts ahead,
# and every task and actor waited seconds for a fresh process.
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"


def init_ray(address: str | None = None, *, local_note: str = "", **kwargs) -> None:
    """``ray.init(address, configure_logging=False, **kwargs)`` and a line that says which
    Ray: ``address`` (a command's ``--address``, which wins over the environment), else
    ``$RAY_ADDRESS``, else the cluster that ``ray start`` recorded on this machine, else a
    new local Ray ("local": always a new one). A Ray that this starts keeps idle worker
    processes for 60 s, unless ``RAY_idle_worker_killing_time_threshold_ms`` is already
    set (milliseconds). A running cluster that this joins keeps its own settings.

    Every task and actor of the job (Ray Data stages, Ray Train's controller and workers)
    gets this process's S3 endpoint and region (``storage.worker_env``) in its
    environment, so that all of them reach the bucket the driver reaches, whatever the
    nodes were started with, and ``RAY_ADDRESS`` naming its own cluster, whatever other
    Rays run on its host. A ``runtime_env`` passed in keeps its own values.
    ``local_note`` ends the line said when a local Ray starts (" for this demo ...")."""
    import ray

    from ..storage import worker_env
    from . import output

    os.environ.setdefault(IDLE_WORKER_ENV, str(IDLE_WORKER_MS))
    if address is None and not os.environ.get("RAY_ADDRESS"):
        stale = _dead_recorded_cluster()
        if stale:
            # ray.init() would try to join it and retry for minutes without a word.
            sys.stderr.write(f"[ray] the Ray cluster recorded on this machine ({stale}) is not running: "
                             f"starting a new local Ray\n")
            address = "local"
    # Before anything of Ray's runs: finding the cluster to join already logs (a warning
    # when several Rays run on this host), and that goes to Ray's log, not the terminal.
    output.before_init()
    try:
        joined = cluster_to_join(address)
    except (ConnectionError, ValueError) as e:
        # Ray's own error is a traceback whose advice is for its CLI: one line instead.
        reason = str(e).split(". ")[0].rstrip(".")
        raise InputError(f"{_chosen_by(address)}: {reason}; give --address HOST:PORT, the GCS address of the "
                         f"cluster to join (cluster/local.sh: its RAY_ADDRESS), or neither --address nor "
                         f"$RAY_ADDRESS for a local Ray of this command's own") from None
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    own_address = {"RAY_ADDRESS": joined} if joined else {}
    env = {**worker_env(), **own_address, **(runtime_env.get("env_vars") or {})}
    job_env = _submitted_job_env_vars()
    # Ray refuses a driver env var that the submitted job's runtime env also sets, even
    # to the same value: leave those out. One set differently (``--s3-endpoint`` given
    # to the job itself) must win, which only Ray's override switch allows.
    env = {k: v for k, v in env.items() if job_env.get(k) != v}
    override = any(k in job_env for k in env)
    if env:
        runtime_env["env_vars"] = env
    else:
        runtime_env.pop("env_vars", None)
    saved = os.environ.get(OVERRIDE_JOB_ENV)
    if override:
        os.environ[OVERRIDE_JOB_ENV] = "1"
    # The project's own lines only, Ray's internals to its log files (output.py);
    # --verbose brings Ray's output back, worker lines included.
    if output.verbose():
        kwargs.pop("log_to_driver", None)
    # Ray's start takes 5-25 s: said, so that the command is not silent meanwhile.
    if joined is None:
        print(f"[ray] starting a local Ray on this machine{local_note}", flush=True)
    else:
        print(f"[ray] joining the Ray cluster at {joined} ({_chosen_by(address)})", flush=True)
    t0 = time.monotonic()
    try:
        if joined is not None:
            ray.init(address=address, configure_logging=False, runtime_env=runtime_env or None, **kwargs)
        else:
            with _address_inherited_by_new_ray():
                ray.init(address="local", configure_logging=False, runtime_env=runtime_env or None, **kwargs)
        output.after_init()
        print(f"[ray] ready in {time.monotonic() - t0:.1f} s: {describe_resources(ray.cluster_resources())}",
              flush=True)
    finally:
        if override:
            if saved is None:
                os.environ.pop(OVERRIDE_JOB_ENV, None)
            else:
                os.environ[OVERRIDE_JOB_ENV] = saved


def _chosen_by(address: str | None) -> str:
    """What named the cluster that ``ray.init(address)`` joins, as the user gave it."""
    if address:
        env = os.environ.get("RAY_ADDRESS")
        ignored = f"; $RAY_ADDRESS {env} not used" if env and env != address else ""
        return f"--address {address}{ignored}"
    if os.environ.get("RAY_ADDRESS"):
        return f"$RAY_ADDRESS {os.environ['RAY_ADDRESS']}"
    return f"recorded by `ray start` on this machine in {recorded_cluster_file()}"


@contextlib.contextmanager
def _address_inherited_by_new_ray():
    """While a new local Ray starts: its GCS port chosen here (``RAY_GCS_SERVER_PORT``)
    and ``RAY_ADDRESS`` naming it, in this process's environment, which the Ray
    processes it starts and their workers inherit; this process's own environment is
    restored after. A port taken between the choice and Ray's start fails ray.init."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    saved = {name: os.environ.get(name) for name in (GCS_PORT_ENV, "RAY_ADDRESS")}
    os.environ[GCS_PORT_ENV] = str(port)
    os.environ["RAY_ADDRESS"] = f"{node_ip_address()}:{port}"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def describe_resources(resources: dict[str, float]) -> str:
    """Ray's cluster resources in words: nodes, CPUs, GPUs, memory and object store (GiB)."""
    nodes = sum(1 for k in resources if k.startswith("node:") and k != "node:__internal_head__")
    gib = 2 ** 30
    return (f"{nodes} node{'s' * (nodes != 1)}, {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
            f"{resources.get('memory', 0) / gib:.1f} GiB memory, "
            f"{resources.get('object_store_memory', 0) / gib:.1f} GiB object store")


def _dead_recorded_cluster() -> str | None:
    """The address in Ray's ``ray_current_cluster`` file when nothing answers there (a
    cluster killed without ``ray stop`` leaves the file), else None."""
    try:
        with open(recorded_cluster_file()) as f:
            recorded = f.read().strip()
    except OSError:
        return None
    host, _, port = recorded.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ValueError:
        return recorded  # not an address at all
    except OSError:
        return recorded
    return None


def _submitted_job_env_vars() -> dict[str, str]:
    """The env_vars of the runtime env this driver was submitted with ({} outside a job)."""
    text = os.environ.get(JOB_CONFIG_ENV)
    if not text:
        return {}
    try:
        runtime_env = json.loads(text).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
    return dict(runtime_env.get("env_vars") or {})
