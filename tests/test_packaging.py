"""What pip sees: the Python versions the package installs on, as the README states them."""

import re
import tomllib
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
