"""Checks of what commands print: the project's own lines by default, Ray's with --verbose."""

from __future__ import annotations

import re

# What Ray prints by default that the user saw, each a marker of one kind.
RAY_INTERNALS = ("(RayTrainWorker", "pid=", "Reporting training result", "Checkpoint successfully created",
                 "core_worker", "RayDeprecationWarning", "tqdm", "Token authentication", "Execution plan of Dataset",
                 "Running Dataset", "(TrainController", "UserWarning")


def assert_no_ray_internals(text: str) -> None:
    """``text`` (a command's stdout and stderr) holds none of Ray's internals."""
    found = [m for m in RAY_INTERNALS if m in text]
    lines = [line for line in text.splitlines() if any(m in line for m in found)]
    assert not found, f"Ray's internals in the output: {found}: {lines[:5]}"


def assert_some_ray_internals(text: str) -> None:
    """``text`` holds Ray's own lines (what --verbose brings back)."""
    assert any(m in text for m in RAY_INTERNALS), text[-3000:]


RATE = re.compile(r"\d[\d.]* (clips|units)/s")


def assert_progress_with_rate(text: str, stage: str) -> None:
    """A ``[stage]`` progress line with a rate (``N clips/s`` or ``N units/s``); with
    --verbose, Ray's ``(RayTrainWorker pid=...)`` tag may come before it."""
    assert any(f"[{stage}] " in line and RATE.search(line) for line in text.splitlines()), text[-3000:]
