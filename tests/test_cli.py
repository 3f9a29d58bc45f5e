"""The CLI as a user runs it: real processes, exit codes, messages."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DATA = Path(__file__).parent / "dataset" / "data"


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def manifest_args(out, split=DATA / "gym4_train_element.txt"):
    return ["manifest", "--annotations", DATA / "annotations.json", "--categories", DATA / "gym4_categories.txt",
            "--sets", DATA / "set_categories.txt", "--splits", split, DATA / "gym4_val_element.txt", "--out", out]


def test_manifest_command(tmp_path):
    r = cli(*manifest_args(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert "sub-actions 4 (4 labelled)" in r.stdout
    assert "3 split keys do not match" in r.stdout
    assert "per split: train 2, val 2" in r.stdout
    assert str(tmp_path / "m" / "subactions.parquet") in r.stdout
    assert pq.read_table(tmp_path / "m" / "events.parquet").num_rows == 4


@pytest.mark.parametrize("content, expect", [
    ("A0xAXXysHUo_E_002184_002237_A_0035_0036 99\n", "gym4_train_element.txt:1: label 99 out of range"),
    ("A0xAXXysHUo_E_002184_002237_A_0035_0036 1\nnot-a-key 1\n",
     "gym4_train_element.txt:2: not a FineGym instance key"),
])
def test_bad_split_exits_2_with_one_line(tmp_path, content, expect):
    bad = tmp_path / "gym4_train_element.txt"
    bad.write_text(content)
    r = cli(*manifest_args(tmp_path / "m", split=bad))
    assert r.returncode == 2
    assert expect in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "ann.json"
    bad.write_text('{"v": {\n"E_000001_000002": [}}')
    args = manifest_args(tmp_path / "m")
    args[2] = bad
    r = cli(*args)
    assert r.returncode == 2 and f"{bad}:2: malformed JSON" in r.stderr and "Traceback" not in r.stderr
    args[2] = tmp_path / "nope.json"
    r = cli(*args)
    assert r.returncode == 2 and "nope.json" in r.stderr and "Traceback" not in r.stderr


def test_help_explains_every_command():
    r = cli("--help")
    assert r.returncode == 0
    for name, option in (("demo", "--out"), ("synth", "--out"), ("manifest", "--out"), ("preprocess", "--out"),
                         ("train", "--runs"), ("evaluate", "--fuse"), ("submit", "--wait")):
        assert name in r.stdout
        sub = cli(name, "--help")
        assert sub.returncode == 0 and option in sub.stdout


def test_bad_training_settings_exit_2_naming_the_field(tmp_path):
    r = cli("train", "--data", tmp_path, "--set", "model=resnet")
    assert r.returncode == 2 and "model must be one of" in r.stderr and "Traceback" not in r.stderr
    r = cli("evaluate", "--run", tmp_path / "nothing")
    assert r.returncode == 2 and "no such run" in r.stderr


def test_bad_override_exits_2(tmp_path):
    r = cli("synth", "--out", tmp_path, "--set", "vidoes=3")
    assert r.returncode == 2 and "unknown key 'vidoes'" in r.stderr


# ---------------------------------------------------------------- issue 15, item 11

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

from finegym_ray import cli as cli_module  # noqa: E402
from finegym_ray.cli import manifest as manifest_command  # noqa: E402
from finegym_ray.cli.preprocess import preprocess_outputs  # noqa: E402


def cli_env(*args, env):
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def one_error_line(r, *needles, progress=None):
    """Exit 2 and a single ``finegym-ray: error:`` line holding every needle, no traceback.

    progress: a regex that the other stderr lines (e.g. storage's retry log) must match.
    """
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("finegym-ray: error: "), r.stderr[-3000:]
    assert all(progress and re.search(progress, line) for line in lines[:-1]), r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def no_aws_env(tmp_path, **extra):
    """The environment without any AWS credentials, profile or instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
               AWS_CONFIG_FILE=str(tmp_path / "no-config"), AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


@pytest.mark.parametrize("command", [["train"], ["synth", "--out", "OUT"], ["preprocess", "--smoke-test"]])
def test_a_folder_as_config_exits_2_naming_it(tmp_path, command):
    folder = tmp_path / "configs"
    folder.mkdir()
    r = cli(*[str(tmp_path / "o") if a == "OUT" else a for a in command], "--config", folder)
    one_error_line(r, str(folder))


def test_refused_credentials_exit_2_naming_the_uri(tmp_path):
    t0 = time.monotonic()
    r = cli_env("preprocess", "--annotations", "s3://bucket/ann/finegym_annotation_info_v1.1.json",
                "--videos", "s3://bucket/videos", "--out", tmp_path / "out", "--s3-endpoint", "http://127.0.0.1:1",
                env=no_aws_env(tmp_path))
    # The videos are listed first: "no video at all" is refused before Ray starts.
    one_error_line(r, "s3://bucket/videos", "credentials")
    assert time.monotonic() - t0 < 20


def test_a_dead_endpoint_exits_2_naming_the_uri_and_endpoint(tmp_path):
    t0 = time.monotonic()
    r = cli_env("preprocess", "--annotations", "s3://bucket/ann", "--videos", "s3://bucket/videos",
                "--out", tmp_path / "out", "--s3-endpoint", "http://127.0.0.1:1",
                env=no_aws_env(tmp_path, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                               FINEGYM_RAY_S3_RETRY_S="3"))  # the default, 30 s, rides out a server restart
    one_error_line(r, "s3://bucket/videos", "127.0.0.1:1",
                   progress=r"^ListObjectsV2 s3://bucket/videos failed .* retry \d+ in .*budget 3 s")
    assert time.monotonic() - t0 < 20


def test_a_video_id_that_is_a_path_exits_2_naming_file_and_key(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"../../escaped/evil": {"E_000010_000020": {
        "event": 5, "timestamps": [[10.0, 20.0]], "segments": None}}}))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "other.mp4").write_bytes(b"")  # a folder without any video is refused first
    r = cli("preprocess", "--annotations", ann, "--videos", tmp_path / "videos", "--out", tmp_path / "out")
    one_error_line(r, str(ann), "'../../escaped/evil'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.json", "videos"]


