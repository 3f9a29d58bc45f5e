"""Every command the README and docs show, run as written in a checkout after the demo.

    python benchmarks/walk_docs.py [--checkout DIR] [--timeout 1200]

In the checkout (default: this one; a fresh clone shows what a new user meets) it runs
``finegym-ray demo`` first when ``finegym_demo/store`` is not there, then each documented
command that can run on this machine, with the checkout's ``.venv/bin/finegym-ray``.
Commands that name an S3 bucket, a cluster, a value for the reader to fill in (``DIR``,
``RUNS/NAME``) or an input that is not in the checkout (real FineGym's files) are listed
with that reason instead. Commands that make runs (``train``, ``localize demo``,
``localize train``) go before those that read them; otherwise the docs' order. Optional
``[...]`` parts are run too, as a second command, and of a choice (``action|subaction``)
the first option.

Prints one line per command: exit code, seconds, the last line it printed; exits 1 when
a command that ran failed. tests/test_docs.py checks every documented command parses and
resolves its settings; this runs them, which takes about half an hour on 2 cores, too
long for CI.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.docs import documented_commands  # noqa: E402

# Flags whose value is an input that must already be there.
INPUTS = ("--annotations", "--videos", "--categories", "--run", "--fuse", "--config", "--data",
          "--ground-truth", "--detections", "--token-file")
# A value to fill in: an upper-case word as a whole argument or a path part (DIR, RUNS/NAME, DET.json).
PLACEHOLDER = re.compile(r"(?:^|[/=\s])([A-Z][A-Z_]*)(?=$|[/.:\s])")
# A command that makes what later ones read goes first.
MAKERS = (("demo",), ("train",), ("localize", "demo"), ("localize", "train"))


def why_not_here(argv: list[str], checkout: Path) -> str | None:
    """Why a documented command cannot run in this checkout on this machine, or None."""
    line = " ".join(argv)
    if "s3://" in line:
        return "names an S3 bucket"
    if argv[0] == "submit" or "--address" in argv:
        return "needs a Ray cluster (cluster/local.sh up)"
    if m := PLACEHOLDER.search(line):
        return f"has a value to fill in ({m.group(1)})"
    for flag, value in zip(argv, argv[1:]):
        if flag in INPUTS and not (checkout / os.path.expanduser(value)).exists():
            return f"its input {value} is not here"
    return None


def rank(argv: list[str]) -> int:
    for n, prefix in enumerate(MAKERS):
        if tuple(argv[:len(prefix)]) == prefix:
            return n
    return len(MAKERS)


def walk_list(checkout: Path) -> list[tuple[str, list[str]]]:
    """The documented commands once each, optional parts as a second command, makers first."""
    seen, commands = set(), []
    for listing in (documented_commands(checkout), documented_commands(checkout, optional=True)):
        for where, argv in listing:
            if tuple(argv) not in seen:
                seen.add(tuple(argv))
                # A choice (``--level action|subaction``): its first option.
                commands.append((where.split(":")[0], [a.split("|")[0] if "|" in a[1:] else a for a in argv]))
    commands.append(("README.md (the demo's last line)", ["runs"]))
    return sorted(commands, key=lambda c: rank(c[1]))


def run(command: list[str], checkout: Path, timeout: float) -> tuple[int, float, str]:
    """(exit code, seconds, the last line printed); 124 when it ran past ``timeout`` seconds."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=timeout)
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, e.stdout or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
    lines = [line for line in out.splitlines() if line.strip()]
    return code, time.monotonic() - t0, lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the clone to run in, with its .venv (default: this one)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per command (default 1200)")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    cli = checkout / ".venv" / "bin" / "finegym-ray"
    tool = [str(cli)] if cli.exists() else [sys.executable, "-m", "finegym_ray.cli"]
    commands = walk_list(checkout)
    if not (checkout / "finegym_demo" / "store").exists() and ["demo"] not in [a for _, a in commands]:
        commands.insert(0, ("(the demo, first)", ["demo"]))
    print(f"{len(commands)} documented commands, in {checkout}", flush=True)
    ran = failed = 0
    for where, argv in commands:
        shown = "finegym-ray " + " ".join(argv)
        reason = why_not_here(argv, checkout)
        if reason:
            print(f"  not run  {shown}  ({where}: {reason})", flush=True)
            continue
        code, seconds, last = run([*tool, *argv], checkout, args.timeout)
        ran += 1
        failed += code != 0
        print(f"  exit {code:<3} {seconds:6.1f} s  {shown}  ({where})\n           {last[:160]}", flush=True)
    print(f"{ran} ran, {failed} failed, {len(commands) - ran} not runnable here")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
