#!/usr/bin/env bash
# Unpack the device kit (benchmarks/device/build_kit.py) and run a named check with it.
#
#   bash benchmarks/device/run_on_device.sh [--stage] [COMMAND [ARGS...]]
#
# Run from anywhere; COMMAND runs in the repository root, e.g.
#   bash benchmarks/device/run_on_device.sh python3 benchmarks/gpu_check.py --quick
#
# 1. Unpacks each bundle found under benchmarks/device/kit/dist/*/ (carried by the
#    device tool) into $FINEGYM_KIT_HOME (default /tmp/finegym_kit, which lives as
#    long as the machine stays warm), one folder per bundle; a bundle already unpacked
#    there (same sha256) is not unpacked again. So the bundles can come over two
#    calls: the first carries one and runs `--stage`, the next carries the other.
# 2. Puts the repository and the bundles on PYTHONPATH (finegym_ray is not installed:
#    a small finegym_ray dist-info with its version and console script is written
#    beside the bundles, so importlib.metadata and entry points find it), and `ray`
#    and `finegym-ray` launchers on PATH, for $PYTHON (default python3: it must be
#    3.12, the kit's wheels are cp312).
# 3. Checks: import ray, av, pandas, pydantic, tensorboardX; every finegym_ray module
#    imports (boto3 and decord are absent, as on the device: nothing may need them at
#    import); prints what torch sees.
# 4. Runs COMMAND, if given, with that environment; its exit status is this script's.
#
# Environment: PYTHON, FINEGYM_KIT_HOME, FINEGYM_KIT_DIST (default
# benchmarks/device/kit/dist), FINEGYM_KIT_SKIP_CHECKS=1 (skip step 3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIST=${FINEGYM_KIT_DIST:-$ROOT/benchmarks/device/kit/dist}
KIT_HOME=${FINEGYM_KIT_HOME:-/tmp/finegym_kit}
PY=$(command -v "${PYTHON:-python3}") || { echo "run_on_device: no ${PYTHON:-python3}" >&2; exit 2; }
STAGE_ONLY=0
if [ "${1:-}" = "--stage" ]; then STAGE_ONLY=1; shift; fi

say() { printf '[kit %5.1fs] %s\n' "$(( $(date +%s%N) / 1000000 - T0_MS ))e-3" "$*"; }
T0_MS=$(( $(date +%s%N) / 1000000 ))

"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || {
    echo "run_on_device: $PY is Python $("$PY" -c 'import sys; print(sys.version.split()[0])'), the kit is for 3.12" >&2
    exit 2
}
mkdir -p "$KIT_HOME"

