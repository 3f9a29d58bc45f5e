"""Feature extraction on Ray Data against a bare loop doing the same work in one process.

    python benchmarks/feature_extraction.py [--videos 3] [--seconds 60] [--gpu-only]

Both sides run the same code on the same videos: ``DecodeSnippets`` (seek, decode at
the run's short side, crop, sample) and ``EmbedSnippets`` (the backbone's features()),
with the same snippet settings and batch size. The bare loop calls them one after the
other in this process; the pipeline is ``run_extract`` on a one-CPU Ray (a decoding
actor and a backbone actor sharing the core: 0.5 CPU each): every Ray worker process is
pinned to the core the bare loop ran on; the driver and Ray's own services (GCS,
raylet) stay on the other cores, as in preprocess_efficiency.py. Both times are wall seconds from the start of
the work (model loading included) to the last feature; the pipeline's also include its
actors' start and the file writes.

Prints snippets/s of both and their ratio (target >= 0.9), end to end and after the first
batch of features (without the actors' start, a few seconds that a long job does not
notice; for the pipeline an upper bound, since decoding runs ahead while the backbone
actor starts and that backlog is counted after the first batch). With a GPU (CUDA), it also
runs the pipeline unpinned with the backbone on the GPU and prints its snippets/s.

The backbone: a freshly initialised TSN-ResNet18 (width 32) at 112 x 112, 4 segments
(what the features are worth does not change the cost). Videos: SynGym, generated once
per run into a temp folder, about ``--seconds`` long each at 320x180, 25 frames/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from competition_data import keep_on_cpu, pin_to_one_core  # noqa: E402

from finegym_ray.config import to_yaml  # noqa: E402
from finegym_ray.localize.backbone import backbone_weights, open_backbone  # noqa: E402
from finegym_ray.localize.config import ExtractConfig  # noqa: E402
from finegym_ray.localize.extract import plan_items, run_extract  # noqa: E402
from finegym_ray.localize.snippets import DecodeSnippets, EmbedSnippets  # noqa: E402
from finegym_ray.runtime.connect import init_ray  # noqa: E402
from finegym_ray.video.files import require_videos  # noqa: E402


def make_run(root: str, *, data: str) -> str:
    """RUNS/tsn: one checkpoint of a freshly initialised TSN-ResNet18/32 (RGB, 112 px)."""
    import torch

    from finegym_ray.models import MODELS
    from finegym_ray.train import checkpoint as ckpt
    from finegym_ray.train.config import TrainConfig

    torch.manual_seed(0)
    config = TrainConfig(data=data, runs=root, model="tsn", name="tsn", segments=4, depth=18, base_width=32,
                         crop=112, test_short=128, task="subaction_event")
    net = MODELS["tsn"](**config.model_kwargs(4))
    run = os.path.join(root, "tsn")
    ckpt.write(run, 0, state={"model": net.state_dict()}, config_yaml=to_yaml(config),
               meta={"class_names": ["a", "b", "c", "d"]})
    return run


def make_videos(root: str, videos: int, seconds: float) -> str:
    from finegym_ray.synth.config import SynthConfig
    from finegym_ray.synth.generate import generate

    per_event = max(seconds / 3, 5.0)
    generate(SynthConfig(videos=videos, width=320, height=180, events_per_video=[2, 2],
                         subactions_per_event=[4, 6], idle_range_s=[per_event / 4, per_event / 2]), root)
    return root


def bare_loop(config: ExtractConfig, run: str, videos: str, annotations: str) -> tuple[int, float, float]:
    """(snippets, wall seconds, snippets/s after the first batch): the same stages called
    in turn, in this process."""
    t0 = time.perf_counter()
    backbone = open_backbone(run, config)
    items, _ = plan_items(config, backbone, annotations, require_videos(videos))
    decode = DecodeSnippets(backbone, config)
    embed = EmbedSnippets(backbone, backbone_weights(backbone), threads=1)
    snippets, first = 0, None
    for item in items:
        batch = {k: [v] for k, v in item.items()}
        for rows in decode(batch):
            out = embed(rows)
            snippets += sum(s == "ok" for s in out.column("status").to_pylist())
            first = first or (time.perf_counter(), snippets)
    end = time.perf_counter()
    return snippets, end - t0, (snippets - first[1]) / (end - first[0])


def pipeline(config: ExtractConfig, run: str, videos: str, annotations: str,
             out: str) -> tuple[int, float, float]:
    """(snippets, wall seconds, snippets/s after the first batch) of ``run_extract``."""
    t0 = time.perf_counter()
    summary = run_extract(config, run, videos, annotations, out, say=lambda m: print(f"  [extract] {m}", flush=True))
    return summary["snippets"], time.perf_counter() - t0, summary["steady_snippets_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0, help="about this many seconds per video")
    ap.add_argument("--fps", type=float, default=0.0, help="sampling rate (0: the videos' 25 fps)")
    ap.add_argument("--stride", type=int, default=4, help="frames between snippet starts")
    ap.add_argument("--gpu-only", action="store_true", help="skip the one-core comparison")
    args = ap.parse_args()

    import ray

    root = tempfile.mkdtemp(prefix="finegym_bench_extract_")
    data = make_videos(os.path.join(root, "data"), args.videos, args.seconds)
    videos, annotations = os.path.join(data, "videos"), os.path.join(data, "annotations")
    run = make_run(os.path.join(root, "runs"), data=os.path.join(root, "no_store"))
    config = ExtractConfig(level="action", snippet_frames=16, stride_frames=args.stride, fps=args.fps, elements=False,
                           batch_size=16, workers=1, model_workers=1, cpus_per_worker=0.5, model_cpus=0.5)
    print(f"videos: {args.videos} x ~{args.seconds:.0f} s at 320x180; snippets of 16 frames every {args.stride} at "
          f"{args.fps or 25:g} fps; backbone TSN-ResNet18/32, 4 segments at 112 px")

    if not args.gpu_only:
        cpu = pin_to_one_core()
        import torch

        torch.set_num_threads(1)
        n_bare, s_bare, steady_bare = bare_loop(config, run, videos, annotations)
        print(f"bare loop (one process, core {cpu}): {n_bare} snippets in {s_bare:.1f} s = "
              f"{n_bare / s_bare:.2f} snippets/s; after the first batch {steady_bare:.2f} snippets/s", flush=True)
        # Ray's services start on the other cores (on a loaded machine they miss Ray's 30 s
        # start deadline when pinned beside the work); its workers join the work's core.
        others = set(range(os.cpu_count() or 1)) - {cpu}
        os.sched_setaffinity(0, others or {cpu})
        init_ray("local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # Ray's lines to its logs
        # The driver (Ray Data's scheduling loop, the file writes) stays on the other cores
        # too: what is compared is the work of the stages, on one core either way.
        with keep_on_cpu("ray::", cpu):
            n_pipe, s_pipe, steady_pipe = pipeline(config, run, videos, annotations, os.path.join(root, "out_cpu"))
        ray.shutdown()
        assert n_pipe == n_bare, (n_pipe, n_bare)
        ratio = (n_pipe / s_pipe) / (n_bare / s_bare)
        print(f"pipeline (Ray Data, one core): {n_pipe} snippets in {s_pipe:.1f} s = {n_pipe / s_pipe:.2f} "
              f"snippets/s; after the first batch {steady_pipe:.2f} snippets/s\n"
              f"ratio pipeline / bare loop: end to end {ratio:.2f}, after the first batch "
              f"{steady_pipe / steady_bare:.2f} (an upper bound: see the docstring) (target >= 0.9)", flush=True)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    import torch

    if torch.cuda.is_available():
        init_ray("local", include_dashboard=False, log_to_driver=False)
        gpu_config = ExtractConfig(level="action", snippet_frames=16, stride_frames=args.stride, fps=args.fps,
                                   elements=False, batch_size=64)
        n, s, steady = pipeline(gpu_config, run, videos, annotations, os.path.join(root, "out_gpu"))
        print(f"pipeline with the backbone on {torch.cuda.get_device_name(0)}, "
              f"{int(ray.cluster_resources().get('CPU', 0))} CPUs decoding: {n} snippets in {s:.1f} s = "
              f"{n / s:.1f} snippets/s ({steady:.1f} after the first batch)", flush=True)
        ray.shutdown()
    else:
        print("no GPU here: GPU snippets/s not measured")


if __name__ == "__main__":
    main()
