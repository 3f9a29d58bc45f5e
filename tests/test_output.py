"""What commands print: the project's own lines by default, Ray's with --verbose.

The commands' real output is checked where a test runs them already (no run of its own
here, to keep the suite's time): the demo in tests/test_demo.py, ``train`` in
tests/train/test_train.py (default and --verbose), evaluate's smoke training in
tests/jobs/test_jobs.py, ``submit --wait`` in tests/cluster/test_local_cluster.py. They
use the checks in tests/support/output.py."""

from __future__ import annotations

from finegym_ray import progress
from finegym_ray.cli import build_parser
from finegym_ray.runtime import output as ray_output


def test_only_the_project_lines_of_a_worker_batch_are_printed(capsys):
    ray_output.print_project_lines({"is_err": False, "pid": 7, "lines": [
        "", "Reporting training result 1: TrainingReport(...)", "[train] epoch 1/2: loss 1.000",
        "Checkpoint successfully created at: ...", "[dataset]: A new progress UI is available."]})
    ray_output.print_project_lines({"is_err": True, "pid": 7,
                                    "lines": ["tqdm is not installed.", "[train] warning: x"]})
    out, err = capsys.readouterr()
    assert out == "[train] epoch 1/2: loss 1.000\n" and err == "[train] warning: x\n"


def test_ray_cpp_log_lines_are_told_from_others():
    line = (b"[2026-12-04 18:32:44,859 E 24019 24019] core_worker.cc:2465: Actor with class name: 'MapWorker' "
            b"has constructor arguments in the object store")
    assert ray_output._CPP_LOG_LINE.match(line)
    assert not ray_output._CPP_LOG_LINE.match(line.replace(b" E ", b" F "))  # a fatal one still shows
    assert not ray_output._CPP_LOG_LINE.match(b"finegym-ray: error: not found: x")
    assert not ray_output._CPP_LOG_LINE.match(b"[train] epoch 1/2")


def test_a_job_log_loses_rays_lines_split_across_chunks_and_keeps_every_other_line_once(monkeypatch):
    monkeypatch.delenv(ray_output.VERBOSE_ENV, raising=False)
    log = ("2026-12-04 18:35:42,166\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
           "Running entrypoint for job raysubmit_x: python jobs/preprocess.py\n"
           "[preprocess] 1/2 units, 0.5 units/s, ETA 2 s (0 failed)\n"
           "2026-12-04 18:36:29,482\tERROR streaming_executor.py:371 -- a real error\n"
           "units: 2 done\nlast line without an end")
    shown = ray_output.JobLogFilter()
    printed = "".join(shown.feed(log[i:i + 7]) for i in range(0, len(log), 7)) + shown.close()
    assert printed == ("[preprocess] 1/2 units, 0.5 units/s, ETA 2 s (0 failed)\n"
                       "2026-12-04 18:36:29,482\tERROR streaming_executor.py:371 -- a real error\n"
                       "units: 2 done\nlast line without an end\n")
    monkeypatch.setenv(ray_output.VERBOSE_ENV, "1")
    everything = ray_output.JobLogFilter()
    assert everything.feed(log) + everything.close() == log + "\n"


def test_verbose_goes_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["--verbose", "train"]).verbose
    assert parser.parse_args(["train", "--verbose"]).verbose
    assert parser.parse_args(["demo", "--verbose"]).verbose
    assert not parser.parse_args(["train"]).verbose


def test_progress_lines_give_rate_and_eta():
    assert progress.rate_eta(120, 480, 30.0, "clips") == "120/480 clips, 4 clips/s, ETA 1 min 30 s"
    assert progress.rate_eta(0, 5, 1.0, "units") == "0/5 units"
    assert progress.rate_eta(5, 5, 10.0, "units") == "5/5 units, 0.5 units/s"
    assert progress.duration(7325) == "2 h 02 min"
    metrics = {"epoch": 1, "train_loss": 1.5, "train_samples": 40, "train_top1": 0.25, "train_mean_class": 0.2,
               "val_loss": 1.2, "val_top1": 0.5, "val_mean_class": 0.4, "data_wait_s": 0.5}
    line = progress.epoch_line(metrics, epochs=4, train_s=8.0, eta_s=20.0)
    assert line == ("epoch 2/4: loss 1.500; top1 25.0%, mean class 20.0%; val loss 1.200, val top1 50.0%, "
                    "val mean class 40.0%; 40 clips in 8.0 s (5 clips/s, input wait 0.5 s); run ETA 20 s")
    assert "ETA" not in progress.epoch_line({**metrics, "epoch": 3}, epochs=4, train_s=8.0, eta_s=0.0)


FATAL_BELOW_PYTHON = """
import os, sys
from finegym_ray.runtime import output
output._handler = output._SessionLog()
output._filter_fd2(sys.argv[1])
os.write(2, b"[2026-12-04 18:32:44,859 E 24019 24019] core_worker.cc:2465: Actor with class name: x\\n")
os.write(2, b"Intel oneMKL FATAL ERROR: Cannot load libmkl_avx2.so.2 or libmkl_def.so.2.")
os.write(2, b"\\n")
os._exit(2)  # as the C library does: no Python left to run
"""


def test_a_fatal_line_written_below_python_just_before_the_end_is_shown(tmp_path):
    """A library's last words on descriptor 2 (oneMKL's fatal error, then exit) reach
    the terminal although the process ends at once; Ray's C++ log lines go to the
    session log instead."""
    import subprocess
    import sys

    log = tmp_path / "driver.log"
    r = subprocess.run([sys.executable, "-c", FATAL_BELOW_PYTHON, str(log)], capture_output=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == b"Intel oneMKL FATAL ERROR: Cannot load libmkl_avx2.so.2 or libmkl_def.so.2.\n"
    assert b"core_worker.cc:2465" in log.read_bytes()
