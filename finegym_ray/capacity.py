"""Will the job fit, and is it moving: a check before a job starts and a watchdog while it runs.

A Ray job that asks for more than its cluster holds does not fail: its tasks, actors and
placement groups wait, and Ray Data, whose tasks get only the CPUs that training
workers leave (``ExecutionOptions.exclude_resources``), submits nothing and waits too.
:func:`check_capacity` refuses such a job before it starts, naming what it needs and
what the cluster has; :class:`StallWatchdog` says, while a job runs, when a stage has
made no progress for a while and what Ray is waiting for.

Every job builds its list of :class:`Need` (``train_needs``, ``sweep_needs``,
``preprocess_needs``, or its own) and calls ``check_capacity(needs, what="...")``.

A cluster with an autoscaler holds less than it can grow to: there the check passes
(the watchdog still tells of requests that wait); ``FINEGYM_RAY_CAPACITY_CHECK=0``
turns it off anywhere. ``FINEGYM_RAY_STALL_WARNING_S`` (seconds, default 300; 0: off) sets
how long a stage may make no progress before the watchdog says so.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InputError

CHECK_ENV = "FINEGYM_RAY_CAPACITY_CHECK"
STALL_ENV = "FINEGYM_RAY_STALL_WARNING_S"
DEFAULT_STALL_WARNING_S = 300.0
# A Ray Data map task asks for one CPU (map_batches' default), and Ray Data submits one
# only while a whole CPU is free beyond what training holds: one is the minimum that
# lets the input pipeline of a training run move at all.
DATA_TASK = {"CPU": 1.0}


class CapacityError(InputError):
    """The connected cluster cannot hold what a job asks for (bad input: exit 2)."""


@dataclass(frozen=True)
class Need:
    """``count`` Ray tasks, actors or placement group bundles of ``bundle`` resources
    each (``{"CPU": 1.0, "GPU": 1.0}``); ``label`` says what they are ("train workers")."""

    label: str
    count: int
    bundle: dict[str, float]


def _fmt(x: float) -> str:
    return f"{x:g}"


def _describe(need: Need) -> str:
    each = " + ".join(f"{_fmt(v)} {k}" for k, v in need.bundle.items() if v > 0) or "nothing"
    return f"{need.count} {need.label} x {each}" if need.count != 1 else f"{each} for {need.label}"


def totals(needs: list[Need]) -> dict[str, float]:
    """Resources of ``needs`` summed by kind (CPU, GPU, ...)."""
    out: dict[str, float] = {}
    for need in needs:
        for kind, amount in need.bundle.items():
            if amount > 0:
                out[kind] = out.get(kind, 0.0) + amount * need.count
    return out


def _nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def shortfall(needs: list[Need], nodes: list[dict[str, float]]) -> str | None:
    """Why ``needs`` cannot all be placed on ``nodes`` (each a node's total resources),
    or None when they can. Each bundle must fit on one node; bundles are placed largest
    first, each on the first node with room, as a check of what Ray can place at once."""
    have: dict[str, float] = {}
    for node in nodes:
        for kind, amount in node.items():
            have[kind] = have.get(kind, 0.0) + amount
    want = totals(needs)
    short = [k for k, v in want.items() if v > have.get(k, 0.0) + 1e-9]
    if short:
        return ", ".join(f"{_fmt(want[k])} {k}" for k in short) + " in all, the cluster has " + ", ".join(
            f"{_fmt(have.get(k, 0.0))} {k}" for k in short)
    free = [dict(n) for n in nodes]
    bundles = sorted((b for need in needs for b in [need.bundle] * need.count),
                     key=lambda b: tuple(-b.get(k, 0.0) for k in ("GPU", "CPU")))
    for bundle in bundles:
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items() if v > 0):
                for k, v in bundle.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            each = ", ".join(f"{_fmt(v)} {k}" for k, v in bundle.items() if v > 0)
            largest = ", ".join(f"{_fmt(max((n.get(k, 0.0) for n in nodes), default=0.0))} {k}"
                                for k, v in bundle.items() if v > 0)
            return (f"{_fmt(want.get('CPU', 0.0))} CPU in all, which the cluster has, but not on its "
                    f"{len(nodes)} node(s) at once: one of them needs {each} on one node "
                    f"(the largest node has {largest})")
    return None


def check_capacity(needs: list[Need], *, what: str, nodes: list[dict[str, float]] | None = None) -> None:
    """Raise CapacityError when the Ray cluster this process is connected to (or
    ``nodes``: each node's total resources) cannot hold ``needs`` all at once; its one
    line names what ``what`` (the job, e.g. "train tsm_rgb_gym99") needs, item by item,
    and what the cluster has. Totals, not free resources: another job's use passes, and
    shows up as a stall (:class:`StallWatchdog`). Off with FINEGYM_RAY_CAPACITY_CHECK=0."""
    if os.environ.get(CHECK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    why = shortfall(needs, _nodes() if nodes is None else nodes)
    if why is None or (nodes is None and autoscales()):
        return  # an autoscaler adds nodes for what waits; the stall watchdog tells if it cannot
    items = " + ".join(_describe(n) for n in needs if n.count > 0)
    raise CapacityError(f"{what} needs {items}: {why}, so it would wait forever. Ask for less (workers, "
                        f"cpus_per_worker) or use a bigger cluster ({CHECK_ENV}=0 skips this check)")


def autoscales() -> bool:
    """Whether the connected cluster runs an autoscaler that can add nodes. Ray's v1
    monitor runs on every head; without an autoscaling config its read-only provider
    names each node's type after the node's own id (``node_<id>``), while a real one
    maps nodes to the config's node types. A v2 autoscaler (KubeRay) marks the cluster
    in the GCS."""
    from .runtime.internals import autoscaler_report, runs_autoscaler_v2

    try:
        report = autoscaler_report()
        types = report.get("node_type_mapping") or {}
        if report.get("pending_launches") or report.get("pending_nodes") or any(
                kind not in (node, f"node_{node}") for node, kind in types.items()):
            return True
        return runs_autoscaler_v2()
    except Exception:  # noqa: BLE001 - unknown: check as for a fixed cluster
        return False


def _gpus_per_worker(config: Any, cluster_gpus: float) -> float:
    # use_gpu None: GPUs when the cluster has any, as train/engine.py torch_trainer decides.
    use_gpu = config.use_gpu if config.use_gpu is not None else cluster_gpus > 0
    if not use_gpu:
        return 0.0
    return float(getattr(config, "gpus_per_worker", None) or 1.0)


def train_needs(config: Any, *, cluster_gpus: float | None = None, data_input: bool = True) -> list[Need]:
    """What a training run of ``config`` (a TrainConfig, or a PoseConfig without
    ``data_input``) holds at once: its workers (``cpus_per_worker`` CPUs each, a GPU each
    when it trains on GPUs) and with ``data_input`` one CPU for its Ray Data input (Ray
    Train's controller and the split coordinator ask for none)."""
    if cluster_gpus is None:
        import ray

        cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
    worker = {"CPU": float(config.cpus_per_worker), "GPU": _gpus_per_worker(config, cluster_gpus)}
    workers = Need("train workers", int(config.workers), worker)
    return [workers, Need("Ray Data input", 1, dict(DATA_TASK))] if data_input else [workers]


def sweep_needs(resources: Any) -> list[Need]:
    """What one trial of a sweep (tune/config.TrialResources ``resources``) holds: its
    training workers and one CPU for their input; the trial's own driver asks for no CPU
    (tune/sweep.TRIAL_DRIVER). Fewer trials run at once on a small cluster, but one
    must fit."""
    worker = {"CPU": float(resources.cpus_per_worker), "GPU": float(resources.gpus_per_worker)}
    return [Need("workers per trial", int(resources.workers), worker), Need("trial input", 1, dict(DATA_TASK))]


def preprocess_needs(config: Any, pools: Any) -> list[Need]:
    """What preprocessing's actor pools need to move: one actor of each stage (Ray Data
    starts a pool's actors as they fit and works with those that started; the pool sizes
    come from preprocess/stages.pool_sizes)."""
    needs = [Need("cut actor" if not pools.flow_workers else "decode actor", 1,
                  {"CPU": float(config.cpus_per_worker)})]
    if pools.flow_workers:
        bundle = {"GPU": float(pools.flow_gpus)} if pools.flow_gpus else {"CPU": float(config.cpus_per_worker)}
        needs.append(Need("flow actor", 1, bundle))
    return needs


def stall_warning_s() -> float:
    """FINEGYM_RAY_STALL_WARNING_S (seconds; 0 turns the watchdog off), default 300."""
    text = os.environ.get(STALL_ENV, "").strip()
    if not text:
        return DEFAULT_STALL_WARNING_S
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{STALL_ENV} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise InputError(f"{STALL_ENV} must be >= 0 seconds, got {text!r}")
    return value


def waiting_for(hint: str = "") -> str:
    """What the connected Ray cluster is waiting for, in one phrase: the resource
    requests it cannot place yet (tasks and actors, placement groups), and its free CPUs
    and GPUs. ``hint`` is added when nothing waits (what else may hold the stage up)."""
    import ray

    from .runtime.internals import resource_demands

    parts = []
    try:
        demands = resource_demands()
        for d in demands.ray_task_actor_demand:
            for b in d.bundles_by_count:
                parts.append(f"{b.count} task(s)/actor(s) of {_bundle(b.bundle)}")
        for d in demands.placement_group_demand:
            for b in d.bundles_by_count:
                parts.append(f"a placement group of {b.count} x {_bundle(b.bundle)} ({d.strategy})")
    except Exception as e:  # noqa: BLE001 - the free resources below still say much
        parts.append(f"(pending requests unknown: {type(e).__name__})")
    free, total = ray.available_resources(), ray.cluster_resources()
    have = f"{_fmt(free.get('CPU', 0.0))} of {_fmt(total.get('CPU', 0.0))} CPUs free"
    if total.get("GPU"):
        have += f", {_fmt(free.get('GPU', 0.0))} of {_fmt(total.get('GPU', 0.0))} GPUs free"
    if not parts:
        return (f"no Ray task or actor waits for resources (those running may be slow); the cluster has {have}"
                + (f" ({hint})" if hint else ""))
    return f"waiting for {', '.join(parts)}; the cluster has {have}"


def _bundle(bundle: dict[str, float]) -> str:
    shown = {k: v for k, v in bundle.items() if not k.startswith(("node:", "bundle_group", "memory",
                                                                   "object_store_memory"))}
    return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(shown.items())) + "}" if shown else "{}"


class StallWatchdog:
    """A driver-side thread over a long stage: when ``progress()`` has not been called
    (and ``probe()``, polled, has not changed) for ``stall_s`` seconds, says
    "``what``: no progress for N s; <what Ray waits for>". While Ray has requests it
    cannot place, it says so again every ``stall_s``; a stall with none waiting (a long
    epoch, say) is reported once until progress resumes.

    Use as a context manager; ``stall_s`` None reads FINEGYM_RAY_STALL_WARNING_S, 0
    turns it off. ``probe``: a cheap callable whose value changes with progress (e.g.
    the number of checkpoints written), polled every ``poll_s`` seconds. ``describe``:
    what the stage waits for (default :func:`waiting_for` with ``hint``)."""

    def __init__(self, what: str, *, say: Callable[[str], None], stall_s: float | None = None,
                 probe: Callable[[], Any] | None = None, poll_s: float | None = None,
                 describe: Callable[[], str] | None = None, hint: str = ""):
        self.what, self.say, self.probe = what, say, probe
        self.describe = describe or (lambda: waiting_for(hint))
        self.stall_s = stall_warning_s() if stall_s is None else float(stall_s)
        self.poll_s = poll_s if poll_s is not None else min(max(self.stall_s / 4, 0.05), 30.0)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.warnings = 0

    def progress(self) -> None:
        """The stage moved (a unit cut, an epoch reported)."""
        self._last = time.monotonic()

    def __enter__(self) -> StallWatchdog:
        if self.stall_s > 0:
            self._thread = threading.Thread(target=self._watch, name=f"stall-watchdog {self.what}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        seen = self._poll(None)
        warned_at = None  # the stall start (self._last) last reported
        next_at = 0.0
        while not self._stop.wait(self.poll_s):
            value = self._poll(seen)
            if value != seen:
                seen = value
                self.progress()
            now = time.monotonic()
            idle = now - self._last
            if idle < self.stall_s or (warned_at == self._last and now < next_at):
                continue
            try:
                line = self.describe()
            except Exception as e:  # noqa: BLE001 - a watchdog must not end the job
                line = f"(cannot ask Ray what it waits for: {type(e).__name__}: {e})"
            if warned_at == self._last and line.startswith("no Ray task"):
                next_at = float("inf")  # nothing to place: said once, until progress resumes
                continue
            warned_at, next_at = self._last, now + self.stall_s
            self.warnings += 1
            self.say(f"{self.what}: no progress for {idle:.0f} s; {line}")

    def _poll(self, previous: Any) -> Any:
        if self.probe is None:
            return None
        try:
            return self.probe()
        except Exception:  # noqa: BLE001 - storage hiccup: no news
            return previous
