"""One-shot GPU check: every recognition model's bf16 channels-last training step, TSM-R50
training throughput, TV-L1 speed and its agreement with the CPU, the detector's step.

    PYTHONPATH=. timeout -s TERM 345 python3 benchmarks/gpu_check.py --budget-s 300   # $OUT set
    python benchmarks/gpu_check.py --device cpu --quick     # dry run of every path but CUDA's

Options: ``--only env,models,tsm_r50,tvl1,detector`` (any of them), ``--budget-s`` (300,
150 with --quick: seconds for all checks, not counting ~5 s of imports), ``--quick``
(tiny sizes), ``--device``, ``--out``, ``--tvl1-batches``.

torch, numpy, opencv, pyarrow and pyyaml only: nothing here (or in what it imports) loads
ray, PyAV, decord or boto3 (tests/test_gpu.py runs it with those imports blocked). The
TV-L1 module is loaded without running ``finegym_ray/video/__init__.py``, which imports
PyAV.

Checks, in order (``env`` always runs first; it also warms CUDA up):

- ``env``: torch, CUDA, cuDNN, device name and memory, TF32 flags.
- ``models``: for every model of ``finegym_ray.models.MODELS`` and both modalities, the
  settings of ``configs/<model>_<modality>_gym99.yaml`` at batch 4 and 112 px, one
  training step through ``train.steps`` (build_model, model_input, make_optimizer,
  autocast_for, train_step) in bf16 autocast (CUDA only, as in training: on the CPU
  ``autocast_for`` is a no-op), in the memory layout of the training loop
  (``train/loop.py``: channels-last weights, the 3-D form for clip models). Checks the
  scores' shape, a finite loss, a finite gradient of every parameter, finite float32
  weights after the step; records the step time after a warm-up step, the peak memory
  and the layout and dtype of the first stage's output (a warning, not a failure, when
  not channels-last / bf16). Rows in ``EXTRA_MODEL_ROWS`` try other layouts (I3D
  contiguous, for comparison).
- ``tsm_r50``: TSM-ResNet-50, 8 segments x 224 px RGB: training clips/s for each of
  ``TSM_VARIANTS`` (bf16 + channels-last over several batch sizes, then fp32,
  contiguous and cudnn.benchmark at the best one).
- ``tvl1``: ``finegym_ray.video.tvl1.TVL1`` pairs/s at 340x256 on a moving texture for
  batch sizes 8, 32, 64, 128 (larger ones skipped once a call takes over 60 s), for
  each of ``TVL1_VARIANTS`` (default, then ``compile=True`` at the best batch);
  agreement with the same pairs computed on the CPU (one ``synth.flow_pairs`` case of
  each family, with ground truth): endpoint differences in px, failing at a mean over
  0.05 px. The SIGTERM of ``timeout`` writes the JSON and the table before exiting.
- ``detector``: the localization detector (ActionFormer's sizes) on random features:
  training steps/s, finite loss and gradients, soft-NMS inference on the device.

Each check runs guarded (a failing check's traceback is printed and recorded, then the
next runs) in a thread of its own, with a share of ``--budget-s``: time left over by a
check goes to the later ones; a check that runs past its share plus a grace period is
recorded as ``timeout`` and left behind. Results are printed as they come and written
to ``$OUT/gpu_check.json`` (``--out``; default ./gpu_check_out/) after every
measurement, so a killed run still leaves what it measured. Exit status: 0 when every
check that ran passed, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runs from any folder, with or without PYTHONPATH=.
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from finegym_ray.config import apply_overrides, load_config  # noqa: E402
from finegym_ray.models import MODELS  # noqa: E402
from finegym_ray.train import steps  # noqa: E402
from finegym_ray.train.config import TrainConfig  # noqa: E402

FORBIDDEN = ("ray", "av", "decord", "boto3")  # absent on the GPU machine
CHECKS = ("env", "models", "tsm_r50", "tvl1", "detector")
# Shares of the budget left after ``env`` (which gets up to ENV_BUDGET_S); a check's share
# is recomputed from the time left when it starts, so unused time rolls over.
WEIGHTS = {"models": 5.0, "tsm_r50": 4.0, "tvl1": 10.0, "detector": 0.3}
ENV_BUDGET_S = 45.0
GRACE_S = 20.0  # past its share, a check still running is waited for this long

MODEL_BATCH, MODEL_CROP = 4, 112
# Other memory layouts to try after the library's rows: (model, modality, layout).
EXTRA_MODEL_ROWS = [("i3d", "rgb", "contiguous"), ("nl_i3d", "rgb", "contiguous")]

# TSM-R50 throughput. "batches": a tuple, or "best" (the first variant's fastest batch).
# Add a row to try another setting.
TSM_VARIANTS = [
    {"name": "bf16+cl", "bf16": True, "channels_last": True, "batches": (8, 16, 32, 64)},
    {"name": "fp32+cl", "bf16": False, "channels_last": True, "batches": "best"},
    {"name": "bf16", "bf16": True, "channels_last": False, "batches": "best"},
    {"name": "bf16+cl+cudnn.benchmark", "bf16": True, "channels_last": True, "batches": "best",
     "cudnn_benchmark": True},
]

# TV-L1 variants, measured in this order: "options" are added to TVL1(...); "batches": a
# tuple, "best" (the batch of the first variant's best pairs/s) or absent (all of
# --tvl1-batches); "warmup_call": call once untimed first (compilation); "min_left_s":
# start only with this much of the check's time left; "cpu_quick": False leaves it out
# of --quick runs on the CPU. Each variant's agreement is with the CPU computing the same
# options less TVL1.RUNTIME_OPTIONS. An option TVL1 does not take fails that variant only.
TVL1_VARIANTS = [
    {"name": "default", "options": {}},
    # torch.compile'd iterations: tens of seconds to compile on the first call.
    {"name": "compile", "options": {"compile": True}, "batches": "best", "warmup_call": True, "min_left_s": 75,
     "cpu_quick": False},
]
TVL1_BATCHES = (8, 32, 64, 128)
TVL1_SIZE = (256, 340)  # (H, W)
TVL1_SLOW_CALL_S = 60.0  # a call slower than this: no larger batch
TVL1_CPU_PAIRS_S = 45.0  # at most this long computing the CPU reference, pair by pair

QUICK = {
    "model_overrides": ["depth=10", "base_width=4", "crop=16", "test_short=16"],
    "model_segments": 2,
    "tsm_overrides": ["depth=10", "base_width=8", "crop=32", "test_short=32", "segments=4"],
    "tsm_batches": (2, 4),
    "tvl1_batches": (2, 4),
    "tvl1_size": (96, 128),
    "tvl1_options": {"scales": 2, "warps": 2, "outer_iterations": 2, "inner_iterations": 10},
    "budget_s": 150.0,
}


# --------------------------------------------------------------------------------------
# Run state, printing and the JSON file
# --------------------------------------------------------------------------------------

class Run:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device, self.quick = args, device, args.quick
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_s
        self.check_deadline = self.deadline
        self.lock = threading.RLock()
        self.path = Path(args.out) / "gpu_check.json"
        self.results = {
            "script": "benchmarks/gpu_check.py", "argv": sys.argv[1:], "device": str(device), "quick": args.quick,
            "budget_s": args.budget_s, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": False,
            "checks": {},
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds left of the current check's share."""
        return self.check_deadline - time.monotonic()

    def say(self, message: str) -> None:
        with self.lock:
            print(f"[{self.elapsed():6.1f}s] {message}", flush=True)

    def save(self) -> None:
        """Write the results (atomically); never raises."""
        with self.lock:
            self.results["wall_s"] = round(self.elapsed(), 2)
            self.results["loaded_forbidden"] = sorted(m for m in FORBIDDEN if m in sys.modules)
            for _ in range(3):  # a hung check's thread may still be changing its record
                try:
                    text = json.dumps(_plain(self.results), indent=1)
                    break
                except RuntimeError:
                    time.sleep(0.05)
            else:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".json.tmp")
                tmp.write_text(text)
                os.replace(tmp, self.path)
            except OSError as e:
                print(f"cannot write {self.path}: {e}", flush=True)


