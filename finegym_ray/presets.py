"""The ready configs (``configs/**/*.yaml``): the one copy of every preset kept in a file,
read here by the code that uses them (the demo's training run, the localization demo, the
studies' presets).

They ship as package data: the wheel holds them in ``finegym_ray/configs/``, which in a
checkout is a link to the top-level ``configs/`` (the path the docs, the Dockerfile and
``finegym-ray submit`` use). A job's uploaded working directory holds no links (submit.py's
``upload_files``): there they are the ``configs/`` beside the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from .config import load_config

T = TypeVar("T")

_PACKAGE = Path(__file__).resolve().parent


def folder() -> Path:
    """The configs folder (resolved: in a checkout, the top-level ``configs/``)."""
    packaged = _PACKAGE / "configs"
    if packaged.is_dir():
        return packaged.resolve()
    beside = _PACKAGE.parent / "configs"
    if beside.is_dir() and (_PACKAGE.parent / "pyproject.toml").is_file():  # an uploaded checkout
        return beside
    raise FileNotFoundError(f"{packaged}: the package's configs are missing (a broken install?)")


def path(name: str) -> Path:
    """The preset file ``name``, relative to the configs folder (``localize/syngym_action.yaml``)."""
    return folder() / name


def load(cls: type[T], name: str, overrides: list[str] | None = None) -> T:
    """``cls`` loaded from the preset file ``name`` (then ``overrides``)."""
    return load_config(cls, path(name), overrides)
