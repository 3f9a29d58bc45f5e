"""Joining a Ray cluster, or starting one on this machine with settings that suit us."""

from __future__ import annotations

import os

# Ray ends an idle worker process after 1 s once a node has more worker processes than
# CPUs. On a small machine Ray Train's and Ray Data's actors alone pass that, so every
# switch between the training and validation datasets started a fresh sampling process
# (3 to 4 s to its first result on 2 cores, while the trainer waited). Kept a minute.
IDLE_WORKER_ENV = "RAY_idle_worker_killing_time_threshold_ms"
IDLE_WORKER_MS = 60_000


def init_ray(address: str | None = None, **kwargs) -> None:
    """``ray.init(address, configure_logging=False, **kwargs)``. A Ray that this starts
    (``address`` None and no Ray running on this machine, or "local") keeps idle worker
    processes for 60 s, unless ``RAY_idle_worker_killing_time_threshold_ms`` is already
    set (milliseconds). A running cluster that this joins keeps its own settings."""
    import ray

    os.environ.setdefault(IDLE_WORKER_ENV, str(IDLE_WORKER_MS))
    ray.init(address=address, configure_logging=False, **kwargs)