def _plain(value):
    """JSON-safe copy: non-finite floats as strings, tuples as lists, the rest str()."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in list(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in list(value)]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (np.floating, np.integer)):
        return _plain(value.item())
    return str(value)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def guarded(run: Run, rec: dict, label: str):
    """Context manager for one row of a check: an exception becomes the row's error
    (traceback printed and recorded) and the check goes on to its next row."""
    @contextlib.contextmanager
    def cm():
        try:
            yield
        except Exception as e:  # noqa: BLE001 - everything is reported, nothing stops the run
            rec.setdefault("problems", []).append(f"{type(e).__name__}: {e}")
            rec["error"] = traceback.format_exc()
            rec["ok"] = False
            run.say(f"  {label}: ERROR {type(e).__name__}: {e}")
            print(rec["error"], flush=True)
            if run.device.type == "cuda":
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
        finally:
            run.save()
    return cm()


# --------------------------------------------------------------------------------------
# env
# --------------------------------------------------------------------------------------

def check_env(run: Run, rec: dict) -> None:
    dev = run.device
    rec.update({
        "python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "numpy": np.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    })
    with contextlib.suppress(Exception):
        import cv2
        rec["opencv"] = cv2.__version__
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        rec.update({"device_name": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count,
                    "bf16_supported": torch.cuda.is_bf16_supported(), "device_count": torch.cuda.device_count()})
        with contextlib.suppress(Exception):
            rec["driver"] = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
    else:
        rec["device_name"] = platform.processor() or platform.machine()
    # Warm-up: context, cuBLAS, cuDNN (a bf16 conv and its backward), timed.
    t = time.perf_counter()
    a = torch.randn(256, 256, device=dev)
    conv = nn.Conv2d(3, 8, 3).to(dev).to(memory_format=torch.channels_last)
    with steps.autocast_for(dev, True):
        (a @ a).sum().item()
        conv(torch.randn(2, 3, 16, 16, device=dev)).float().sum().backward()
    sync(dev)
    rec["warmup_s"] = round(time.perf_counter() - t, 2)
    rec["ok"] = True
    run.say(f"env: {rec['device_name']}, torch {rec['torch']}, CUDA {rec['cuda_build']}, cuDNN {rec['cudnn']}, "
            f"{rec.get('memory_gib', '-')} GiB, warm-up {rec['warmup_s']} s")


# --------------------------------------------------------------------------------------
# models: one training step of every recognition model
# --------------------------------------------------------------------------------------

def model_config(run: Run, name: str, modality: str, extra: list[str] = ()) -> TrainConfig:
    """The model's gym99 config (configs/), without pretrained weights, at the check's size."""
    path = ROOT / "configs" / f"{name}_{modality}_gym99.yaml"
    base = TrainConfig(model=name, modality=modality)
    config = load_config(TrainConfig, path if path.exists() else None, ["pretrained=null", "val_every=0"], base=base)
    overrides = [f"batch_size={MODEL_BATCH}", f"crop={MODEL_CROP}", f"test_short={max(MODEL_CROP, config.test_short)}"]
    if run.quick:
        # ActionVLAD's VGG-16 has one depth: base_width alone shrinks it.
        quick = [o for o in QUICK["model_overrides"] if not (name == "actionvlad" and o.startswith("depth="))]
        overrides = [f"batch_size={MODEL_BATCH}", *quick, f"segments={min(config.segments, QUICK['model_segments'])}"]
    return apply_overrides(config, [*overrides, *extra])


def layout_of(t: torch.Tensor) -> str:
    """"channels_last", "channels_last_3d", "contiguous", "either" (a tensor both are
    true of, e.g. 1x1 spatially) or "other"."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    last = fmt is not None and t.is_contiguous(memory_format=fmt)
    if last and t.is_contiguous():
        return "either"
    if last:
        return "channels_last" if t.dim() == 4 else "channels_last_3d"
    return "contiguous" if t.is_contiguous() else "other"


