"""What runs in the preprocessing actors, and how many of them: the Ray Data stages.

    CPU flow methods (dis, farneback, none): one stage
        CutUnits (cpus_per_worker CPUs): fetch, decode, flow, JPEG, write the shard
    a method with a device option (tvl1): two stages
        DecodeUnits (CPU actors): fetch, decode, JPEG the RGB frames; pass on the clips
            and their grey frames (87 KB a frame at 340x256; no RGB arrays)
        FlowUnits (GPU actors where the cluster has GPUs, else CPU actors): flow of all
            the unit's frames in batches of pairs, JPEG, write the shard

``map_cut_stages`` adds them to a dataset of units; ``pool_sizes`` decides the actor
pools and their resources, in one place. ``map_import_stage`` adds the one stage of an
import of mmaction2's files (``ImportUnits``: read, resize, flow, JPEG, write). Every
stage keeps one unit's failures that unit's: a bad video, a failed write or an
exception is recorded in its error record, and a unit whose attempts kill the worker
process is recorded after ``MAX_UNIT_ATTEMPTS`` (Ray retries the unit on a new actor
until then).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from .. import storage
from ..errors import InputError
from ..store import attempts_uri, error_uri, shard_uri
from ..video.encode import set_thread_limits
from ..video.flow import build_flow
from ..video_job import actor_pools, failure_reason, write_error_record
from .clips import UnitResult, add_flow, cut_unit, decode_unit, with_fingerprint
from .config import PreprocessConfig
from .local_copy import local_copy
from .mmaction2 import SUBACTIONS, import_unit
from .units import Window

# Attempts at one unit whose worker process died before it is recorded as failed.
MAX_UNIT_ATTEMPTS = 3
# Attempts at writing a unit's shard or error record (S3 requests retry on their own too).
WRITE_ATTEMPTS = 3


def unit_record(unit_id: str, video_id: str, video_uri: str | None) -> dict[str, Any]:
    """The item fields of a unit's error record (``video_job.write_error_record``)."""
    return {"unit_id": unit_id, "video_id": video_id, "video_uri": video_uri}


@dataclass(frozen=True)
class Pools:
    """The actor pools of one cut. workers: first-stage actors (CutUnits, or DecodeUnits
    before a flow stage), ``cpus_per_worker`` CPUs each. flow_workers: FlowUnits actors
    (0: no flow stage), each holding ``flow_gpus`` GPUs, or where that is 0
    ``cpus_per_worker`` CPUs; their method runs on ``flow_device``."""

    workers: int
    flow_workers: int = 0
    flow_gpus: float = 0.0
    flow_device: str = "cpu"


# On CPUs TV-L1 takes about 1 s per pair at 340x256, a hundred times what decoding and
# JPEG take per frame (benchmarks/results/preprocessing.md: ~160 frames/s per core): one decoder per this many CPUs
# keeps the flow actors fed.
CPUS_PER_DECODER_BESIDE_CPU_FLOW = 16


