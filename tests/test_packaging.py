"""What pip sees: the Python versions the package installs on, as the README states them,
and the files it installs (the ready configs among them)."""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Ray 2.60 ships wheels for CPython 3.10 to 3.14 (none for 3.15); numpy, pyarrow, av,
# opencv, torch and decord (one py3-none wheel) resolve to wheels on 3.11 to 3.14.
SUPPORTED = ["3.11", "3.12", "3.13", "3.14"]


def test_requires_python_admits_every_version_the_dependencies_support():
    spec = SpecifierSet(PROJECT["requires-python"])
    for version in SUPPORTED:
        assert spec.contains(version), (version, str(spec))
    # Newer than Ray 2.60's wheels: a clear "requires a different Python" from pip
    # instead of a resolver failure on ray.
    assert not spec.contains("3.15")


def test_classifiers_list_the_same_versions():
    listed = sorted(c.rsplit(" :: ", 1)[1] for c in PROJECT.get("classifiers", [])
                    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert listed == SUPPORTED


def test_readme_states_the_range():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"On a fresh clone \(Linux, Python (3\.\d+) to (3\.\d+)", readme)
    assert m, "README: the fresh-clone sentence names the supported Python range"
    assert [m[1], m[2]] == [SUPPORTED[0], SUPPORTED[-1]]


# --- The ready configs ship as package data (finegym_ray/presets.py reads them). ---

def _build(tmp_path: Path) -> tuple[Path, Path]:
    """The sdist and the wheel that setuptools builds from a copy of the checkout (links
    kept as links, as git checks them out)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("finegym_ray", "configs"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
    dist = tmp_path / "dist"
    built = []
    for hook in ("build_sdist", "build_wheel"):  # one process each, as pip's build frontends do
        code = f"import sys; from setuptools import build_meta as b; print('built:', b.{hook}(sys.argv[1]))"
        r = subprocess.run([sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        built.append(dist / r.stdout.rsplit("built:", 1)[1].strip())
    return built[0], built[1]


def test_the_sdist_and_the_wheel_hold_every_config_and_the_installed_package_reads_them(tmp_path):
    configs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml"))
    assert "configs/tsm_flow_demo.yaml" in configs and "configs/localize/syngym_action.yaml" in configs
    assert (ROOT / "finegym_ray" / "configs").resolve() == (ROOT / "configs").resolve()
    sdist, wheel = _build(tmp_path)
    with tarfile.open(sdist) as tar:
        in_sdist = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
        z.extractall(tmp_path / "site")
    for kind, files in (("sdist", in_sdist), ("wheel", in_wheel)):
        missing = [c for c in configs if f"finegym_ray/{c}" not in files]
        assert not missing, f"{kind} lacks {missing}"
    # Installed (the wheel's files on the path, ahead of this checkout's editable install),
    # the package reads its presets from its own copy.
    code = ("from finegym_ray import presets; from finegym_ray.train.config import DEMO; "
            "print(presets.folder()); print(DEMO.model, DEMO.modality)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[:2] == [str((tmp_path / "site" / "finegym_ray" / "configs").resolve()), "tsm flow"]