def library_layout(config: TrainConfig) -> str:
    """What train/loop.py does on a GPU: channels-last weights, 3-D for clip models."""
    if not config.channels_last:
        return "contiguous"
    return "channels_last_3d" if config.clip_model else "channels_last"


class Trainer:
    """A model, its optimizer and a fixed uint8 batch on the device; ``step()`` is one
    step of the training loop (model_input + train_step)."""

    def __init__(self, run: Run, config: TrainConfig, *, layout: str, bf16: bool, batch: int, num_classes: int = 99):
        dev = run.device
        self.config, self.device = config, dev
        torch.manual_seed(0)
        model = steps.build_model(config.model, **config.model_kwargs(num_classes))
        model = model.to(dev)
        if layout != "contiguous":
            model = model.to(memory_format=getattr(torch, layout))
        self.model = model.train()
        self.optimizer = steps.make_optimizer(model.parameters(), name=config.optimizer, lr=config.lr,
                                              momentum=config.momentum, weight_decay=config.weight_decay)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        # The library's autocast: bf16 on CUDA, a no-op on the CPU (as in training). Not
        # CPU bf16 for dry runs: with torch 2.13+cpu, oneDNN's bf16 convolution backward
        # now and then gives non-finite weight gradients here (1 model step in ~30; one
        # Conv3d with channels_last_3d input, 7 tries in 150), which would make the dry
        # run flaky for a reason the GPU does not share.
        self.bf16 = bf16 and dev.type == "cuda"
        self.autocast = steps.autocast_for(dev, bf16)
        h, w = config.input_size
        g = torch.Generator(device="cpu").manual_seed(1)
        self.raw = torch.randint(0, 256, (batch, config.segments, config.in_channels, h, w), dtype=torch.uint8,
                                 generator=g).to(dev)
        self.bound = torch.full((batch,), 20.0)
        self.y = torch.randint(0, num_classes, (batch,), generator=g).to(dev)
        self.num_classes = num_classes

    def step(self):
        x = steps.model_input(self.raw, self.bound, modality=self.config.modality, clip_model=self.config.clip_model)
        return steps.train_step(self.model, x, self.y, self.optimizer, self.criterion,
                                grad_clip=self.config.grad_clip, autocast=self.autocast)

    def timed_steps(self, n: int) -> float:
        """Seconds per step over ``n`` steps."""
        sync(self.device)
        t = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
        return (time.perf_counter() - t) / n


