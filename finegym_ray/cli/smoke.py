"""Every preset of ``--smoke-test``: each command's tiny version, on data it makes in a
temp folder removed when the command ends, which shows the command works end to end in
seconds to a few minutes on 2 CPU cores. The settings are ``--set`` overrides, applied before the user's own."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

# A tiny SynGym: 2 short 192x108 videos, generated in ~2 s.
SYNTH = ["videos=2", "width=192", "height=108", "events_per_video=[2, 2]", "subactions_per_event=[3, 4]",
         "idle_range_s=[1.0, 2.0]"]

# Its preprocessing: 64-pixel clips, 4-second work units.
PREPROCESS = ["short_side=64", "unit_seconds=4"]

# Training: one epoch of a tiny TSM on the subaction_event task. The tiny SynGym may put
# no clip in val: the smoke test validates on the training clips.
TRAIN = ["task=subaction_event", "model=tsm", "depth=10", "base_width=8", "segments=2", "crop=32",
         "test_short=48", "input_width=0", "epochs=1", "batch_size=4", "test_views=1", "test_crops=1",
         "val_split=train"]


def train_settings(overrides: list[str], *, prefix: str = "") -> list[str]:
    """TRAIN with ``prefix`` ("train." in a sweep) before each key, for a command whose
    own ``overrides`` follow it: without TRAIN's ResNet size where they choose another
    backbone (BN-Inception has one size and refuses a depth)."""
    chosen = dict(o.partition("=")[::2] for o in overrides)
    resnet = chosen.get(f"{prefix}backbone", "resnet").strip() in ("resnet", "")
    return [f"{prefix}{o}" for o in TRAIN if resnet or o.partition("=")[0] not in ("depth", "base_width")]


# Pose training: two epochs of a narrow ST-GCN on the tiny SynGym's poses; validated on
# the training keys, as TRAIN.
POSES = ["task=subaction_event", "model=stgcn", "model_kwargs={base_width: 8}", "frames=16", "epochs=2",
         "batch_size=4", "lr=0.05", "test_views=2", "val_split=train"]

# Sweep: two one-epoch trials of the smoke training, over the segments.
SWEEP = ["space.segments.grid=[1, 2]", "resources.cpus_per_worker=1"]

# Study grids: one-epoch trials of the smoke training, as few as show the study, one seed,
# one at a time on one CPU (the paper's presets ask for GPUs and 3 seeds). pretraining:
# from weights the study trains first on the set task against none (the FineGym preset
# asks for the user's Kinetics and ImageNet weights), cosine as the one epoch allows.
STUDY_SETTINGS = ["resources.workers=1", "resources.cpus_per_worker=1", "resources.gpus_per_worker=0",
                  "max_concurrent_trials=1", "seeds=1"]
STUDY = {"frames": ["space.segments.grid=[1, 2]"], "test_segments": ["space.model.grid=[tsn]"],
         "pretraining": ["space.pretrained.grid=[study:set, null]", "train.lr_schedule=cosine",
                         "train.lr_steps=null"]}
STUDY_TEST_SEGMENTS = (3,)

# Feature extraction: short snippets at a low rate, few element segments.
EXTRACT = ["snippet_frames=8", "stride_frames=4", "fps=6", "segments=4", "batch_size=8"]

# Localization: a tiny detector for a few epochs on toy feature sequences (localize/toy.py).
LOCALIZE = ["epochs=3", "batch_size=4", "warmup_epochs=0", "lr=0.003",
            "detector_kwargs={embed_dim: 32, head_dim: 32, num_levels: 4}"]


def temp_folder(prefix: str) -> str:
    """A new temp folder for a smoke test's data and outputs, removed when the command
    ends: a smoke test shows that a command works and leaves nothing behind."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(_remove, folder)
    return folder


def _remove(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    print(f"[smoke] removed its temp folder {folder}", flush=True)


def syngym() -> str:
    """A new temp folder holding the tiny SynGym (annotations/, videos/)."""
    from ..config import load_config
    from ..synth.config import SynthConfig
    from ..synth.generate import generate

    data = temp_folder("finegym_smoke_")
    generate(load_config(SynthConfig, overrides=SYNTH), data)
    return data


def pose_store() -> str:
    """The tiny SynGym's manifest and poses (no clips) in DATA/store beside it."""
    from ..dataset.manifest import build_manifest_from, write_manifest
    from ..dataset.pose_store import import_pose_pickle
    from ..store import manifest_dir
    from ..synth.generate import POSES as POSE_FILE

    data = syngym()
    folder = os.path.join(data, "store")
    write_manifest(build_manifest_from(os.path.join(data, "annotations")), manifest_dir(folder))
    import_pose_pickle(os.path.join(data, "annotations", POSE_FILE), folder)
    return folder


def mmaction2_rawframes() -> str:
    """A new temp folder holding the tiny SynGym (annotations/, videos/) and its
    sub-actions as mmaction2's rawframes (``subaction_frames/<key>/``; their flow DIS's,
    quantized as denseflow quantizes TV-L1's)."""
    from ..dataset.manifest import build_manifest_from
    from ..preprocess.mmaction2 import write_rawframes
    from ..video.decode import decode_window
    from ..video.flow import compute_flow

    data = syngym()
    for row in build_manifest_from(os.path.join(data, "annotations")).subactions.to_pylist():
        rgb = decode_window(os.path.join(data, "videos", f"{row['video_id']}.mp4"), row["start_s"], row["end_s"],
                            short_side=0).rgb
        write_rawframes(os.path.join(data, "subaction_frames", row["key"]), rgb, compute_flow(rgb, "dis"))
    return data


def store() -> str:
    """The tiny SynGym preprocessed (on the connected Ray), in DATA/store beside it."""
    from ..config import load_config
    from ..preprocess.config import PreprocessConfig
    from ..preprocess.pipeline import run_preprocess
    from .options import printer

    data = syngym()
    folder = os.path.join(data, "store")
    run_preprocess(load_config(PreprocessConfig, overrides=PREPROCESS), os.path.join(data, "annotations"),
                   os.path.join(data, "videos"), folder, say=printer("preprocess"))
    return folder


def trained_run() -> tuple[str, str]:
    """A one-epoch tiny run (``TRAIN``) on a new :func:`store`, in a temp runs folder:
    (run, store)."""
    from ..config import load_config
    from ..train.config import TrainConfig
    from ..train.run import run_training
    from .options import printer

    data = store()
    config = load_config(TrainConfig, overrides=[*TRAIN, f"data={data}",
                                                 f"runs={temp_folder('finegym_runs_')}"])
    return run_training(config, say=printer("train"))["run"], data


def toy_features(level: str) -> tuple[str, str, str]:
    """Toy feature sequences of ``level`` with their ground truth, in a new temp folder:
    (features, annotations, runs)."""
    from ..localize.toy import write_toy_features

    folder = temp_folder("finegym_localize_smoke_")
    annotations = write_toy_features(f"{folder}/features", videos=8, level=level)
    return f"{folder}/features", annotations, f"{folder}/runs"


@contextlib.contextmanager
def serve_folder(folder: str) -> Iterator[str]:
    """The files of ``folder`` over HTTP on 127.0.0.1 (a free port) while the block runs;
    yields the base URL. The download's smoke test fetches SynGym's videos from it, as
    from a mirror."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args) -> None:  # the command's own lines only
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True, name="finegym-smoke-http").start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
