"""Every use of Ray's private APIs (names with a leading underscore, ``ray._private``,
``ray._common``) and of internals that Ray Tune, Ray Train and the autoscaler offer no
public API for, each in a small function: a Ray upgrade checks these first."""

from __future__ import annotations

import signal
from typing import Any


def cluster_to_join(address: str | None) -> str | None:
    """The GCS address (host:port) of the running cluster that ``ray.init(address)``
    would join, None when it would start a new local Ray (ray.init's own rule)."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address)


def node_ip_address() -> str:
    """This machine's address as Ray names its nodes."""
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def recorded_cluster_file() -> str:
    """The file in which ``ray start`` records the cluster it started on this machine."""
    from ray._common.utils import get_ray_address_file

    return get_ray_address_file(None)


def job_log_name(submission_id: str) -> str:
    """The name of a submitted job's log file in its node's session logs folder."""
    from ray.dashboard.modules.job.common import JOB_LOGS_PATH_TEMPLATE

    return JOB_LOGS_PATH_TEMPLATE.format(submission_id=submission_id)


def session_logs_dir() -> str | None:
    """The logs folder of the Ray session this process started or joined, None where it
    has no node of its own."""
    try:
        from ray._private import worker as ray_worker

        return ray_worker._global_node.get_logs_dir_path() if ray_worker._global_node else None
    except Exception:  # a joined cluster's driver has no node of its own in some setups
        return None


def worker_line_dispatcher():
    """Ray's dispatcher of the lines that workers print, to the driver's printers."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    return global_worker_stdstream_dispatcher


def route_raylet_messages(write) -> None:
    """Send what raylets push to this driver (worker-pool warnings and the like), which
    Ray's error thread prints itself (``print_to_stdstream`` with pid "raylet", not
    through the worker line dispatcher), to ``write(text)`` instead."""
    from ray._private import worker as ray_worker

    printer = ray_worker.print_to_stdstream
    if getattr(printer, "routed", False):
        return

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            write("".join(f"(raylet) {line}\n" for line in data.get("lines", ())))
        else:
            printer(data, ignore_prefix)

    print_to_stdstream.routed = True
    ray_worker.print_to_stdstream = print_to_stdstream


def autoscaler_report() -> dict:
    """The autoscaler's last status report in the GCS ({} when there is none)."""
    import json

    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    return (json.loads(raw).get("autoscaler_report") if raw else None) or {}


def runs_autoscaler_v2() -> bool:
    """Whether the connected cluster runs Ray's v2 autoscaler (KubeRay marks it so)."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    return bool(is_autoscaler_v2(fetch_from_server=True))


def resource_demands() -> Any:
    """The resource requests that the connected cluster cannot place yet (the v2
    autoscaler SDK's ``ClusterStatus.resource_demands``)."""
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status

    return get_cluster_status(ray.get_runtime_context().gcs_address).resource_demands


def dashboard_running() -> bool:
    """Whether the connected cluster runs the dashboard (its address is in the GCS)."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    return bool(_internal_kv_get(ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD))


def tune_state_patterns() -> tuple[str, ...]:
    """Names (fnmatch patterns) of the files in a Tune experiment folder that Tune
    unpickles on restore: its own state, the searcher's and the callbacks'."""
    from ray.tune.callback import CallbackList
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.impl.tuner_internal import _TUNER_PKL
    from ray.tune.search import BasicVariantGenerator, Searcher, SearchGenerator

    return (_TUNER_PKL, *(kind.CKPT_FILE_TMPL.format("*")
                          for kind in (TuneController, BasicVariantGenerator, SearchGenerator, Searcher, CallbackList)))


def tune_experiment_state_pattern() -> str:
    """The name (fnmatch pattern) of Tune's experiment state file, which a sweep
    restores from."""
    from ray.tune.execution.tune_controller import TuneController

    return TuneController.CKPT_FILE_TMPL.format("*")


class AbortOnCtrlC:
    """A Ray Train trainer (before the trainer class among the bases) whose Ctrl-C
    aborts the run as Ray Train's own handler does (the controller stops its workers)
    and then raises KeyboardInterrupt out of ``fit()``; a second Ctrl-C while the abort
    runs raises it at once. Ray Train's handler ends with ``sys.exit(0)`` inside
    ``ray.get``, which Ray's core turns into ``SystemExit(1)``."""

    def _register_sigint_handler(self, controller) -> None:
        # Overrides Ray Train's (data_parallel_trainer.py), which fit() calls with the
        # run's controller actor just before it waits for the run.
        import ray

        aborting = False

        def stop(_signum, _frame) -> None:
            nonlocal aborting
            if not aborting:
                aborting = True
                try:
                    ray.get(controller.abort.remote())
                except ray.exceptions.RayActorError:
                    pass  # abort ends the controller's process once the workers are stopped
            # Raised here, inside ray.get, it comes out of ray.get as KeyboardInterrupt.
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, stop)