def model_row(run: Run, rec: dict, name: str, modality: str, layout: str | None) -> None:
    config = model_config(run, name, modality)
    layout = layout or library_layout(config)
    dev = run.device
    rec.update({"model": name, "modality": modality, "layout": layout, "depth": config.depth,
                "base_width": config.base_width,
                "input": [MODEL_BATCH, config.segments, config.in_channels, *config.input_size]})
    reset_peak(dev)
    trainer = Trainer(run, config, layout=layout, bf16=True, batch=MODEL_BATCH)
    rec["bf16"] = trainer.bf16
    model = trainer.model
    rec["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    convs = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    rec["weights_layout"] = layout_of(convs[-1]) if convs else None
    seen = {}
    # The first stage's output: the largest activations, and spatially big enough to tell layouts apart.
    # (ActionVLAD's VGG-16 has no stages: its first conv's activation.)
    stage = getattr(model.backbone, "layer1", None) or model.backbone.features[1]
    hook = stage.register_forward_hook(lambda m, i, o: seen.update(layout=layout_of(o), dtype=str(o.dtype)))
    problems = []
    try:
        sync(dev)
        t = time.perf_counter()
        scores, loss = trainer.step()
        sync(dev)
        rec["first_step_s"] = round(time.perf_counter() - t, 3)
    finally:
        hook.remove()
    rec["activations_layout"], rec["activations_dtype"] = seen.get("layout"), seen.get("dtype")
    rec["loss"] = loss.item()
    if tuple(scores.shape) != (MODEL_BATCH, trainer.num_classes):
        problems.append(f"scores of shape {tuple(scores.shape)}")
    if not math.isfinite(rec["loss"]):
        problems.append(f"loss {rec['loss']}")
    named = list(model.named_parameters())
    missing = [n for n, p in named if p.grad is None]
    with_grad = [(n, p) for n, p in named if p.grad is not None]
    finite = torch.stack([torch.isfinite(p.grad).all() for _, p in with_grad]).cpu().tolist() if with_grad else []
    bad_grads = [n for (n, _), ok in zip(with_grad, finite) if not ok]
    weights_ok = torch.stack([torch.isfinite(p).all() for _, p in named]).cpu().tolist()
    bad_weights = [n for (n, _), ok in zip(named, weights_ok) if not ok]
    not_fp32 = [n for n, p in named if p.dtype != torch.float32]
    rec["grads"] = f"{len(with_grad) - len(bad_grads)}/{len(named)} finite"
    if missing:
        problems.append(f"{len(missing)} parameters without a gradient: {missing[:5]}")
    if bad_grads:
        problems.append(f"{len(bad_grads)} non-finite gradients: {bad_grads[:5]}")
    if bad_weights:
        problems.append(f"{len(bad_weights)} non-finite weights after the step: {bad_weights[:5]}")
    if not_fp32:
        problems.append(f"{len(not_fp32)} weights not float32: {not_fp32[:5]}")
    # Not errors, but the speed-ups asked for are not all there.
    warnings = []
    if trainer.bf16 and seen.get("dtype") != "torch.bfloat16":
        warnings.append(f"first stage ran in {seen.get('dtype')}, not bf16")
    if layout != "contiguous" and rec["activations_layout"] not in (layout, "either"):
        warnings.append(f"activations {rec['activations_layout']}, not {layout}")
    rec["warnings"] = warnings
    # Warm-up done: time a few more steps of the same batch.
    n = 1 if run.quick else 3
    rec["step_s"] = round(trainer.timed_steps(n), 4)
    rec["clips_per_s"] = round(MODEL_BATCH / rec["step_s"], 1)
    rec["peak_gib"] = peak_gib(dev)
    last = trainer.step()[1]
    rec["loss_after"] = last.item()
    rec["problems"], rec["ok"] = problems, not problems
    del trainer, model, scores, loss, last
    free(dev)


def check_models(run: Run, rec: dict) -> None:
    rows = [(n, m, None) for m in ("rgb", "flow") for n in MODELS] + list(EXTRA_MODEL_ROWS)
    rec["rows"] = []
    for name, modality, layout in rows:
        label = f"{name}/{modality}" + (f"/{layout}" if layout else "")
        row = {"name": label}
        rec["rows"].append(row)
        if run.left() < (1 if run.quick else 4):
            row.update(ok=None, skipped="budget")
            run.say(f"  {label}: skipped (budget)")
            continue
        with guarded(run, row, label):
            model_row(run, row, name, modality, layout)
            run.say(f"  {label}: {'ok' if row['ok'] else 'FAIL ' + '; '.join(row['problems'])}"
                    f"{' (' + '; '.join(row['warnings']) + ')' if row['warnings'] else ''} "
                    f"input {row['input']} {row['layout']} -> {row['activations_layout']}, loss {row['loss']:.3f}, "
                    f"first {row['first_step_s']} s, step {row['step_s']} s, peak {row['peak_gib']} GiB")
    ran = [r for r in rec["rows"] if r.get("ok") is not None]
    rec["ok"] = bool(ran) and all(r["ok"] for r in ran)
    rec["summary"] = f"{sum(bool(r['ok']) for r in ran)}/{len(rec['rows'])} ok" + (
        f", {len(rec['rows']) - len(ran)} skipped" if len(ran) < len(rec["rows"]) else "")


# --------------------------------------------------------------------------------------
# tsm_r50: TSM-ResNet-50 training throughput
# --------------------------------------------------------------------------------------

def check_tsm_r50(run: Run, rec: dict) -> None:
    path = ROOT / "configs" / "tsm_rgb_gym99.yaml"
    overrides = ["pretrained=null", "val_every=0"] + (QUICK["tsm_overrides"] if run.quick else [])
    config = load_config(TrainConfig, path if path.exists() else None, overrides,
                         base=TrainConfig(model="tsm", modality="rgb", depth=50, segments=8, crop=224))
    rec["config"] = {"model": config.model, "depth": config.depth, "base_width": config.base_width,
                     "segments": config.segments, "input_size": list(config.input_size), "optimizer": config.optimizer}
    run.say(f"  TSM depth {config.depth}, {config.segments} segments x {config.input_size} px")
    rec["rows"] = []
    best = None
    dev = run.device
    target_s = 0.3 if run.quick else 3.0
    for variant in TSM_VARIANTS:
        batches = variant["batches"]
        if batches == "best":
            if best is None:
                continue
            batches = (best[1],)
        elif run.quick:
            batches = QUICK["tsm_batches"]
        batches = list(batches)
        single = len(batches) == 1
        layout = "channels_last" if variant.get("channels_last") else "contiguous"
        saved_benchmark = torch.backends.cudnn.benchmark
        try:
            torch.backends.cudnn.benchmark = bool(variant.get("cudnn_benchmark", False))
            while batches:
                batch = batches.pop(0)
                label = f"{variant['name']} batch {batch}"
                row = {"variant": variant["name"], "batch": batch, "layout": layout,
                       "bf16": variant["bf16"] and dev.type == "cuda"}
                rec["rows"].append(row)
                if run.left() < (1 if run.quick else 10):
                    row.update(ok=None, skipped="budget")
                    run.say(f"  {label}: skipped (budget)")
                    continue
                oom = False
                with guarded(run, row, label):
                    reset_peak(dev)
                    try:
                        row.update(tsm_rate(run, config, layout=layout, bf16=variant["bf16"], batch=batch,
                                            target_s=target_s))
                    except torch.OutOfMemoryError:
                        oom = True  # handled below, once the exception (and its frames' tensors) is gone
                    if oom:
                        free(dev)
                        row.update(ok=None, skipped="out of memory", peak_gib=peak_gib(dev))
                        run.say(f"  {label}: out of memory")
                        batches.clear()  # the larger batches that follow will not fit either
                        if single and batch > 8:  # a one-batch variant: try half as large
                            batches.append(batch // 2)
                        continue
                    row["ok"] = True
                    run.say(f"  {label}: {row['clips_per_s']} clips/s ({row['frames_per_s']} frames/s), "
                            f"step {row['step_s']} s over {row['steps']}, first {row['first_step_s']} s, "
                            f"peak {row['peak_gib']} GiB")
                    if variant is TSM_VARIANTS[0] and (best is None or row["clips_per_s"] > best[0]):
                        best = (row["clips_per_s"], batch)
        finally:
            torch.backends.cudnn.benchmark = saved_benchmark
    ran = [r for r in rec["rows"] if r.get("ok") is not None]
    rec["ok"] = bool(ran) and all(r["ok"] for r in ran)
    if best:
        rec["best"] = {"variant": TSM_VARIANTS[0]["name"], "batch": best[1], "clips_per_s": best[0]}
    parts = [f"{r['variant']} b{r['batch']} {r['clips_per_s']}" for r in ran if r.get("clips_per_s")]
    rec["summary"] = "clips/s: " + ", ".join(parts) if parts else "no measurement"


def tsm_rate(run: Run, config: TrainConfig, *, layout: str, bf16: bool, batch: int, target_s: float) -> dict:
    """Training speed of ``config`` at ``batch``: two warm-up steps, then about
    ``target_s`` seconds of steps (at least 3), timed between device syncs."""
    trainer = Trainer(run, config, layout=layout, bf16=bf16, batch=batch)
    try:
        first = trainer.timed_steps(1)
        trainer.timed_steps(1)  # a second warm-up: cudnn.benchmark tries algorithms on the first
        probe = trainer.timed_steps(1)
        n = max(3, min(50, int(target_s / max(probe, 1e-4))))
        step_s = trainer.timed_steps(n)
    finally:
        del trainer
        free(run.device)
    return {"first_step_s": round(first, 3), "steps": n, "step_s": round(step_s, 4),
            "clips_per_s": round(batch / step_s, 1), "frames_per_s": round(batch * config.segments / step_s, 1),
            "peak_gib": peak_gib(run.device)}


# --------------------------------------------------------------------------------------
# tvl1: pairs/s and agreement with the CPU
# --------------------------------------------------------------------------------------

def import_video_module(name: str):
    """``finegym_ray.video.<name>`` without running ``finegym_ray/video/__init__.py``
    (which imports PyAV, absent on the GPU machine): a bare package stands in for it
    while the module loads. Returns (module, how)."""
    full = f"finegym_ray.video.{name}"
    if full in sys.modules:
        return sys.modules[full], "already loaded"
    if "finegym_ray.video" in sys.modules:
        return importlib.import_module(full), "through finegym_ray.video"
    import finegym_ray
    stub = types.ModuleType("finegym_ray.video")
    stub.__path__ = [str(Path(finegym_ray.__file__).parent / "video")]
    stub.__package__ = "finegym_ray.video"
    sys.modules["finegym_ray.video"] = stub
    try:
        return importlib.import_module(full), "without the package __init__"
    finally:
        if sys.modules.get("finegym_ray.video") is stub:
            del sys.modules["finegym_ray.video"]


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    import cv2
    out = np.zeros((h, w), np.float32)
    for sigma, weight in ((1.5, 0.35), (4.0, 0.4), (12.0, 0.25)):
        layer = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
        out += weight * layer / max(float(layer.std()), 1e-6)
    return out * np.float32(45.0 / max(float(out.std()), 1e-6)) + np.float32(128.0)


def moving_sequence(n: int, h: int, w: int, seed: int = 0):
    """``n`` (H, W) uint8 frames of a textured scene under a random walk of small affine
    motions (shift up to 3 px, turn up to 1 degree, zoom up to 1 % per frame, about the
    centre), and the true flow of each consecutive pair: (frames, flow (n-1, H, W, 2), valid)."""
    import cv2
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    mats = [np.eye(3)]  # frame k pixel -> scene coordinates
    for _ in range(n - 1):
        a, s = math.radians(rng.uniform(-1, 1)), 1 + rng.uniform(-0.01, 0.01)
        c, si = s * math.cos(a), s * math.sin(a)
        t = rng.uniform(-3, 3, 2)
        step = np.array([[c, -si, cx - c * cx + si * cy + t[0]], [si, c, cy - si * cx - c * cy + t[1]], [0, 0, 1]])
        mats.append(mats[-1] @ step)
    coords = [(m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]) for m in mats]
    x0 = min(float(c[0].min()) for c in coords) - 8
    y0 = min(float(c[1].min()) for c in coords) - 8
    x1 = max(float(c[0].max()) for c in coords) + 8
    y1 = max(float(c[1].max()) for c in coords) + 8
    tex = _texture(int(math.ceil(y1 - y0)) + 1, int(math.ceil(x1 - x0)) + 1, rng)
    frames = np.stack([np.clip(np.rint(cv2.remap(tex, (cx_ - x0).astype(np.float32), (cy_ - y0).astype(np.float32),
                                                 cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)), 0, 255)
                       for cx_, cy_ in coords]).astype(np.uint8)
    flows, valids = [], []
    for k in range(n - 1):
        m = np.linalg.inv(mats[k + 1]) @ mats[k]  # frame k pixel -> frame k+1 pixel
        fx, fy = m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]
        flows.append(np.stack([fx - x, fy - y], -1).astype(np.float32))
        valids.append((fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1))
    return (frames, np.stack(flows) if flows else np.zeros((0, h, w, 2), np.float32),
            np.stack(valids) if valids else None)


def epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel endpoint distance (px) of two (..., 2) flows."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.hypot(d[..., 0], d[..., 1])


def check_tvl1(run: Run, rec: dict) -> None:
    try:
        tvl1, how = import_video_module("tvl1")
    except ModuleNotFoundError as e:
        if e.name == "finegym_ray.video.tvl1":
            rec.update(ok=None, skipped="not present: finegym_ray/video/tvl1.py is missing")
            run.say("  tvl1: not present")
            return
        raise
    TVL1 = tvl1.TVL1
    rec["module"] = {"file": tvl1.__file__, "loaded": how,
                     "signature": str(inspect.signature(TVL1.__init__)), "has_pairs": hasattr(TVL1, "pairs")}
    dev = run.device
    h, w = QUICK["tvl1_size"] if run.quick else TVL1_SIZE
    batches = QUICK["tvl1_batches"] if run.quick else tuple(run.args.tvl1_batches)
    base_opts = dict(QUICK["tvl1_options"]) if run.quick else {}
    rec.update(size=[h, w], base_options=base_opts)
    t = time.perf_counter()
    frames, truth, valid = moving_sequence(max(batches) + 1, h, w, seed=0)
    rec["sequence_s"] = round(time.perf_counter() - t, 2)
    run.say(f"  tvl1 from {how}; {len(frames)} frames {h}x{w} made in {rec['sequence_s']} s")
    rec["throughput"], rec["agreement"] = [], []
    runtime = tuple(getattr(TVL1, "RUNTIME_OPTIONS", ("device", "batch_pairs")))
    references: dict = {}  # algorithm options -> {case index: CPU flow}, computed once each
    best = None  # (pairs/s, batch) of the first variant

    for variant in TVL1_VARIANTS:
        opts = {**base_opts, **variant.get("options", {})}
        if run.quick and dev.type == "cpu" and not variant.get("cpu_quick", True):
            rec["throughput"].append({"variant": variant["name"], "batch": None, "ok": None,
                                      "skipped": "left out of --quick runs on the CPU"})
            continue
        try:
            TVL1(device=str(dev), **opts)
        except (TypeError, ValueError) as e:  # an option this TVL1 does not have, or a bad value
            refused = f"{type(e).__name__}: {e}"
            rec["throughput"].append({"variant": variant["name"], "batch": None, "ok": False,
                                      "problems": [refused], "error": refused})
            run.say(f"  {variant['name']}: TVL1({opts}) refused: {refused}")
            run.save()
            continue
        sizes = variant.get("batches") or batches
        if sizes == "best":
            sizes = (best[1],) if best else batches[:1]
        slow, warm = False, not variant.get("warmup_call")
        for bi, batch in enumerate(sizes):
            label = f"{variant['name']} batch {batch}"
            row = {"variant": variant["name"], "batch": batch, "options": variant.get("options", {})}
            rec["throughput"].append(row)
            if slow:
                row.update(ok=None, skipped=f"a smaller batch took over {TVL1_SLOW_CALL_S:.0f} s")
                continue
            last = next((r for r in reversed(rec["throughput"][:-1])
                         if r.get("variant") == variant["name"] and r.get("call_s")), None)
            guess = last["call_s"] * batch / last["batch"] if last else 0.0
            need = max(2 * guess, variant.get("min_left_s", 0), 1 if run.quick else 5)
            if run.left() < need:
                row.update(ok=None, skipped=f"budget ({run.left():.0f} s left, wanted {need:.0f})")
                run.say(f"  {label}: skipped (budget: {run.left():.0f} s left, wanted {need:.0f})")
                continue
            with guarded(run, row, label):
                reset_peak(dev)
                method = TVL1(device=str(dev), batch_pairs=batch, **opts)
                chunk = frames[:batch + 1]
                if not warm:  # an untimed first call (compilation)
                    t = time.perf_counter()
                    method(chunk)
                    row["warmup_call_s"] = round(time.perf_counter() - t, 3)
                    warm = True
                times = []
                # a second call only when the first was short (start-up costs weigh) and time allows
                while not times or (len(times) < 2 and times[0] < 5.0 and run.left() > 3 * times[0] + 2):
                    t = time.perf_counter()
                    flow = method(chunk)
                    times.append(time.perf_counter() - t)
                call_s = min(times)
                problems = []
                if flow.shape != (batch, h, w, 2) or flow.dtype != np.float32:
                    problems.append(f"flow {flow.dtype} {flow.shape}, want float32 {(batch, h, w, 2)}")
                if not np.isfinite(flow).all():
                    problems.append("non-finite flow")
                err = epe(flow, truth[:batch])[valid[:batch]]
                row.update(first_call_s=round(times[0], 3), calls_s=[round(x, 3) for x in times],
                           call_s=round(call_s, 3), pairs_per_s=round(batch / call_s, 1),
                           epe_vs_truth_mean=round(float(err.mean()), 4), peak_gib=peak_gib(dev),
                           problems=problems, ok=not problems)
                run.say(f"  {label}: {row['pairs_per_s']} pairs/s (calls " + ", ".join(f"{x:.2f}" for x in times)
                        + (f" s after a {row['warmup_call_s']:.1f} s warm-up" if "warmup_call_s" in row else " s")
                        + f"), EPE vs truth {row['epe_vs_truth_mean']:.3f} px, peak {row['peak_gib']} GiB"
                        + ("" if not problems else " FAIL " + "; ".join(problems)))
                slow = max(times) > TVL1_SLOW_CALL_S
                if variant is TVL1_VARIANTS[0] and (best is None or row["pairs_per_s"] > best[0]):
                    best = (row["pairs_per_s"], batch)
                del method
                free(dev)
            if bi == 0:  # agreement after the first batch, before the long calls
                arow = {"variant": variant["name"]}
                rec["agreement"].append(arow)
                key = tuple(sorted((k, v) for k, v in opts.items() if k not in runtime))
                with guarded(run, arow, f"{variant['name']} agreement"):
                    agreement(run, arow, TVL1, opts, dict(key), references.setdefault(key, {}), h, w)
    ran = [r for r in rec["throughput"] + rec["agreement"] if r.get("ok") is not None]
    rec["ok"] = bool(ran) and all(r["ok"] for r in ran)
    top = max((r for r in rec["throughput"] if r.get("pairs_per_s")), key=lambda r: r["pairs_per_s"], default=None)
    parts = []
    if top:
        parts.append(f"best {top['pairs_per_s']} pairs/s ({top['variant']}, batch {top['batch']})")
    for a in rec["agreement"]:
        if "diff_max_px" in a:
            parts.append(f"{a['variant']} vs CPU: max {a['diff_max_px']:.3g} mean {a['diff_mean_px']:.3g} "
                         f"median {a['diff_median_px']:.3g} px over {a['pairs']} pairs")
    rec["summary"] = "; ".join(parts) or "no measurement"