# 1. Unpack what came with this call.
shopt -s nullglob
for bundle in "$DIST"/*/*.tar.xz; do
    name=$(basename "$bundle" .tar.xz)
    sum=$(sha256sum "$bundle" | cut -d' ' -f1)
    if [ -f "$KIT_HOME/$name.sha256" ] && [ "$(cat "$KIT_HOME/$name.sha256")" = "$sum" ]; then
        say "$name: unpacked already ($KIT_HOME/$name)"
        continue
    fi
    rm -rf "$KIT_HOME/$name" "$KIT_HOME/$name.sha256"
    mkdir -p "$KIT_HOME/$name"
    xz -dc -T0 "$bundle" | tar -xf - -C "$KIT_HOME/$name"
    echo "$sum" > "$KIT_HOME/$name.sha256"
    say "$name: $(stat -L -c %s "$bundle") B unpacked to $KIT_HOME/$name ($(du -sm "$KIT_HOME/$name" | cut -f1) MB)"
done
missing=""
for name in deps ray; do
    [ -f "$KIT_HOME/$name.sha256" ] || missing="$missing $name"
done
if [ "$STAGE_ONLY" = 1 ]; then
    say "staged; still to come:${missing:- nothing}"
    exit 0
fi
if [ -n "$missing" ]; then
    echo "run_on_device: bundle(s)${missing} neither carried (benchmarks/device/kit/dist/<name>/) nor staged in" \
         "$KIT_HOME by an earlier --stage call on this machine; build them with benchmarks/device/build_kit.py" >&2
    exit 2
fi

# 2. The environment.
META="$KIT_HOME/meta"
BIN="$KIT_HOME/bin"
mkdir -p "$META" "$BIN"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)
rm -rf "$META"/finegym_ray-*.dist-info
DI="$META/finegym_ray-$VERSION.dist-info"
mkdir -p "$DI"
printf 'Metadata-Version: 2.1\nName: finegym-ray\nVersion: %s\nSummary: run from the source tree %s (benchmarks/device)\n' \
    "$VERSION" "$ROOT" > "$DI/METADATA"
printf '[console_scripts]\nfinegym-ray = finegym_ray.cli:main\n' > "$DI/entry_points.txt"
printf 'finegym_ray\n' > "$DI/top_level.txt"
printf '#!/bin/sh\nexec "%s" -c "import sys; from ray.scripts.scripts import main; sys.argv[0] = \\"ray\\"; sys.exit(main())" "$@"\n' \
    "$PY" > "$BIN/ray"
printf '#!/bin/sh\nexec "%s" -c "import sys; from finegym_ray.cli import main; sys.argv[0] = \\"finegym-ray\\"; sys.exit(main())" "$@"\n' \
    "$PY" > "$BIN/finegym-ray"
chmod +x "$BIN/ray" "$BIN/finegym-ray"
export PYTHONPATH="$ROOT:$META:$KIT_HOME/deps:$KIT_HOME/ray${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$BIN:$(dirname "$PY"):$PATH"
export RAY_USAGE_STATS_ENABLED=0  # no network there: don't try to report
export FINEGYM_KIT_HOME="$KIT_HOME"

# 3. Checks.
if [ "${FINEGYM_KIT_SKIP_CHECKS:-0}" != 1 ]; then
    cd "$ROOT"
    "$PY" - <<'EOF'
import importlib, importlib.metadata as md, importlib.util, pkgutil, sys, time
t = time.monotonic()
import av, pandas, pydantic, ray, tensorboardX  # noqa: F401
import torch
print(f"[kit] python {sys.version.split()[0]}; ray {ray.__version__}, av {av.__version__}, pandas {pandas.__version__}, "
      f"pydantic {pydantic.__version__}, tensorboardX {tensorboardX.__version__}; from the device: torch {torch.__version__} "
      f"(CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}), "
      f"numpy {md.version('numpy')}, pyarrow {md.version('pyarrow')}, opencv {md.version('opencv-python-headless')}")
import finegym_ray
assert md.version("finegym-ray"), "no finegym-ray metadata"
assert [e.value for e in md.entry_points(group="console_scripts", name="finegym-ray")] == ["finegym_ray.cli:main"]
for absent in ("boto3", "botocore", "decord"):
    if importlib.util.find_spec(absent) is not None:
        print(f"[kit] note: {absent} is importable here (the device has none)")
failed = []
names = [m.name for m in pkgutil.walk_packages(finegym_ray.__path__, "finegym_ray.")]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        failed.append(f"{name}: {type(e).__name__}: {e}")
leaked = sorted(m for m in ("boto3", "botocore", "decord") if m in sys.modules)
print(f"[kit] finegym-ray {md.version('finegym-ray')}: {len(names) - len(failed)}/{len(names)} modules import "
      f"({time.monotonic() - t:.1f} s)" + (f"; imported at module level: {leaked}" if leaked else ""))
if failed or leaked:
    print("\n".join(failed), file=sys.stderr)
    sys.exit(1)
EOF
    say "checks passed"
fi

# 4. The named check.
if [ $# -gt 0 ]; then
    cd "$ROOT"
    say "running: $*"
    set +e
    "$@"
    rc=$?
    set -e
    say "exit status $rc"
    exit $rc
fi
