"""The whole repository passes the linter (ruff, configured in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The ruff that the test extra installs, beside this interpreter (a venv's bin/ or Scripts/).
RUFF = Path(sys.executable).parent / ("ruff.exe" if sys.platform == "win32" else "ruff")


def test_ruff_check_passes_on_the_repository():
    assert RUFF.is_file(), (f"ruff is not installed beside {sys.executable}: "
                            "install the test extra (pip install -e '.[test]')")
    # --no-cache: nothing written into the checkout.
    result = subprocess.run([str(RUFF), "check", "--no-cache", str(ROOT)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"