def agreement(run: Run, row: dict, TVL1, opts: dict, cpu_opts: dict, reference: dict, h: int, w: int) -> None:
    """The flow of synth.flow_pairs cases on the check's device with ``opts`` vs on the
    CPU with ``cpu_opts`` (``reference``: CPU flows by case, filled as computed):
    endpoint differences in px, and each one's error vs the truth."""
    from finegym_ray.synth.flow_pairs import FAMILIES, make_pair
    families = FAMILIES[:2] if run.quick else FAMILIES
    cases = [make_pair(f, h, w, seed=0) for f in families]
    dev = run.device
    first = torch.from_numpy(np.stack([c.first for c in cases]))
    second = torch.from_numpy(np.stack([c.second for c in cases]))
    method = TVL1(device=str(dev), batch_pairs=len(cases), **opts)
    t = time.perf_counter()
    on_device = method.pairs(first.to(dev), second.to(dev)).cpu().numpy()
    row["device_s"] = round(time.perf_counter() - t, 3)
    # The CPU reference, pair by pair (batching does not change a pair's flow) until its time is up.
    torch_threads = torch.get_num_threads()
    cpu = TVL1(device="cpu", batch_pairs=1, **cpu_opts)
    t = time.perf_counter()
    limit = min(TVL1_CPU_PAIRS_S, max(run.left() / 3, 1.0))
    for i in range(len(cases)):
        if i not in reference:
            if i and time.perf_counter() - t > limit:
                break
            reference[i] = cpu.pairs(first[i:i + 1], second[i:i + 1])[0].numpy()
    row["cpu_s"] = round(time.perf_counter() - t, 3)
    row["cpu_threads"], row["cpu_options"] = torch_threads, cpu_opts
    done = sorted(reference)
    if not done:
        raise RuntimeError("no CPU reference pair finished")
    d = np.stack([epe(on_device[i], reference[i]) for i in done])
    row.update(pairs=len(done), families=[cases[i].family for i in done],
               diff_max_px=float(d.max()), diff_mean_px=float(d.mean()), diff_median_px=float(np.median(d)),
               diff_p99_px=float(np.percentile(d, 99)), diff_over_0_1px=float((d > 0.1).mean()),
               epe_vs_truth={cases[i].family: {
                   "device": round(float(epe(on_device[i], cases[i].flow)[cases[i].valid].mean()), 4),
                   "cpu": round(float(epe(reference[i], cases[i].flow)[cases[i].valid].mean()), 4)}
                   for i in done})
    problems = []
    if not np.isfinite(on_device).all():
        problems.append("non-finite flow on the device")
    # Same algorithm, float32 on both: anything near a pixel means they differ.
    if not row["diff_mean_px"] < 0.05:
        problems.append(f"mean difference {row['diff_mean_px']:.3g} px from the CPU")
    row["problems"], row["ok"] = problems, not problems
    run.say(f"  {row['variant']} vs CPU on {len(done)} pairs ({', '.join(row['families'])}): endpoint difference "
            f"max {row['diff_max_px']:.3g}, mean {row['diff_mean_px']:.3g}, median {row['diff_median_px']:.3g}, "
            f"p99 {row['diff_p99_px']:.3g} px; device {row['device_s']} s, CPU {row['cpu_s']} s"
            + ("" if not problems else " FAIL " + "; ".join(problems)))


