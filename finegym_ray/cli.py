"""``finegym-ray``: the command line. Each subcommand parses its arguments and calls one
library function; bad input ends with one ``error:`` line and exit code 2.

Bad input is: a file that does not parse (FormatError), a setting out of range or of the
wrong type (ConfigError), a missing, unreadable or wrong kind of file or object
(FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError), storage that
cannot be reached (storage.StorageError), and a ValueError that this package's own code
raised on purpose (its convention for refused input). Anything else, including a
ValueError from inside numpy, pyarrow, torch or Ray, is a bug and keeps its traceback
(``FINEGYM_RAY_DEBUG=1`` shows the traceback of bad input too)."""

from __future__ import annotations

import argparse
import linecache
import os
import sys
from typing import Callable, Sequence

from .config import ConfigError
from .dataset.errors import FormatError
from .ray_connect import init_ray

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# Commands whose rerun resumes where an interrupted one stopped (Ctrl-C says so).
RESUMABLE = ("train", "tune", "preprocess", "extract-features", "localize")


def _endpoint_url(text: str) -> str:
    from .storage import StorageOptions

    try:
        StorageOptions(endpoint_url=text)
    except ValueError as e:  # argparse turns this into one usage line and exit code 2
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint", metavar="URL", type=_endpoint_url,
                   help="S3-compatible endpoint for s3:// URIs, here and on every Ray worker; it wins over "
                        "$AWS_ENDPOINT_URL_S3 and $AWS_ENDPOINT_URL (the default, else AWS). "
                        "Credentials come from the standard AWS chain (env vars, ~/.aws, instance profile).")


def _add_lease_option(p: argparse.ArgumentParser, folder: str) -> None:
    p.add_argument("--break-lease", action="store_true",
                   help=f"one job writes {folder} at a time ({folder}/lease.json names it); remove the lease of a "
                        "job that is gone (a killed job's is taken over without it: at once on its own host and "
                        "container, elsewhere once its heartbeat is 2 minutes old)")


def _add_synth_options(p: argparse.ArgumentParser, default_preset: str = "small") -> None:
    p.add_argument("--preset", default=default_preset,
                   help=f"size preset (default {default_preset}): small (4 videos, ~4 min of 640x360, ~20 s to "
                        "make on 2 cores), demo (16 videos, ~33 min of 320x180, ~540 sub-actions, ~45 s), "
                        "medium (24 videos, ~1.8 h), competition (2 videos of ~20 min at 720p, for benchmarks)")
    p.add_argument("--videos", type=int, help="number of competition videos (overrides the preset)")
    p.add_argument("--seed", type=int, help="random seed: the same seed gives the same files (default 0)")
    p.add_argument("--fps", type=float, choices=[25.0, 29.97, 30.0],
                   help="frame rate of every video (default: each video draws one of 25, 29.97, 30)")
    p.add_argument("--config", metavar="YAML", help="synth config file (fields of SynthConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set noise=4 (repeatable)")


def _synth_config(args: argparse.Namespace):
    from .config import load_config
    from .synth.config import SynthConfig, preset

    overrides = list(args.overrides)
    for name in ("videos", "seed", "fps"):
        if getattr(args, name) is not None:
            overrides.append(f"{name}={getattr(args, name)}")
    return load_config(SynthConfig, args.config, overrides, base=preset(args.preset))