def pool_sizes(config: PreprocessConfig, resources: dict[str, float], units: int) -> Pools:
    """The actor pools for ``units`` units on a cluster with ``resources``
    (``ray.cluster_resources()``: "CPU", "GPU" counts). ValueError for a flow device
    "cuda" on a cluster without GPUs."""
    cpus = resources.get("CPU", 1)
    slots = max(int(cpus // config.cpus_per_worker), 1)  # actors the CPUs hold
    if not config.flow.own_stage:
        return Pools(workers=min(config.workers or slots, units))
    gpus, device = resources.get("GPU", 0), config.flow.device
    if device == "cuda" and gpus <= 0:
        raise InputError(f"flow device 'cuda' ({config.flow.method}): the cluster has no GPU; "
                         f"set flow.options.device=auto or cpu")
    on_gpus = gpus > 0 and device != "cpu"
    decoders_beside_cpu_flow = config.workers or max(slots // CPUS_PER_DECODER_BESIDE_CPU_FLOW, 1)
    # A flow actor on a GPU keeps a CPU for its JPEG encoding and writes.
    workers, flow = actor_pools(cpus, gpus if on_gpus else 0.0, units, cpus_each=config.cpus_per_worker,
                                first=config.workers, second=config.flow_workers,
                                gpus_each=config.flow_gpus_per_worker, cpus_beside_gpu=config.cpus_per_worker,
                                second_on_cpus=max(slots - decoders_beside_cpu_flow, 1),
                                cpus_each_second=config.cpus_per_worker)
    # "auto" or "cuda" inside an actor is the GPU Ray gave it.
    return Pools(workers, flow, config.flow_gpus_per_worker, device) if on_gpus else Pools(workers, flow, 0.0, "cpu")


def map_cut_stages(ds: ray.data.Dataset, config: PreprocessConfig, out: str, units: int,
                   runtime_env: dict[str, Any] | None) -> tuple[ray.data.Dataset, Pools]:
    """``ds`` (one row per unit, the columns ``CutUnits`` needs) mapped through the
    stages that cut and write its units, one result row per unit; and the pools used."""
    pools = pool_sizes(config, ray.cluster_resources(), units)
    kwargs = {"config": config, "out": out, "run_id": uuid.uuid4().hex}
    # One unit per call, one call in flight per actor: units are large (about a minute
    # of clips), so balance matters more than per-call overhead.
    first = CutUnits if pools.flow_workers == 0 else DecodeUnits
    ds = ds.map_batches(first, fn_constructor_kwargs=kwargs, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=pools.workers, max_tasks_in_flight_per_actor=1),
                        num_cpus=config.cpus_per_worker, runtime_env=runtime_env)
    if pools.flow_workers:
        # A GPU actor asks for its GPU alone (Ray Data calls asking for CPUs and GPUs
        # together experimental); pool_sizes leaves it its CPU by starting fewer decoders.
        resources = {"num_gpus": pools.flow_gpus} if pools.flow_gpus else {"num_cpus": config.cpus_per_worker}
        ds = ds.map_batches(FlowUnits, fn_constructor_kwargs={**kwargs, "device": pools.flow_device}, batch_size=1,
                            batch_format="pyarrow", **resources,
                            compute=ray.data.ActorPoolStrategy(size=pools.flow_workers,
                                                               max_tasks_in_flight_per_actor=1),
                            runtime_env=runtime_env)
    return ds, pools


class _Unit:
    """One unit's bookkeeping in one stage: its result row, error record, attempt count
    and writes. Each stage counts its attempts in a file of its own,
    ``OUT/errors/<unit_id><counter>``."""

    def __init__(self, out: str, run_id: str, counter: str, result: dict[str, Any], video_id: str, video_uri: str,
                 windows_json: str):
        self.out, self.run_id, self.counter = out, run_id, counter
        self.unit_id, self.video_id, self.video_uri = result["unit_id"], str(video_id), str(video_uri)
        self.windows = [Window(**w) for w in json.loads(windows_json)]
        self.result = result
        self.record_uri = error_uri(out, self.unit_id)

    @classmethod
    def first(cls, out: str, run_id: str, node_id: str, unit_id: str, video_id: str, video_uri: str,
              windows_json: str) -> _Unit:
        """A unit entering the first stage: its result row says "failed" until it is done."""
        result = {"unit_id": str(unit_id), "status": "failed", "scope": "", "reason": "", "recorded": False,
                  "clips": 0, "failed_clips": len(json.loads(windows_json)), "frames": 0, "video_seconds": 0.0,
                  "stage_seconds": "{}", "node_id": node_id}
        return cls(out, run_id, ".attempt", result, video_id, video_uri, windows_json)

    def start(self) -> dict[str, Any] | None:
        """Count this attempt; the failed result row if the unit must not be tried (its
        attempts killed the worker ``MAX_UNIT_ATTEMPTS`` times, or nothing can be written)."""
        try:
            attempt = self._count_attempt()
        except Exception as e:  # noqa: BLE001
            return self.failed("storage", f"cannot write to {self.out}: {type(e).__name__}: {e}")
        if attempt > MAX_UNIT_ATTEMPTS:
            return self.failed("worker", f"the worker process died during each of {MAX_UNIT_ATTEMPTS} attempts at "
                                         f"this unit (a decoder or flow crash, or killed for memory?)")
        return None

    def failed(self, scope: str, reason: str) -> dict[str, Any]:
        """The result row of a failed unit, its error record written if possible."""
        self.result.update(status="failed", scope=scope, reason=reason)
        try:
            _with_retries(lambda: write_error_record(
                self.out, self.unit_id, scope=scope, reason=reason, keys=[w.key for w in self.windows],
                **unit_record(self.unit_id, self.video_id, self.video_uri)))
            self.result["recorded"] = True
        except Exception:  # noqa: BLE001 - the driver records it from this row
            pass
        self.forget_attempts()
        return self.result

    def write(self, cut: UnitResult, fingerprint: str, stage_seconds: dict[str, float]) -> dict[str, Any]:
        """Write the unit's shard (and the record of its failed windows): its result row."""
        t0 = time.perf_counter()
        try:
            _with_retries(lambda: storage.write_parquet(
                with_fingerprint(cut.table, str(fingerprint)), shard_uri(self.out, self.unit_id), compression="none",
                use_dictionary=["key", "kind", "video_id", "event_id"]))
            if cut.errors:
                _with_retries(lambda: write_error_record(
                    self.out, self.unit_id, scope="windows",
                    reason=f"{len(cut.errors)} of {len(self.windows)} window(s) failed", windows=cut.errors,
                    **unit_record(self.unit_id, self.video_id, self.video_uri)))
            else:
                storage.delete(self.record_uri)  # an earlier attempt's record is no longer true
        except Exception as e:  # noqa: BLE001 - a storage failure is this unit's, not the job's
            return self.failed("storage", f"writing its output failed after {WRITE_ATTEMPTS} attempts: "
                                          f"{type(e).__name__}: {e}")
        self.forget_attempts()
        stage = dict(stage_seconds, write=time.perf_counter() - t0)
        self.result.update(status="done", recorded=bool(cut.errors), clips=cut.table.num_rows,
                           failed_clips=len(cut.errors), frames=cut.frames, video_seconds=cut.video_seconds,
                           stage_seconds=json.dumps(stage))
        return self.result

    def _count_attempt(self) -> int:
        """This attempt's number (1, 2, ...) at the unit in this stage and run, recorded before it starts."""
        uri = attempts_uri(self.out, self.unit_id, self.counter)
        try:
            seen = json.loads(storage.read_text(uri))
        except FileNotFoundError:
            seen = {}
        attempt = seen.get("attempts", 0) + 1 if seen.get("run") == self.run_id else 1
        storage.write_text(uri, json.dumps({"run": self.run_id, "attempts": attempt}))
        return attempt

    def forget_attempts(self) -> None:
        with contextlib.suppress(Exception):
            storage.delete(attempts_uri(self.out, self.unit_id, self.counter))


def _fetch(unit: _Unit, cache_dir: str, cache_gb: float) -> str:
    """A local path of the unit's video (fetched once per node)."""
    return local_copy(unit.video_uri, cache_dir, int(cache_gb * 2**30))


class CutUnits:
    """``map_batches`` callable (one actor per worker) that cuts and writes whole units.

    Needs per row: ``unit_id``, ``video_id``, ``video_uri``, ``windows`` (a JSON list
    of Window fields, times in seconds) and ``fingerprint`` (stored in the shard's
    footer). Writes ``OUT/clips/<unit_id>.parquet`` and, when something failed,
    ``OUT/errors/<unit_id>.json``. Returns per row: ``unit_id``, ``status`` ("done" or
    "failed"), ``scope`` and ``reason`` (what failed and why, or ""), ``recorded`` (whether its error record
    was written), ``clips``, ``failed_clips``, ``frames``, ``video_seconds`` (seconds of
    clips), ``stage_seconds`` (JSON: open/fetch/decode/flow/encode/write wall seconds)
    and ``node_id``.

    A unit whose attempts kill the worker process (a decoder crash, the OOM killer) is
    retried by Ray on a new actor; ``OUT/errors/<unit_id>.attempt`` counts the attempts
    of this run (``run_id``), and after ``MAX_UNIT_ATTEMPTS`` the unit is recorded as
    failed instead. The flow method is built once per actor.
    """

    def __init__(self, config: PreprocessConfig, out: str, run_id: str):
        set_thread_limits(1)  # OpenCV: one thread per actor, the actor pool is the parallelism
        self.config = config
        self.out = out
        self.run_id = run_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self.flow = build_flow(config.flow.method, **config.flow.options) if config.flow.with_flow else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        results = [self._unit(*row) for row in zip(batch["unit_id"], batch["video_id"], batch["video_uri"],
                                                   batch["windows"], batch["fingerprint"])]
        return {k: [r[k] for r in results] for k in results[0]}

    def _unit(self, unit_id: str, video_id: str, video_uri: str, windows_json: str,
              fingerprint: str) -> dict[str, Any]:
        unit = _Unit.first(self.out, self.run_id, self.node_id, unit_id, video_id, video_uri, windows_json)
        refused = unit.start()
        if refused is not None:
            return refused
        _fault_injection_for_tests(unit.unit_id)
        t0 = time.perf_counter()
        try:
            path = _fetch(unit, self.config.cache_dir, self.config.cache_gb)
            fetch_s = time.perf_counter() - t0
            cut = cut_unit(path, unit.windows, self.config, self.flow)
        except Exception as e:  # noqa: BLE001 - one bad unit must not stop a 700-hour job
            return unit.failed("video", failure_reason(e, unit.video_uri))
        return unit.write(cut, fingerprint, dict(cut.seconds, fetch=fetch_s))


# What DecodeUnits passes to FlowUnits per unit: the unit's own columns, its result row
# so far, and (status "decoded") its clips without flow as an Arrow IPC stream, the
# errors of its windows (JSON) and the grey frames of all its clips end to end, (T, H, W)
# uint8 bytes. Large binaries: a long unit's frames pass 2 GB.
_RESULT_FIELDS = [("unit_id", pa.string()), ("status", pa.string()), ("scope", pa.string()), ("reason", pa.string()),
                  ("recorded", pa.bool_()), ("clips", pa.int64()), ("failed_clips", pa.int64()),
                  ("frames", pa.int64()), ("video_seconds", pa.float64()), ("stage_seconds", pa.string()),
                  ("node_id", pa.string())]
_DECODED_SCHEMA = pa.schema(_RESULT_FIELDS + [
    ("video_id", pa.string()), ("video_uri", pa.string()), ("windows", pa.string()), ("fingerprint", pa.string()),
    ("clip_rows", pa.large_binary()), ("window_errors", pa.string()), ("grey", pa.large_binary())])


class DecodeUnits:
    """First of the two stages (``map_batches`` callable, CPU actors): fetches each
    unit's video, decodes its windows and JPEG-encodes their RGB frames
    (``clips.decode_unit``), and passes them on with their grey frames.

    Needs per row what ``CutUnits`` needs. Returns per row the columns of
    ``_DECODED_SCHEMA``: status "decoded", or "failed" with the error recorded as
    ``CutUnits`` records it (FlowUnits passes such a row on). Attempts are counted as
    in ``CutUnits``.
    """

    def __init__(self, config: PreprocessConfig, out: str, run_id: str):
        set_thread_limits(1)
        self.config = config
        self.out = out
        self.run_id = run_id
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        rows = [self._unit(*row) for row in zip(batch["unit_id"], batch["video_id"], batch["video_uri"],
                                                batch["windows"], batch["fingerprint"])]
        return pa.Table.from_pylist(rows, schema=_DECODED_SCHEMA)

    def _unit(self, unit_id: str, video_id: str, video_uri: str, windows_json: str,
              fingerprint: str) -> dict[str, Any]:
        unit = _Unit.first(self.out, self.run_id, self.node_id, unit_id, video_id, video_uri, windows_json)
        passed_on = {"video_id": unit.video_id, "video_uri": unit.video_uri, "windows": str(windows_json),
                     "fingerprint": str(fingerprint), "clip_rows": b"", "window_errors": "[]", "grey": b""}
        refused = unit.start()
        if refused is not None:
            return {**refused, **passed_on}
        _fault_injection_for_tests(unit.unit_id)
        t0 = time.perf_counter()
        try:
            path = _fetch(unit, self.config.cache_dir, self.config.cache_gb)
            fetch_s = time.perf_counter() - t0
            decoded, grey = decode_unit(path, unit.windows, self.config)
        except Exception as e:  # noqa: BLE001 - one bad unit must not stop a 700-hour job
            return {**unit.failed("video", failure_reason(e, unit.video_uri)), **passed_on}
        unit.forget_attempts()  # from here on the flow stage counts its own
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, decoded.table.schema) as writer:
            writer.write_table(decoded.table)
        return {**unit.result, **passed_on, "status": "decoded", "frames": decoded.frames,
                "video_seconds": decoded.video_seconds,
                "stage_seconds": json.dumps(dict(decoded.seconds, fetch=fetch_s)),
                "clip_rows": sink.getvalue().to_pybytes(), "window_errors": json.dumps(decoded.errors),
                "grey": grey.tobytes()}


class FlowUnits:
    """Second of the two stages (``map_batches`` callable, ``batch_format="pyarrow"``;
    GPU actors where the cluster has GPUs): the flow of each decoded unit's frames in
    batches of the method's ``batch_pairs`` pairs across its clips (``clips.add_flow``),
    quantized with ``flow_bound`` and JPEG-encoded; then writes the unit's shard and
    error record as ``CutUnits`` does.

    Needs per row the columns of ``_DECODED_SCHEMA``; returns per row the result row of
    ``CutUnits`` (``node_id``: the node that decoded the unit). Rows that failed in the
    first stage pass through. The flow method is built once per actor, on ``device``;
    the flow stage counts its attempts at a unit in ``OUT/errors/<unit_id>.flow.attempt``.
    """

    def __init__(self, config: PreprocessConfig, out: str, run_id: str, device: str):
        set_thread_limits(1)
        self.config = config
        self.out = out
        self.run_id = run_id
        options = {**config.flow.options, "device": device}
        self.flow = build_flow(config.flow.method, **options)
        # Methods without a batch size of their own get a chunk's worth of pairs per call.
        self.batch_pairs = int(config.flow.resolved().get("batch_pairs", config.chunk_frames))

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        results = [self._unit(batch, i) for i in range(batch.num_rows)]
        return {k: [r[k] for r in results] for k in results[0]}

    def _unit(self, batch: pa.Table, i: int) -> dict[str, Any]:
        result = {name: batch.column(name)[i].as_py() for name, _ in _RESULT_FIELDS}
        if result["status"] != "decoded":
            return result
        fields = {k: batch.column(k)[i].as_py() for k in ("video_id", "video_uri", "windows", "fingerprint",
                                                           "window_errors")}
        unit = _Unit(self.out, self.run_id, ".flow.attempt", result, fields["video_id"], fields["video_uri"],
                     fields["windows"])
        refused = unit.start()
        if refused is not None:
            return refused
        try:
            table = pa.ipc.open_stream(batch.column("clip_rows")[i].as_buffer()).read_all()
            decoded = UnitResult(table=table, errors=json.loads(fields["window_errors"]), frames=result["frames"],
                                 video_seconds=result["video_seconds"], seconds=json.loads(result["stage_seconds"]))
            size = (table.column("height")[0].as_py(), table.column("width")[0].as_py()) if table.num_rows else (0, 0)
            grey = np.frombuffer(batch.column("grey")[i].as_buffer(), dtype=np.uint8).reshape(
                decoded.frames, *size)  # (T, H, W), a view of the input block
            cut = add_flow(decoded, grey, self.flow, self.config, batch_pairs=self.batch_pairs)
        except Exception as e:  # noqa: BLE001 - a GPU out of memory, say: this unit's failure
            return unit.failed("flow", f"unexpected {type(e).__name__}: {e}")
        return unit.write(cut, fields["fingerprint"], cut.seconds)


def map_import_stage(ds: ray.data.Dataset, config: PreprocessConfig, out: str, layout: str, units: int,
                     runtime_env: dict[str, Any] | None) -> tuple[ray.data.Dataset, int]:
    """``ds`` (one row per unit, the columns ``ImportUnits`` needs) mapped through the
    actors that import and write its units, one result row per unit (``CutUnits``');
    and the number of actors: one per ``cpus_per_worker`` CPUs unless ``workers`` says."""
    slots = max(int(ray.cluster_resources().get("CPU", 1) // config.cpus_per_worker), 1)
    workers = max(min(config.workers or slots, units), 1)
    ds = ds.map_batches(ImportUnits, fn_constructor_kwargs={"config": config, "out": out, "run_id": uuid.uuid4().hex,
                                                            "layout": layout}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                        num_cpus=config.cpus_per_worker, runtime_env=runtime_env)
    return ds, workers


class ImportUnits:
    """``map_batches`` callable (one actor per worker) that imports whole units from
    mmaction2's files (``mmaction2.import_unit``) and writes them as ``CutUnits`` does.

    Needs per row: ``unit_id``, ``video_id``, ``video_uri`` (the source folder, for the
    error record), ``windows`` (all the unit's windows, JSON), ``sources`` and ``failed``
    (JSON, ``mmaction2.plan_sources``: what to read per key, and the windows that cannot
    be imported with why) and ``fingerprint``. Returns ``CutUnits``' result rows and
    counts attempts as it does. A trimmed video's flow is computed on this actor's CPU
    (tvl1 too), with the method built once per actor.
    """

    def __init__(self, config: PreprocessConfig, out: str, run_id: str, layout: str):
        set_thread_limits(1)
        self.config, self.out, self.run_id, self.layout = config, out, run_id, layout
        self.node_id = ray.get_runtime_context().get_node_id()
        options = {**config.flow.options, **({"device": "cpu"} if config.flow.own_stage else {})}
        self.flow = build_flow(config.flow.method, **options) if layout == SUBACTIONS and config.flow.with_flow \
            else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        results = [self._unit(*row) for row in zip(batch["unit_id"], batch["video_id"], batch["video_uri"],
                                                   batch["windows"], batch["sources"], batch["failed"],
                                                   batch["fingerprint"])]
        return {k: [r[k] for r in results] for k in results[0]}

    def _unit(self, unit_id: str, video_id: str, source: str, windows_json: str, sources: str, failed: str,
              fingerprint: str) -> dict[str, Any]:
        unit = _Unit.first(self.out, self.run_id, self.node_id, unit_id, video_id, source, windows_json)
        refused = unit.start()
        if refused is not None:
            return refused
        try:
            cut = import_unit(unit.windows, json.loads(sources), json.loads(failed), self.layout, self.config,
                              self.flow)
        except Exception as e:  # noqa: BLE001 - one bad unit must not stop the job
            return unit.failed("video", failure_reason(e, unit.video_uri))
        return unit.write(cut, fingerprint, cut.seconds)


def _with_retries(write: Callable[[], None], attempts: int | None = None) -> None:
    """Run ``write``, again after 1 s and 2 s (...) when it raises, ``WRITE_ATTEMPTS`` times in all."""
    attempts = attempts or WRITE_ATTEMPTS
    for i in range(attempts):
        try:
            write()
            return
        except Exception:  # noqa: BLE001
            if i + 1 == attempts:
                raise
            time.sleep(2.0**i)


def _fault_injection_for_tests(unit_id: str) -> None:
    # The tests' stand-in for a decoder segfault: the worker process dies mid-unit.
    if os.environ.get("FINEGYM_RAY_TEST_CRASH_UNIT") == unit_id:
        os._exit(134)