# --------------------------------------------------------------------------------------
# detector
# --------------------------------------------------------------------------------------

def check_detector(run: Run, rec: dict) -> None:
    """The localization detector (models.DETECTORS, ActionFormer's sizes: 6 levels, 256
    channels) on the device: training steps on random features with random segments
    (AdamW), finite loss and gradients, steps/s, then inference with soft-NMS on the
    device, each detection inside its sequence."""
    from finegym_ray.models import DETECTORS

    dev = run.device
    batch, steps_t, channels, classes = (2, 64, 16, 3) if run.quick else (16, 2304, 2048, 10)
    kwargs = {"embed_dim": 16, "head_dim": 16, "num_levels": 4} if run.quick else \
        {"embed_dim": 256, "head_dim": 256, "num_levels": 6}
    rec["config"] = {"batch": batch, "steps": steps_t, "channels": channels, "classes": classes, **kwargs}
    torch.manual_seed(0)
    model = DETECTORS["pyramid"](in_channels=channels, num_classes=classes, **kwargs).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    feats = torch.randn(batch, channels, steps_t, device=dev)
    lengths = torch.randint(steps_t // 2, steps_t + 1, (batch,), device=dev)
    mask = torch.arange(steps_t, device=dev)[None] < lengths[:, None]  # (B, T)
    targets = []
    for b in range(batch):  # 1-4 segments inside each sequence's valid steps
        k = int(torch.randint(1, 5, ()))
        start = torch.rand(k, device=dev) * lengths[b] * 0.8
        end = torch.minimum(start + 2 + torch.rand(k, device=dev) * lengths[b] * 0.2, lengths[b].float())
        targets.append((torch.stack([start, end], 1), torch.randint(0, classes, (k,), device=dev)))
    problems = []

    def step() -> float:
        losses = model.loss(model(feats, mask), targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        return float(losses["loss"])

    reset_peak(dev)
    first = step()  # warm-up
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    if not math.isfinite(first) or bad:
        problems.append(f"loss {first}, parameters without a finite gradient: {bad[:5]}")
    n, t0 = 0, time.perf_counter()
    target_s = 0.3 if run.quick else 3.0
    while time.perf_counter() - t0 < target_s and run.left() > 1:
        loss = step()
        n += 1
    sync(dev)
    step_s = (time.perf_counter() - t0) / max(n, 1)
    model.eval()
    with torch.no_grad():
        detections = model.detect(model(feats, mask))
    sync(dev)
    for b, (segments, _scores, _labels) in enumerate(detections):
        if segments.numel() and (segments.device.type != dev.type or float(segments.min()) < 0
                                 or float(segments.max()) > float(lengths[b]) + 1e-3):
            problems.append(f"sequence {b}: detections outside [0, {int(lengths[b])}] steps or off the device")
    rec.update(step_s=round(step_s, 4), steps=n, sequences_per_s=round(batch / step_s, 1) if n else None,
               last_loss=round(loss, 4) if n else None, peak_gib=peak_gib(dev),
               detections=[int(d[0].shape[0]) for d in detections], problems=problems, ok=not problems)
    run.say(f"  detector {channels}->{kwargs['embed_dim']} x {kwargs['num_levels']} levels, batch {batch} x "
            f"{steps_t} steps: {rec['sequences_per_s']} sequences/s (step {rec['step_s']} s over {n}), peak "
            f"{rec['peak_gib']} GiB, detections per sequence {rec['detections']}"
            + ("" if not problems else " FAIL " + "; ".join(problems)))


FUNCTIONS = {"env": check_env, "models": check_models, "tsm_r50": check_tsm_r50, "tvl1": check_tvl1,
             "detector": check_detector}


# --------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------

def status_of(rec: dict) -> str:
    if "error" in rec and rec.get("status") != "timeout":
        return "error"
    if rec.get("skipped"):
        return "skipped"
    return "ok" if rec.get("ok") else "FAIL"


def run_check(run: Run, name: str, budget: float, hung: list) -> None:
    rec = run.results["checks"][name] = {"status": "running", "budget_s": round(budget, 1)}
    if hung:
        rec["note"] = f"ran while the timed-out check(s) {', '.join(hung)} still had a thread running"
    run.check_deadline = min(time.monotonic() + budget, run.deadline)
    run.say(f"== {name} (budget {budget:.0f} s)")
    run.save()
    start = time.monotonic()

    def body():
        try:
            FUNCTIONS[name](run, rec)
        except Exception as e:  # noqa: BLE001
            rec["error"] = traceback.format_exc()
            rec["ok"] = False
            run.say(f"{name}: ERROR {type(e).__name__}: {e}")
            print(rec["error"], flush=True)

    thread = threading.Thread(target=body, name=f"check-{name}", daemon=True)
    thread.start()
    thread.join(timeout=max(0.0, min(run.check_deadline + GRACE_S, run.deadline + 5.0) - time.monotonic()))
    rec["seconds"] = round(time.monotonic() - start, 2)
    if thread.is_alive():
        frame = sys._current_frames().get(thread.ident)
        rec["status"] = "timeout"
        rec["ok"] = False
        rec["error"] = "timed out in:\n" + "".join(traceback.format_stack(frame)) if frame else "timed out"
        hung.append(name)
        run.say(f"{name}: TIMEOUT after {rec['seconds']} s\n{rec['error']}")
    else:
        rec["status"] = status_of(rec)
        run.say(f"{name}: {rec['status']} in {rec['seconds']} s"
                + (f" - {rec['summary']}" if rec.get("summary") else ""))
    run.save()


def table(run: Run) -> str:
    lines = [f"{'check':<9} {'status':<8} {'s':>6}  summary"]
    for name, rec in run.results["checks"].items():
        summary = rec.get("summary") or rec.get("skipped") or ""
        if name == "env" and rec.get("torch"):
            summary = (f"{rec.get('device_name')}, torch {rec['torch']}, CUDA {rec.get('cuda_build')}, "
                       f"cuDNN {rec.get('cudnn')}, {rec.get('memory_gib', '-')} GiB")
        if rec.get("status") in ("error", "timeout"):
            summary = (rec.get("error") or "").strip().splitlines()[-1][:100] if rec.get("error") else summary
        lines.append(f"{name:<9} {rec.get('status', '?'):<8} {rec.get('seconds', 0):>6.1f}  {summary}")
        for row in rec.get("rows", []) + rec.get("throughput", []):
            lines.append("    " + row_line(name, row))
    lines.append(f"wall {run.elapsed():.1f} s; results in {run.path}")
    return "\n".join(lines)


def row_line(check: str, row: dict) -> str:
    what = row.get("name") or f"{row.get('variant')}" + (f" b{row['batch']}" if row.get("batch") else "")
    if row.get("skipped"):
        return f"{what:<30} skipped ({row['skipped']})"
    if "ok" not in row:
        return f"{what:<30} running (interrupted)"
    state = "ok" if row.get("ok") else ("ERROR" if row.get("error") else "FAIL")
    if state != "ok" and "step_s" not in row and "clips_per_s" not in row and "pairs_per_s" not in row:
        return f"{what:<30} {state:<5} {'; '.join(row.get('problems') or [])[:110]}"
    if check == "models":
        return (f"{row['name']:<30} {state:<5} step {row.get('step_s', '-')} s  peak {row.get('peak_gib', '-')} GiB  "
                f"loss {row.get('loss', float('nan')):.3f}  act {row.get('activations_layout', '-')} "
                f"{str(row.get('activations_dtype', '-')).replace('torch.', '')}"
                + ("  WARN " + "; ".join(row["warnings"]) if row.get("warnings") else "")
                + ("  " + "; ".join(row.get("problems") or [])[:160] if state != "ok" else ""))
    if check == "tsm_r50":
        return f"{what:<30} {state:<5} {row.get('clips_per_s', '-')} clips/s  peak {row.get('peak_gib', '-')} GiB"
    return (f"{what:<30} {state:<5} {row.get('pairs_per_s', '-')} pairs/s  EPE vs truth "
            f"{row.get('epe_vs_truth_mean', '-')} px  peak {row.get('peak_gib', '-')} GiB"
            + ("  " + "; ".join(row.get("problems") or [])[:120] if state != "ok" else ""))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of every code path")
    p.add_argument("--only", default="", help=f"comma-separated checks among {', '.join(CHECKS)} (env always runs)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"overall seconds (default 300, {QUICK['budget_s']:.0f} with --quick)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder of gpu_check.json "
                   "(default: $OUT, else ./gpu_check_out)")
    p.add_argument("--tvl1-batches", type=lambda s: tuple(int(x) for x in s.split(",")), default=TVL1_BATCHES,
                   help="TV-L1 batch sizes (default %(default)s)")
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = QUICK["budget_s"] if args.quick else 300.0
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        p.error(f"unknown check(s) {unknown}; choose among {', '.join(CHECKS)}")
    args.checks = ["env"] + [c for c in CHECKS[1:] if not only or c in only]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", flush=True)
        return 2
    run = Run(args, device)
    run.say(f"gpu_check: device {device}, checks {', '.join(args.checks)}, budget {args.budget_s:.0f} s"
            f"{', quick' if args.quick else ''}; results to {run.path}")

    def on_term(signum, _frame):
        run.results["terminated"] = signal.Signals(signum).name
        run.save()
        print(table(run), flush=True)
        os._exit(128 + signum)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread (run in-process by a test)
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _run_checks(run)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_checks(run: Run) -> int:
    args = run.args
    hung: list[str] = []
    for name in args.checks:
        left = run.deadline - time.monotonic()
        if name == "env":
            budget = min(ENV_BUDGET_S, left)
        else:
            weights = [WEIGHTS[c] for c in args.checks[args.checks.index(name):]]
            budget = left * WEIGHTS[name] / sum(weights)
        if left <= 0:
            run.results["checks"][name] = {"status": "skipped", "skipped": "overall budget spent", "seconds": 0.0}
            continue
        run_check(run, name, budget, hung)
    run.results["finished"] = True
    run.save()
    print(table(run), flush=True)
    bad = [n for n, r in run.results["checks"].items() if r["status"] in ("FAIL", "error", "timeout")]
    HUNG[:] = hung
    return 1 if bad else 0


HUNG: list[str] = []  # checks whose thread was left running by the last main()

if __name__ == "__main__":
    status = main()
    if HUNG:  # a thread may be stuck in torch: do not wait for it at exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