def cmd_synth(args: argparse.Namespace) -> int:
    config = _synth_config(args)
    from .synth.generate import generate

    summary = generate(config, args.out, progress=_progress("synth", "videos"))
    print(summary.describe())
    print(f"annotations: {os.path.join(args.out, 'annotations')}")
    print(f"videos:      {os.path.join(args.out, 'videos')}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .video.check import run_check

    return run_check(args.annotations, args.videos, args.csv, allow_vfr=args.allow_vfr,
                     say=lambda m: print(m, flush=True))


def cmd_manifest(args: argparse.Namespace) -> int:
    from .dataset.manifest import build_manifest, format_summary, write_manifest

    manifest = build_manifest(args.annotations, args.categories, args.splits, sets=args.sets)
    written = write_manifest(manifest, args.out)
    print(format_summary(manifest.summary))
    for name, uri in written.items():
        print(f"{name + ':':<16}{uri}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import ray

    from . import storage
    from .config import apply_overrides
    from .demo import MARKER, claim_store, connect_ray, holding_demo_folders, run_demo
    from .preprocess.config import PreprocessConfig
    from .train.config import DEMO
    from .train.evaluate import format_results

    # SynGym's demo preset is 320x180: clips cut at a 128-pixel short side.
    preprocess = PreprocessConfig(short_side=128)
    train = apply_overrides(DEMO, args.train_overrides)
    if args.smoke_test:
        args.overrides = SMOKE_SYNTH + list(args.overrides)
        preprocess = PreprocessConfig(short_side=64, unit_seconds=4.0)
        train = apply_overrides(DEMO, SMOKE_TRAIN + list(args.train_overrides))
    preprocess = apply_overrides(preprocess, args.preprocess_overrides)
    synth = _synth_config(args)
    store = args.store or os.path.join(args.out, "store")
    train = replace(train, data=store, runs=storage.join(store, "runs"))  # what claim_store sets
    from .progress import settings_line

    # Held from before the demo replaces outdated outputs until its last write.
    with holding_demo_folders(args.out, store, break_lease=args.break_lease,
                              say=lambda m: print(f"[demo] {m}", flush=True)):
        plan = claim_store(args.out, synth, args.store, preprocess, None if args.no_train else train)
        print(f"[demo] synth {settings_line(synth, ('videos', 'width', 'height', 'seed'))}; preprocess "
              f"{settings_line(preprocess, ('short_side', 'flow.method'))}"
              + ("" if args.no_train else f"; train {settings_line(train, TRAIN_SETTINGS_SHOWN)}")
              + f"; all settings in {storage.join(store, MARKER)}", flush=True)
        connect_ray(args.address)
        try:
            done = run_demo(plan)
        finally:
            ray.shutdown()  # before the summary, so that no worker output lands inside it
    if done["results"] is not None:
        print(f"\n{format_results(done['results'])}")
    print(f"\ndemo finished in {done['seconds']:.1f} s. Outputs:")
    for name, loc in done["outputs"].items():
        print(f"  {name + ':':<13}{loc}")
    return 0


# A tiny SynGym for --smoke-test: 2 short 192x108 videos, generated in ~2 s.
SMOKE_SYNTH = ["videos=2", "width=192", "height=108", "events_per_video=[2, 2]", "subactions_per_event=[3, 4]",
               "idle_range_s=[1.0, 2.0]"]


# The settings in the one line train, preprocess and demo start with (all: in a file).
TRAIN_SETTINGS_SHOWN = ("task", "modality", "model", "segments", "epochs", "batch_size", "lr", "workers",
                        "cpus_per_worker", "use_gpu")
PREPROCESS_SETTINGS_SHOWN = ("short_side", "flow.method", "unit_seconds", "events", "subactions", "workers")


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .config import load_config
    from .preprocess.config import PreprocessConfig
    from .preprocess.pipeline import format_summary, run_preprocess, videos_to_cut

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = ["short_side=64", "unit_seconds=4", *overrides]
    # Settings first: a bad one stops the command before the smoke test's data is made.
    config = load_config(PreprocessConfig, args.config, overrides)
    if args.smoke_test:
        import tempfile

        from .synth.config import SynthConfig
        from .synth.generate import generate

        data = tempfile.mkdtemp(prefix="finegym_smoke_")
        generate(load_config(SynthConfig, overrides=SMOKE_SYNTH), data)
        args.annotations, args.videos = os.path.join(data, "annotations"), os.path.join(data, "videos")
        args.out = args.out or os.path.join(data, "out")
    missing = [f"--{n}" for n in ("annotations", "videos", "out") if not getattr(args, n)]
    if missing:
        raise ValueError(f"preprocess needs {', '.join(missing)} (or --smoke-test)")
    videos_to_cut(args.videos)  # no folder, or no video in it: refused before Ray starts
    from . import storage
    from .progress import settings_line

    print(f"[preprocess] {settings_line(config, PREPROCESS_SETTINGS_SHOWN)}; all settings in "
          f"{storage.join(args.out, 'config.yaml')}", flush=True)
    init_ray(args.address)
    summary = run_preprocess(config, args.annotations, args.videos, args.out, prune=args.prune,
                             break_lease=args.break_lease, say=lambda m: print(f"[preprocess] {m}", flush=True))
    print(format_summary(summary))
    print(preprocess_outputs(args.out))
    return preprocess_exit_code(summary, strict=args.strict)


def preprocess_outputs(out: str) -> str:
    """Where preprocessing's outputs are, one per line; errors/ only when it exists
    (nothing failed: none is written)."""
    from . import storage

    out = out.rstrip("/")
    errors = f"errors:  {out}/errors/\n" if storage.list_uris(storage.join(out, "errors")) else ""
    return f"clips:   {out}/clips/\n{errors}summary: {out}/summary.json\nconfig:  {out}/config.yaml"


def _smoke_store() -> str:
    """A tiny preprocessed SynGym in a temp folder, for the train/evaluate smoke tests."""
    import tempfile

    from .config import load_config
    from .preprocess.config import PreprocessConfig
    from .preprocess.pipeline import run_preprocess
    from .synth.config import SynthConfig
    from .synth.generate import generate

    data = tempfile.mkdtemp(prefix="finegym_smoke_")
    generate(load_config(SynthConfig, overrides=SMOKE_SYNTH), data)
    store = os.path.join(data, "store")
    run_preprocess(PreprocessConfig(short_side=64, unit_seconds=4.0), os.path.join(data, "annotations"),
                   os.path.join(data, "videos"), store, say=lambda m: print(f"[preprocess] {m}", flush=True))
    return store


# Training settings of --smoke-test: one epoch of a tiny TSM on the subaction_event task. The
# tiny SynGym may put no clip in val: the smoke test validates on the training clips.
SMOKE_TRAIN = ["task=subaction_event", "model=tsm", "depth=10", "base_width=8", "segments=2", "crop=32",
               "test_short=48", "input_width=0", "epochs=1", "batch_size=4", "test_views=1", "test_crops=1",
               "val_split=train"]


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train.config import TrainConfig

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = SMOKE_TRAIN + overrides
    for flag, key in ((args.data, "data"), (args.runs, "runs"), (args.name, "name")):
        if flag:
            overrides.append(f"{key}={flag}")
    config = load_config(TrainConfig, args.config, overrides)
    from .train.config import with_absolute_paths

    config = with_absolute_paths(config)  # as the run records them: it reads the same data from anywhere
    if not args.smoke_test:
        from .train.data import check_data_settings

        # The clips' recorded settings against the task and modality, before Ray starts.
        check_data_settings(config.data, config.task, config.modality)
    init_ray(args.address)
    if args.smoke_test:
        import tempfile
        from dataclasses import replace

        store = _smoke_store()
        config = replace(config, data=store, runs=args.runs or tempfile.mkdtemp(prefix="finegym_runs_"))
    from .train.run import format_history, run_training

    from .progress import settings_line
    from .train.run import run_uri

    print(f"[train] {settings_line(config, TRAIN_SETTINGS_SHOWN)}; all settings in {run_uri(config)}/config.yaml",
          flush=True)
    result = run_training(config, break_lease=args.break_lease, say=lambda m: print(f"[train] {m}", flush=True))
    print(format_history(result["history"]))
    print(f"run:        {result['run']}\ncheckpoint: {result['checkpoint']}\nconfig:     {result['run']}/config.yaml")
    return 0


def _fuse_weights(text: str) -> tuple[float, float]:
    """``--fuse-weights 1,1.5``: two positive numbers."""
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 2 or not all(0 < w < float("inf") for w in weights):
        raise argparse.ArgumentTypeError(f"expected two positive numbers W_RUN,W_FUSE, got {text!r}")
    return weights  # type: ignore[return-value]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train.evaluate import format_results, plan_evaluation, run_evaluation

    # Checked before Ray starts: a count below 1 would otherwise fail inside Ray.
    for option, value in (("--workers", args.workers), ("--cpus-per-worker", args.cpus_per_worker),
                          ("--segments", args.segments)):
        if value is not None and value < 1:
            raise ValueError(f"evaluate {option} must be >= 1, got {value}")
    def say(message: str) -> None:
        print(f"[evaluate] {message}", flush=True)

    options = dict(fuse=args.fuse, fuse_weights=args.fuse_weights, segments=args.segments,
                   shuffle_frames=args.shuffle_frames, seed=args.seed, checkpoint=args.checkpoint, data=args.data,
                   rescore=args.rescore, out=args.out, say=say)
    if not args.smoke_test:
        if not args.run:
            raise ValueError("evaluate needs --run (or --smoke-test)")
        # Before Ray starts: a run that is not there, a model that cannot take other
        # segments (TRN, I3D), clips that lack what the run reads, outputs that cannot be
        # written, a state.pt that would run code: each one line, and no Ray work.
        plan = plan_evaluation(args.run, **options)
    init_ray(args.address)
    if args.smoke_test:
        import tempfile

        from .config import load_config
        from .train.config import TrainConfig
        from .train.run import run_training

        config = load_config(TrainConfig, overrides=[*SMOKE_TRAIN, f"data={_smoke_store()}",
                                                    f"runs={tempfile.mkdtemp(prefix='finegym_runs_')}"])
        plan = plan_evaluation(run_training(config, say=lambda m: print(f"[train] {m}", flush=True))["run"],
                               **options)
    results = run_evaluation(plan, workers=args.workers, cpus_per_worker=args.cpus_per_worker, say=say)
    print(format_results(results))
    return 0


def cmd_extract_features(args: argparse.Namespace) -> int:
    from .localize.extract import cli_extract_features

    return cli_extract_features(args, init_ray=lambda: init_ray(args.address))


# Sweep of --smoke-test: two one-epoch trials of the smoke training, over the segments.
SMOKE_SWEEP = ["space.segments.grid=[1, 2]", "resources.cpus_per_worker=1"]


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune.config import load_sweep

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = [f"train.{o}" for o in SMOKE_TRAIN] + SMOKE_SWEEP + overrides
    elif not args.config:
        raise ValueError("tune needs --config SWEEP.yaml (or --smoke-test)")
    if args.smoke_test and not args.config:
        overrides.append("name=smoke")
    # Settings first: a bad sweep stops the command before Ray starts.
    sweep, base = load_sweep(args.config, overrides)
    # Trials' and training workers' own lines stay in Ray's logs: this driver prints a
    # line per trial event.
    init_ray(args.address, log_to_driver=False)
    if args.smoke_test:
        import tempfile
        from dataclasses import replace

        base = replace(base, data=_smoke_store())
        sweep = replace(sweep, sweeps=tempfile.mkdtemp(prefix="finegym_sweeps_"))
    from .tune.sweep import format_sweep, run_sweep

    print(f"[tune] sweep {sweep.name}: {sweep.space or 'no search space'}, metric {sweep.metric} ({sweep.mode}), "
          f"scheduler {sweep.scheduler}", flush=True)
    result = run_sweep(sweep, base, break_lease=args.break_lease, say=lambda m: print(f"[tune] {m}", flush=True))
    print(format_sweep(result, sweep.metric))
    return 1 if any(t.status == "errored" for t in result["trials"]) else 0


# Study grids of --smoke-test: one-epoch trials of the smoke training, as few as show the study.
SMOKE_STUDY = {"frames": ["space.segments.grid=[1, 2]"], "test_segments": ["space.model.grid=[tsn]"]}


def cmd_study(args: argparse.Namespace) -> int:
    from .submit import project_root
    from .tune.config import load_sweep
    from .tune.studies import STUDIES, TEST_SEGMENTS

    if args.name not in STUDIES:
        raise ValueError(f"unknown study {args.name!r}; studies: {', '.join(STUDIES)}")
    root = project_root()
    preset = root / "configs" / "studies" / ("syngym" if args.preset == "syngym" else "") if root else None
    config = args.config or (str(preset / f"{args.name}.yaml") if preset else None)
    if config is None:
        raise ValueError("study needs --config STUDY.yaml (no configs/ beside an installed package)")
    overrides = [f"train.data={args.data}"] * bool(args.data) + list(args.overrides)
    if args.smoke_test:
        overrides = [f"train.{o}" for o in SMOKE_TRAIN] + SMOKE_STUDY.get(args.name, []) + overrides
    sweep, base = load_sweep(config, overrides)  # a bad setting stops the command before Ray starts
    test_segments = (3,) if args.smoke_test else TEST_SEGMENTS
    init_ray(args.address, log_to_driver=False)
    from .tune.studies import TrialsFailed, format_study, make_study_store, run_study, store_settings

    say = lambda m: print(f"[study] {m}", flush=True)  # noqa: E731
    if args.smoke_test:
        import tempfile
        from dataclasses import replace

        base = replace(base, data=_smoke_store())
        sweep = replace(sweep, sweeps=tempfile.mkdtemp(prefix="finegym_studies_"))
    elif args.preset == "syngym" and not args.data:
        make_study_store(base.data, *store_settings(str(preset / "store.yaml")), say=say)
    try:
        result = run_study(args.name, sweep, base, test_segments=test_segments, break_lease=args.break_lease,
                           say=say)
    except TrialsFailed as e:
        print(f"finegym-ray: {e}", file=sys.stderr)
        return 1
    print(format_study(result["table"]))
    for name, uri in result["outputs"].items():
        print(f"{name + ':':<7}{uri}")
    return 0


def cmd_score_detections(args: argparse.Namespace) -> int:
    from .localize.score import run

    return run(args.ground_truth, args.detections, level=args.level, subset=args.subset,
               agnostic=args.class_agnostic, as_json=args.json)


def cmd_localize(args: argparse.Namespace) -> int:
    from .localize.commands import demo_command, evaluate_command, train_command

    return {"train": train_command, "evaluate": evaluate_command, "demo": demo_command}[args.action](args, init_ray)


def cmd_runs(args: argparse.Namespace) -> int:
    from .train.runs import run

    return run(args.uri, as_json=args.json)


def cmd_submit(args: argparse.Namespace) -> int:
    from .submit import config_as_overrides, job_paths, stages, submit, sweep_file_args

    if args.stage not in stages():
        raise ValueError(f"no job entry point for stage {args.stage!r}; stages: {', '.join(stages())}")
    rest = list(args.stage_args)
    sweep = []
    if args.stage == "tune" and args.config:
        sweep, args.config = sweep_file_args(args.config), None
    overrides = (config_as_overrides(args.config) if args.config else []) + list(args.overrides)
    for item in overrides:
        rest += ["--set", item]
    rest, notes = job_paths(rest)  # relative paths would be read in the job's uploaded working directory
    rest = sweep + rest + ["--verbose"] * bool(args.verbose)
    for note in notes:
        print(f"[submit] {note}", flush=True)
    return submit(args.stage, args.address, rest, wait=args.wait, submission_id=args.job_id,
                  token_file=args.token_file)


def preprocess_exit_code(summary: dict, *, strict: bool) -> int:
    """The state of the output over the whole plan, not of this run's attempts (so the
    same command on the same inputs always exits the same): 1 when no planned unit has
    clips, or with ``strict`` when any planned unit has an error record; else 0."""
    state = summary["output"]
    if state["planned"] and state["with_clips"] == 0:
        return 1
    if strict and state["with_errors"]:
        return 1
    return 0


def train_settings_help() -> str:
    """Every TrainConfig field with its default (and its choices where the config module
    names them), generated from the dataclass so that ``train --help`` cannot drift."""
    from dataclasses import MISSING, fields

    from .dataset.labels import TASK_NAMES
    from .train import config as train_config

    choices = {"task": TASK_NAMES, "modality": train_config.MODALITIES, "model": train_config.MODELS,
               "class_balance": train_config.CLASS_BALANCE, "optimizer": train_config.OPTIMIZERS,
               "depth": train_config.DEPTHS}

    def shown(value) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(map(shown, value)) + "]"
        return "''" if value == "" else str(value)

    items = []
    for f in fields(train_config.TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        more = f" ({'|'.join(map(str, choices[f.name]))})" if f.name in choices else ""
        items.append(f"{f.name}={shown(default)}{more}")
    return ", ".join(items)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finegym-ray",
        description="FineGym fine-grained gymnastics: synthetic data, manifests, preprocessing "
                    "and training on Ray. Run 'finegym-ray demo' for the whole pipeline on synthetic data.",
    )
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo", help="run every stage on a generated synthetic dataset with a Ray of its own",
        description="Generate the SynGym synthetic dataset (videos rendered in parallel on Ray), preprocess "
                    "it on Ray Data (manifest, clip shards with optical flow), train a small TSM on Ray Train "
                    "(set task, 15 classes), evaluate it and print the metrics table and where everything "
                    "went. Reuses an existing synthetic dataset made with the same settings, skips clips "
                    "already cut and resumes a finished or interrupted training run.")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny version: 2 small videos, 64-pixel clips, one epoch of a tiny model")
    p.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one training setting of the demo (configs/tsm_flow_demo.yaml), e.g. epochs=3")
    p.add_argument("--preprocess-set", dest="preprocess_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one preprocessing setting of the demo (short_side=128; the keys of "
                        "'finegym-ray preprocess --help'), e.g. flow=farneback; a change re-cuts the demo's clips")
    p.add_argument("--no-train", action="store_true", help="stop after preprocessing")
    p.add_argument("--out", default="finegym_demo", help="working folder for the synthetic data (default ./finegym_demo)")
    p.add_argument("--store", help="object storage root for outputs, a folder or s3://bucket/prefix "
                                   "(default OUT/store)")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, which a submitted job has, else "
                                     "a new local Ray for this command, even where `ray start` left a cluster "
                                     "running); it says which")
    p.add_argument("--break-lease", action="store_true",
                   help="one demo works in OUT and its store at a time (their lease.json names it); remove the "
                        "leases of a demo that is gone (that of a killed demo is taken over without it)")
    _add_synth_options(p, default_preset="demo")
    _add_storage_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "synth", help="generate SynGym: FineGym-format annotations and H.264 videos",
        description="Write DIR/annotations/ (annotation JSON, set and element categories, train/val splits, "
                    "in FineGym's exact formats) and DIR/videos/<id>.mp4, deterministic per seed.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_synth_options(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "preprocess", help="cut sub-action (and event) clips with optical flow into Parquet shards, on Ray Data",
        description="Plan work units from the annotations, then decode each window (resized at decode), "
                    "compute optical flow and write OUT/clips/<unit>.parquet (JPEG frames and flow per clip), "
                    "OUT/errors/ and OUT/summary.json. Running the same command again resumes: units whose "
                    "shard exists are skipped. Bad videos are recorded in OUT/errors/ and the job goes on.",
        epilog="settings (--set KEY=VALUE or --config YAML): short_side=256, decoder=pyav|decord, "
               "max_fps=null, flow.method=dis|farneback|tvl1|none and its flow.options.NAME=VALUE (dis: "
               "preset=fast; tvl1: tau, lambda_, theta, scales, scale_step, warps, epsilon, inner_iterations, "
               "outer_iterations, median_filtering, gamma, device=auto|cpu|cuda, batch_pairs, ...: see "
               "finegym_ray/video/tvl1.py; --set flow=NAME: that method with its defaults), flow_bound=20, "
               "jpeg_quality=90, events=false, subactions=true, unit_seconds=60, chunk_frames=128, "
               "allow_vfr=false, workers=null (one per CPU), cpus_per_worker=1, "
               "flow_workers=null and flow_gpus_per_worker=1 (tvl1's flow actors: one per GPU, on CPUs where "
               "the cluster has none), cache_dir=null (a private folder per user on each node), cache_gb=50. "
               "Exit status, over the whole plan (a rerun that only retries failures exits the same): 0 "
               "(failures counted in the summary), 1 if no unit has clips or, with --strict, if any unit or "
               "clip failed, 2 for bad input.")
    p.add_argument("--annotations", metavar="DIR_OR_JSON",
                   help="FineGym annotation folder (annotation JSON, categories, splits) or the annotation JSON")
    p.add_argument("--videos", metavar="URI", help="folder of <video_id>.mp4 files, local or s3://")
    p.add_argument("--out", metavar="URI", help="output folder, local or s3://bucket/prefix")
    p.add_argument("--smoke-test", action="store_true",
                   help="run on a tiny generated SynGym (2 videos) instead of --annotations/--videos; "
                        "output to --out or a temp folder")
    p.add_argument("--config", metavar="YAML", help="preprocess config file (fields listed below)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set flow=farneback or --set flow.options.preset=medium "
                        "(repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any planned unit or clip has failed")
    p.add_argument("--prune", action="store_true",
                   help="delete shards of an earlier plan (annotations or unit_seconds changed) instead of refusing")
    _add_lease_option(p, "OUT")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser(
        "train", help="train a recognition model on clip shards with Ray Train (resumes by run name)",
        description="Train TSN/TRN/TSM/I3D on the clips preprocessing wrote (DATA/clips, labels from "
                    "DATA/manifest) with N Ray Train workers (DDP, CPU or GPU). Checkpoints every epoch to "
                    "RUNS/NAME (the last keep_checkpoints and the best kept); running the same command again "
                    "continues after the newest complete one, and a worker that dies is replaced and resumes "
                    "from it. Another epochs, model or preprocessing of the clips is refused on resume.",
        epilog=f"settings (--set KEY=VALUE or --config YAML, see configs/; the comments in "
               f"finegym_ray/train/config.py explain each), with their defaults: {train_settings_help()}. "
               "Example: finegym-ray train --config configs/tsm_flow_demo.yaml --data finegym_demo/store")
    p.add_argument("--config", metavar="YAML", help="train config file (configs/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set epochs=5 (repeatable)")
    p.add_argument("--data", metavar="URI", help="preprocessing output to train on (the config's data)")
    p.add_argument("--runs", metavar="URI", help="folder or s3:// prefix holding runs (the config's runs)")
    p.add_argument("--name", help="run name (default MODEL_MODALITY_TASK); the same name resumes")
    p.add_argument("--smoke-test", action="store_true",
                   help="one epoch of a tiny model on a tiny generated and preprocessed SynGym")
    _add_lease_option(p, "RUNS/NAME")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="score a trained run on its validation split; fuse two runs (two-stream)",
        description="Score every validation clip with the run's test protocol (test_views temporal views x "
                    "test_crops crops, softmax averaged) and write RUN/eval/: scores.parquet, metrics.json "
                    "(top-1 and mean class accuracy with 95 % bootstrap intervals, per class), confusion.png, "
                    "per_class.png. With --fuse RUN2 also evaluates RUN2 and writes the late fusion of both "
                    "(weighted mean, --fuse-weights) under RUN/eval/fused_<RUN2 name>_<hash of its URI>/, reusing either "
                    "run's scores when its checkpoint, clips and test settings are unchanged. "
                    "--segments and --shuffle-frames test the paper's Sec. 4.4 variants; their outputs go to "
                    "RUN/eval/VARIANT/ (segments_12, shuffled, segments_5_shuffled, shuffled_seed_3), leaving "
                    "RUN/eval/ as it was.")
    p.add_argument("--run", metavar="URI", help="a run folder (RUNS/NAME) or one of its checkpoint folders "
                                                "(RUNS/NAME/epoch_NNNN), local or s3://")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run folder: last (the newest complete one, default; results in "
                        "RUN/eval/) or best (by validation mean class accuracy; results in RUN/eval/<its folder>/ "
                        "unless it is the newest)")
    p.add_argument("--data", metavar="URI",
                   help="the clips to score (default: the run's recorded data), e.g. a copy elsewhere; refused "
                        "unless their preprocessing settings hash is the one the run was trained on")
    p.add_argument("--rescore", action="store_true",
                   help="score again even where RUN/eval/ holds scores of the same checkpoint, clips and settings")
    p.add_argument("--out", metavar="DIR",
                   help="write the evaluation's outputs to DIR (local or s3://) instead of RUN/eval/, in the same "
                        "layout (with --fuse, RUN2's own in DIR/fuse_run/ instead of RUN2/eval/), e.g. for a run "
                        "you cannot write to; scores already in DIR are reused as in RUN/eval/. Every output "
                        "folder is checked writable before any scoring")
    p.add_argument("--fuse", metavar="URI", help="a second run (or checkpoint) to fuse with (e.g. the flow run of an "
                                                 "RGB run); its task, split and classes must be the run's")
    p.add_argument("--fuse-weights", type=_fuse_weights, metavar="W_RUN,W_FUSE",
                   help="weights of the --run and --fuse scores in their weighted mean (default: TSN's, RGB 1 and "
                        "flow 1.5 by each run's modality); recorded in the fusion's metrics.json")
    p.add_argument("--segments", type=int, metavar="N",
                   help="test with N segments (default: as trained), sampler and model alike, e.g. 3 to 12 for a "
                        "model trained with 3. TSN and TSM take any N; TRN and TRN-multiscale (relation weights "
                        "sized for the trained count) and I3D/NL-I3D (segments = its clip's frames) only their own")
    p.add_argument("--shuffle-frames", action="store_true",
                   help="shuffle the order of each clip's segments (I3D: frames) before the model sees them, "
                        "the same order in all views of a clip: how much the model relies on temporal order")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the --shuffle-frames orders (default 0); each clip's order follows from it and "
                        "the clip's key, so reruns repeat it")
    p.add_argument("--workers", type=int, default=1, help="scoring actors (default 1; one GPU each if present)")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (torch threads) per scoring actor")
    p.add_argument("--smoke-test", action="store_true",
                   help="train one epoch of a tiny model on a tiny generated SynGym, then evaluate it")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "extract-features", help="snippet features of videos (or routines) with a trained run's backbone, "
                                 "on Ray Data, for localization",
        description="Slide snippets over whole videos (--level action) or over each routine (subaction, times "
                    "relative to the routine start), embed them with the backbone of a trained recognition run "
                    "(its features()), and write OUT/<level>/<id>.parquet, plus per-instance features of the "
                    "run's element clips (OUT/elements/). Decoding and flow on CPU actors, the backbone on GPU "
                    "actors where the cluster has GPUs. Running the same command again skips complete files.",
        epilog="Settings (--set): snippet_frames=16, stride_frames=8, fps=0 (the clips' rate), short_side, "
               "input_height/input_width, segments=12, elements=true, batch_size=32, workers, model_workers, "
               "gpus_per_model_worker, model_cpus. Exit status: 0, 1 if an item failed (see OUT/errors/), "
               "2 for bad input.")
    p.add_argument("--run", metavar="RUN_URI", help="a trained run (RUNS/NAME) or one of its epoch_NNNN folders")
    p.add_argument("--videos", metavar="URI", help="folder of <video_id>.mp4 files (local or s3://)")
    p.add_argument("--annotations", metavar="PATH", help="FineGym annotation folder or JSON")
    p.add_argument("--out", metavar="URI", help="output folder (local or s3://)")
    p.add_argument("--level", choices=("action", "subaction"), help="snippets over whole videos or routines")
    p.add_argument("--config", metavar="YAML", help="extraction config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one extraction setting (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny generated SynGym, preprocessed, a one-epoch tiny run, then extraction, in a temp "
                        "folder")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_extract_features)

    p = sub.add_parser(
        "tune", help="sweep training settings with Ray Tune (grid/random search, ASHA); resumes by sweep name",
        description="Run the trials of SWEEP.yaml: each trains the base training config with the swept values "
                    "(a TorchTrainer per trial, checkpoints in SWEEPS/NAME/trials/<trial id>/). Prints a line per "
                    "trial event and at the end the results table; writes SWEEPS/NAME/results/ (results.parquet, "
                    "results.csv, best.yaml ready for 'finegym-ray train --config', a PNG per swept setting) and "
                    "Tune's TensorBoard files per trial. Running the same command again resumes the sweep: "
                    "finished trials stay, unfinished ones continue from their newest checkpoint.",
        epilog="SWEEP.yaml: name (default: the file's stem), base (a train config file), train (training values "
               "on top of it), space (KEY: {grid|choice: [...]} or {uniform|loguniform|randint: [lo, hi]}), "
               "num_samples=1, metric=val_mean_class|val_top1|val_loss|train_*, mode=max|min, scheduler=none|asha, "
               "grace_period=1 (epochs), reduction_factor=2, max_concurrent_trials=0 (as many as fit), resources "
               "(workers=1, cpus_per_worker=1, gpus_per_worker=0), sweeps=./finegym_sweeps. Overrides: --set "
               "num_samples=4, --set train.epochs=2, --set space.lr.loguniform=[0.001,0.1]. Exit status: 0, 1 if a "
               "trial errored, 2 for bad input. Example: finegym-ray tune --config configs/sweeps/tsm_rgb_gym99.yaml")
    p.add_argument("--config", metavar="YAML", help="sweep file (see below and configs/sweeps/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one sweep setting, train.KEY or space.KEY.KIND (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="two one-epoch trials of a tiny model on a tiny generated SynGym, in a temp folder")
    _add_lease_option(p, "SWEEPS/NAME")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "study", help="one of the paper's studies (frames, order, test_segments, motion): a sweep, then an "
                      "evaluation grid; resumes by name",
        description="Train the study's runs as one grid sweep (SWEEPS/NAME/trials/), evaluate each with the test "
                    "protocol and the study's test-time variants, print a table with 95 % bootstrap intervals over "
                    "the validation clips and write SWEEPS/NAME/study/ (study.parquet, study.csv, study.png). "
                    "frames: TSN with 1-12 segments (Table 5); order: TRN and TSN on ordered and shuffled test "
                    "frames (Fig. 6b); test_segments: TSM and TSN trained with 3 segments, tested with 3-12 "
                    "(Fig. 6c); motion: per-class accuracy of RGB and flow TSN (Fig. 6a). Running the same command "
                    "again resumes it.",
        epilog="Presets: finegym (configs/studies/NAME.yaml, give --data or --set train.data=), syngym "
               "(configs/studies/syngym/NAME.yaml: sized for 2 CPU cores; without --data it makes its SynGym store, "
               "settings in configs/studies/syngym/store.yaml, once for all four studies). --set takes the sweep "
               "file's keys as for 'finegym-ray tune'. Exit status: 0, 1 for a failed trial, 2 for bad input.")
    p.add_argument("name", metavar="NAME", help="frames, order, test_segments or motion")
    p.add_argument("--config", metavar="YAML", help="the study's sweep file (default: the preset's)")
    p.add_argument("--preset", choices=("finegym", "syngym"), default="finegym",
                   help="configs at FineGym scale (default) or sized for SynGym on 2 CPU cores")
    p.add_argument("--data", metavar="STORE", help="the preprocessed clips to train on (train.data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one sweep setting, train.KEY or space.KEY.KIND (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="one-epoch trials of a tiny model on a tiny generated SynGym, in a temp folder")
    _add_lease_option(p, "SWEEPS/NAME")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser(
        "localize", help="train a temporal detector on feature sequences with Ray Train, or evaluate it (mAP)",
        description="train: a 1-D detector (models/detector.py) on the feature sequences of extract-features "
                    "(FEATURES/<level>/) with their ground truth, on Ray Train; checkpoints to RUNS/NAME, and the "
                    "same command resumes. evaluate: detections on the validation videos, mAP at tIoU "
                    "0.50:0.05:0.95 in the paper's Table 4 layout, RUN/eval/ (metrics.json, detections.json, "
                    "timeline.png). --smoke-test: a tiny detector on generated toy features, in a temp folder.",
        epilog="settings (--set KEY=VALUE or --config YAML, see configs/localize/*.yaml and "
               "finegym_ray/localize/config.py): features, annotations, level=action|subaction, "
               "task=classes|class_agnostic, detector=pyramid, detector_kwargs, epochs, batch_size, lr, "
               "weight_decay, warmup_epochs, max_steps, val_fraction, score_threshold, sigma, max_detections, "
               "workers, cpus_per_worker, use_gpu, max_failures, runs, name. "
               "Example: finegym-ray localize train --config configs/localize/syngym_action.yaml")
    p.add_argument("action", choices=("train", "evaluate", "demo"),
                   help="train (or resume) the run, evaluate it, or demo: both levels on the main demo's SynGym "
                        "and run (after 'finegym-ray demo'; writes OUT/localize/)")
    p.add_argument("--out", metavar="DIR", help="demo: the main demo's folder (default ./finegym_demo)")
    p.add_argument("--level", choices=("action", "subaction"), help="demo: one level only (default both)")
    p.add_argument("--config", metavar="YAML", help="localize config file (configs/localize/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set epochs=5 (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="a few epochs of a tiny detector on toy feature sequences (evaluate: train, then evaluate)")
    _add_lease_option(p, "RUNS/NAME")
    p.add_argument("--address", help="Ray cluster to use (default: the job's cluster, else a new local Ray)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser(
        "submit", help="submit a stage (preprocess, ...) as a Ray job to a cluster",
        usage="finegym-ray submit STAGE [--address URL] [--config YAML] [--set K=V ...] [--wait] -- [STAGE OPTIONS]",
        description="Submit 'python jobs/STAGE.py ARGS' through Ray's Jobs API, with this checkout as the "
                    "working directory and the S3 endpoint/region (never credentials) in the job's environment. "
                    "Prints the job id; with --wait follows the logs and exits with the job's status.",
        epilog="example: finegym-ray submit preprocess --address http://127.0.0.1:8265 --wait -- "
               "--annotations s3://b/ann --videos s3://b/videos --out s3://b/clips")
    p.add_argument("stage", help="stage to run: a job entry point under jobs/ (preprocess, demo, ...)")
    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                   help="Ray dashboard / Jobs API address (default $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)")
    p.add_argument("--config", metavar="YAML", help="stage config file on this machine (sent as --set overrides)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one stage setting (repeatable)")
    p.add_argument("--wait", action="store_true", help="follow the job's logs and exit with its status")
    p.add_argument("--job-id", help="submission id (default: Ray picks one); a second submit with it is refused")
    p.add_argument("--token-file", metavar="PATH",
                   help="file holding the cluster's Ray auth token, sent only in the Jobs API's Authorization "
                        "header (default: Ray's own lookup when RAY_AUTH_MODE=token: $RAY_AUTH_TOKEN, "
                        "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); see cluster/README.md")
    _add_storage_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "manifest", help="join FineGym annotations, categories and splits into Parquet tables",
        description="Write events.parquet, subactions.parquet, categories.parquet, unmatched_keys.parquet "
                    "and summary.json under OUT, and print counts per event, set and split. Split keys "
                    "missing from the annotations are reported, with examples, not dropped silently.")
    p.add_argument("--annotations", required=True, metavar="JSON",
                   help="finegym_annotation_info_v1.0.json or v1.1.json (path or s3:// URI)")
    p.add_argument("--categories", required=True, nargs="+", metavar="TXT",
                   help="gym99/gym288/gym530_categories.txt; split labels index the subset named in the "
                        "split file name (gym99_...), else the first file given")
    p.add_argument("--sets", metavar="TXT", help="set_categories.txt (checks set ids; enables the set task)")
    p.add_argument("--splits", required=True, nargs="+", metavar="[SPLIT=]TXT",
                   help="split files; the split name (train/val/test) comes from the file name "
                        "unless given as train=PATH")
    p.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    _add_storage_options(p)
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser(
        "check", help="before preprocessing: is every annotated video there, readable and long enough (no Ray)",
        description="For every video the annotations name: whether its file is under --videos (<video_id>.mp4, "
                    ".mkv, .webm, .mov or .avi), whether it opens and decodes a frame near its start and near the "
                    "end of its last annotated event, whether it lasts as long as its annotations reach, its frame "
                    "rate and whether that varies (timestamps sampled at the start, middle and end). Prints the "
                    "problems and a summary, writes one CSV row per video. Decodes a few frames per video, "
                    "eight videos at a time: about a second per video or less.",
        epilog="Exit status: 0 when every annotated video can be cut, 1 when some cannot (missing, unreadable, "
               "too short, or a variable frame rate without --allow-vfr), 2 for bad input.")
    p.add_argument("--annotations", required=True, metavar="DIR_OR_JSON",
                   help="FineGym annotation folder or annotation JSON (path or s3:// URI)")
    p.add_argument("--videos", required=True, metavar="URI", help="folder of <video_id>.mp4 files, local or s3://")
    p.add_argument("--csv", default="finegym_video_check.csv", metavar="PATH",
                   help="where the per-video CSV goes, path or s3:// URI (default ./finegym_video_check.csv)")
    p.add_argument("--allow-vfr", action="store_true",
                   help="a variable frame rate is no problem (as for preprocessing with allow_vfr=true)")
    _add_storage_options(p)
    p.set_defaults(func=cmd_check)

    from .localize.score import FORMATS_HELP

    p = sub.add_parser(
        "score-detections", help="temporal detection mAP at tIoU 0.50:0.05:0.95 (ActivityNet's evaluation)",
        description="Score detections of any system (ActivityNet results JSON) against ground truth "
                    "(ActivityNet JSON, FineGym's annotation JSON or folder); prints the FineGym paper's "
                    "Table 4 layout and AP per class. Runs in this process (no Ray).",
        epilog=FORMATS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ground-truth", required=True, metavar="GT", help="ground truth file or FineGym folder "
                   "(path or s3:// URI)")
    p.add_argument("--detections", required=True, metavar="DET.json", help="ActivityNet results JSON (path or s3://)")
    p.add_argument("--level", choices=["action", "subaction"], default="action",
                   help="for FineGym ground truth: routines in videos (action, default) or sub-actions in routines")
    p.add_argument("--subset", help="ActivityNet ground truth: score only the videos of this subset, e.g. validation")
    p.add_argument("--class-agnostic", action="store_true", help="ignore every label: score the segments alone")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_storage_options(p)
    p.set_defaults(func=cmd_score_detections)

    p = sub.add_parser(
        "runs", help="list the training runs under a runs folder: model, epochs, best and last accuracy, state",
        description="One row per training run below URI (sweep trials included): model, input, task, epochs "
                    "done / planned, best (by mean class) and last validation mean class and top-1 accuracy, "
                    "and a state: finished, running, partial (stopped: the same command resumes it) or failed "
                    "(training raised, or its job is gone and left its lease). Reads no weights; no Ray.")
    p.add_argument("uri", nargs="?", default="./finegym_runs", metavar="URI",
                   help="runs folder (path or s3:// URI; default ./finegym_runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of the table")
    _add_storage_options(p)
    p.set_defaults(func=cmd_runs)
    for p in sub.choices.values():  # before or after the command; SUPPRESS keeps a leading one
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