@pytest.mark.parametrize("override, field", [("lr=.nan", "lr"), ("dropout=-3", "dropout"), ("depth=-5", "depth"),
                                             ("base_width=0", "base_width")])
def test_out_of_range_training_settings_exit_2(tmp_path, override, field):
    one_error_line(cli("train", "--data", tmp_path, "--set", override), field)


def test_out_of_range_preprocess_settings_exit_2(tmp_path):
    for override, field in (("flow_bound=.inf", "flow_bound"), ("cache_gb=-1", "cache_gb"),
                            ("flow.options.warps=3", "warps")):  # dis has no option warps
        one_error_line(cli("preprocess", "--smoke-test", "--set", override), field)


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """A ValueError from inside a library (here numpy) is an internal error, not bad input."""
    import numpy as np

    def buggy(args):
        return np.zeros(2) + np.zeros(3)  # ValueError: operands could not be broadcast

    monkeypatch.setattr(manifest_command, "run", buggy)
    with pytest.raises(ValueError, match="broadcast"):
        cli_module.main(["manifest", "--annotations", "a.json", "--categories", "c.txt", "--splits", "s.txt",
                         "--out", str(tmp_path)])
    monkeypatch.setattr(manifest_command, "run", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        cli_module.main(["manifest", "--annotations", "a.json", "--categories", "c.txt", "--splits", "s.txt",
                         "--out", str(tmp_path)])


def test_messages_with_several_lines_become_one(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("lr: [1\n")  # PyYAML's message spans several lines
    assert cli_module.main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err and "not valid YAML" in err


@pytest.mark.parametrize("option", ["--workers", "--cpus-per-worker"])
def test_evaluate_counts_below_one_exit_2_naming_the_option(tmp_path, option):
    one_error_line(cli("evaluate", "--run", tmp_path, option, "0"), option)


# --- Issue 20: refusals before Ray starts, help and output slips. ---

# Runs the CLI in a real process whose init_ray refuses to run: a refusal that must come
# before Ray starts fails the test loudly instead of starting a cluster.
NO_RAY = ("import sys, finegym_ray.cli as c, finegym_ray.runtime.connect as r\n"
          "def no_ray(*a, **k):\n"
          "    print('RAY WOULD START', file=sys.stderr); sys.exit(99)\n"
          "r.init_ray = no_ray\n"
          "sys.exit(c.main(sys.argv[1:]))\n")


def cli_no_ray(*args):
    import time

    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", NO_RAY, *map(str, args)], capture_output=True, text=True, timeout=120)
    r.seconds = time.monotonic() - t0
    return r


def _store_without_flow(tmp_path, flow) -> Path:
    import json

    store = tmp_path / "store"
    store.mkdir()
    settings = {"short_side": 64, "flow": flow, "events": False, "subactions": True}
    (store / "preprocess.json").write_text(json.dumps({"hash": "0123456789ab", "settings": settings}))
    return store


def test_flow_model_on_clips_without_flow_is_refused_before_ray(tmp_path):
    store = _store_without_flow(tmp_path, {"method": "none"})
    r = cli_no_ray("train", "--data", store, "--runs", tmp_path / "runs", "--set", "modality=flow")
    one_error_line(r, str(store), "flow=none", "modality=rgb")
    assert not (tmp_path / "runs").exists()


def test_clips_whose_flow_is_recorded_as_a_bare_name_are_refused_before_ray(tmp_path):
    store = _store_without_flow(tmp_path, "none")  # as another version recorded it
    r = cli_no_ray("train", "--data", store, "--runs", tmp_path / "runs", "--set", "modality=flow")
    one_error_line(r, str(store / "preprocess.json"), "flow is 'none'", "preprocess again")
    assert not (tmp_path / "runs").exists()


def test_evaluate_of_a_flow_run_on_clips_without_flow_is_refused_before_ray(tmp_path):
    from tests.train.test_evaluate import write_run

    store = _store_without_flow(tmp_path, {"method": "none"})
    run = write_run(tmp_path / "runs", "tsn", data=str(store), modality="flow")
    r = cli_no_ray("evaluate", "--run", run)
    one_error_line(r, str(store), "flow=none")
    assert not (Path(run) / "eval").exists()


def test_evaluate_of_a_missing_run_is_refused_before_ray(tmp_path):
    r = cli_no_ray("evaluate", "--run", tmp_path / "nothing")
    one_error_line(r, str(tmp_path / "nothing"))


@pytest.mark.parametrize("content", [None, "notes.txt"])  # no such folder; a folder without videos
def test_preprocess_without_any_video_is_refused_before_ray(tmp_path, content):
    videos = tmp_path / "videos"
    if content:
        videos.mkdir()
        (videos / content).write_text("x")
    r = cli_no_ray("preprocess", "--annotations", DATA / "annotations.json", "--videos", videos,
                   "--out", tmp_path / "out")
    one_error_line(r, str(videos), ".mp4", ".mkv")
    assert not (tmp_path / "out").exists()


def test_a_folder_with_some_videos_passes_the_video_check(tmp_path):
    from finegym_ray.video.files import require_videos

    (tmp_path / "a.mp4").write_bytes(b"")
    assert require_videos(str(tmp_path)) == {"a": str(tmp_path / "a.mp4")}


def _subparsers():
    import argparse

    parser = cli_module.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_no_help_text_shows_a_formatting_escape():
    # argparse %-formats argument help but prints a description or epilog as written.
    import argparse

    def parsers(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from parsers(sub, f"{path} {name}")

    found = [(path, p) for path, p in parsers(cli_module.build_parser(), "finegym-ray")]
    assert len(found) >= 15  # every command and the localize subcommands
    for path, parser in found:
        text = parser.format_help()
        assert "%%" not in text and "%(" not in text, path


def test_every_set_example_in_the_help_is_a_valid_setting():
    from finegym_ray.config import load_config
    from finegym_ray.localize.config import ExtractConfig, LocalizeConfig
    from finegym_ray.pose.config import PoseConfig
    from finegym_ray.preprocess.config import PreprocessConfig
    from finegym_ray.synth.config import SynthConfig
    from finegym_ray.train.config import TrainConfig
    from finegym_ray.tune.config import load_sweep

    def sweep(item):
        return load_sweep(None, [item, "name=x"] if not item.startswith("train.data") else [item + "d", "name=x"])

    check = {"synth": lambda o: load_config(SynthConfig, overrides=[o]),
             "demo": lambda o: load_config(SynthConfig, overrides=[o]),
             "preprocess": lambda o: load_config(PreprocessConfig, overrides=[o]),
             "train": lambda o: load_config(TrainConfig, overrides=[o]),
             "train-poses": lambda o: load_config(PoseConfig, overrides=[o]),
             "tune": sweep, "study": sweep,
             "localize": lambda o: load_config(LocalizeConfig, overrides=[o]),
             "extract-features": lambda o: load_config(ExtractConfig, overrides=[o])}
    seen = 0
    for name, parser in _subparsers().items():
        text = " ".join(parser.format_help().split())
        for item in re.findall(r"--(?:train-)?set ([a-z_][a-z_0-9.]*=\S*)", text):
            item = item.rstrip(",.;):")
            if re.fullmatch(r"[A-Z_]+", item.split("=", 1)[1]):
                continue  # a placeholder (--set flow=NAME), not an example
            if name == "demo" and "--train-set" in text and item.split("=")[0] in TrainConfig.__dataclass_fields__:
                load_config(TrainConfig, overrides=[item])
            else:
                check[name](item)  # raises ConfigError for an unknown key or bad value
            seen += 1
        for item in re.findall(r"--train-set \S+ .*?e\.g\. ([a-z_]+=\S+)", text):
            load_config(TrainConfig, overrides=[item.rstrip(",.;)")])
    assert seen >= 8


@pytest.mark.parametrize("command", ["train", "train-poses"])
def test_train_help_lists_every_setting_with_its_default(command):
    from dataclasses import MISSING, fields

    from finegym_ray.pose.config import PoseConfig
    from finegym_ray.train.config import TrainConfig

    text = " ".join(_subparsers()[command].format_help().split())
    for f in fields({"train": TrainConfig, "train-poses": PoseConfig}[command]):
        default = f.default if f.default is not MISSING else f.default_factory()
        assert f"{f.name}=" in text, f.name
        if isinstance(default, (int, float, str)) and default != "" and not isinstance(default, bool):
            assert f"{f.name}={default}" in text, (f.name, default)


def test_errors_folder_is_printed_only_when_it_exists(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert "errors:" not in preprocess_outputs(str(out))
    (out / "errors").mkdir()
    (out / "errors" / "u.json").write_text("{}")
    assert f"errors:  {out}/errors/" in preprocess_outputs(str(out))


@pytest.mark.parametrize("command", ["train", "train_poses", "tune", "preprocess"])
def test_ctrl_c_says_the_same_command_resumes(monkeypatch, capsys, command):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"finegym_ray.cli.{command}"), "run", interrupted)
    assert cli_module.main([command.replace("_", "-")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "same command" in err[0], err


# --- Issue 28: run names, Ctrl-C during training. ---

@pytest.mark.parametrize("name", ["../../x", "a/b", ".."])
def test_a_run_name_that_is_a_path_exits_2_and_writes_nothing(tmp_path, name):
    store = _store_without_flow(tmp_path, {"method": "none"})
    before = sorted(tmp_path.rglob("*"))
    r = cli_no_ray("train", "--data", store, "--runs", tmp_path / "work" / "runs", "--name", name)
    one_error_line(r, "name", repr(name))
    assert sorted(tmp_path.rglob("*")) == before  # neither --runs nor anything beside it


def test_version_prints_the_packages_version_without_ray():
    from importlib.metadata import version

    r = cli_no_ray("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"finegym-ray {version('finegym-ray')}"


def test_runs_json_help_says_what_it_prints():
    r = cli_no_ray("runs", "--help")
    assert r.returncode == 0
    assert "one JSON array" in " ".join(r.stdout.split())  # what `runs --json` prints: json.loads gives a list


def test_manifest_takes_an_annotation_folder_as_check_and_preprocess_do(tiny_gym, tmp_path):
    r = cli_no_ray("manifest", "--annotations", tiny_gym / "annotations", "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "m" / "subactions.parquet").num_rows > 0
    assert "per split" in r.stdout  # the folder's split files were read
    # A JSON file still needs its categories and splits named.
    r = cli_no_ray("manifest", "--annotations", DATA / "annotations.json", "--out", tmp_path / "m2")
    assert r.returncode == 2 and "--categories" in r.stderr.strip().splitlines()[-1], r.stderr
    assert not (tmp_path / "m2").exists()


def test_a_smoke_tests_temp_data_is_removed_when_the_command_ends(tmp_path):
    import os

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", "from finegym_ray.cli import smoke; print(smoke.syngym())"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made = Path(r.stdout.splitlines()[0])
    assert made.parent == tmp_path
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the temp folder
    assert r.stdout.splitlines()[-1] == f"[smoke] removed its temp folder {made}"


def test_train_on_a_folder_that_is_not_a_store_is_refused_before_ray(tmp_path):
    (tmp_path / "videos").mkdir()
    r = cli_no_ray("train", "--data", tmp_path / "videos", "--runs", tmp_path / "runs")
    one_error_line(r, str(tmp_path / "videos"), "not a preprocessed store")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command, setting, key", [
    (["train"], "epochs=7", ("epochs",)),
    (["preprocess"], "short_side=96", ("short_side",)),
    (["tune", "--smoke-test"], "train.epochs=7", ("train", "epochs")),
    (["study", "frames"], "train.epochs=7", ("train", "epochs")),
])
def test_print_config_prints_every_resolved_setting_without_ray(command, setting, key):
    import yaml

    r = cli_no_ray(*command, "--set", setting, "--print-config")
    assert r.returncode == 0, r.stderr
    node = yaml.safe_load(r.stdout)
    for k in key:
        node = node[k]
    assert str(node) == setting.split("=")[1]


def test_a_sweep_with_seeds_is_refused_before_ray(tmp_path):
    r = cli_no_ray("tune", "--smoke-test", "--set", "seeds=2")
    one_error_line(r, "seeds 2", "finegym-ray study --seeds N", "space.seed.grid")


@pytest.mark.parametrize("command", [["train"], ["tune"], ["study", "frames"]])
def test_a_smoke_test_with_bninception_leaves_out_the_presets_resnet_size(command):
    train = "train." * (command[0] != "train")
    r = cli_no_ray(*command, "--smoke-test", "--set", f"{train}model=tsn", "--set", f"{train}backbone=bninception",
                   "--print-config")
    assert r.returncode == 0, r.stderr
    assert "backbone: bninception" in r.stdout and "depth: 50\n" in r.stdout and "base_width: 64\n" in r.stdout