VERBOSE_HELP = ("also print what Ray prints (its workers' lines, Ray Data's progress, warnings); by default "
                "those go to Ray's log files under its session folder (/tmp/ray/session_*/logs)")


def _progress(stage: str, unit: str) -> Callable[[int, int], None]:
    import time

    from .progress import rate_eta

    t0 = time.time()

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total or not sys.stdout.isatty() else "\r"
        print(f"[{stage}] {rate_eta(done, total, time.time() - t0, unit)}", end=end, flush=True)
    return report


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _raised_by_this_package(e: BaseException) -> bool:
    """True when the innermost frame of ``e`` is a ``raise`` statement in finegym_ray.

    That tells a deliberate refusal (``raise ValueError("x must be ...")``) from a
    ValueError that a library or a builtin raised under our code (a broadcast error, a
    bad ``int()``), which is a bug.
    """
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not os.path.abspath(filename).startswith(_PACKAGE_DIR):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def bad_input_message(e: BaseException) -> str | None:
    """The one-line message for an expected failure (bad input), or None for a bug."""
    from .storage import StorageError

    if isinstance(e, (FormatError, ConfigError, StorageError)):
        message = str(e)
    elif isinstance(e, FileNotFoundError):
        # storage's errors carry a reason ("No such bucket (at ENDPOINT)"); the OS's is implied.
        reason = e.strerror if e.strerror and e.strerror != os.strerror(e.errno or 0) else None
        message = f"not found: {e.filename}" + (f" ({reason})" if reason else "") if e.filename else f"not found: {e}"
    elif isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)):
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    elif isinstance(e, ValueError) and _raised_by_this_package(e):
        message = str(e)
    else:
        return None
    return " ".join(message.split())  # one line, whatever the message held (YAML errors span several)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" belongs to the submitted stage (argparse's subparsers cannot
    # hold a free-form tail).
    stage_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.stage_args = stage_args
    if args.verbose:
        from .ray_output import set_verbose

        set_verbose(True)
    if getattr(args, "s3_endpoint", None):
        from .storage import use_endpoint

        # Both variable names, so that a stale AWS_ENDPOINT_URL_S3 cannot win; init_ray
        # hands them to the Ray workers.
        use_endpoint(args.s3_endpoint)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.command not in RESUMABLE:
            raise
        print(f"finegym-ray: interrupted; run the same command again to resume the {args.command}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        message = bad_input_message(e)
        if message is None or os.environ.get("FINEGYM_RAY_DEBUG"):
            raise  # a bug: the traceback is what its report needs
        print(f"finegym-ray: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
