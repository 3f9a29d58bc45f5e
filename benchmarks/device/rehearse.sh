#!/usr/bin/env bash
# Rehearse the device kit here, on the CPU, as the GPU machine will see it.
#
#   bash benchmarks/device/rehearse.sh [--two-calls] [--no-tune]
#
# 1. Builds the bundles (benchmarks/device/build_kit.py) unless kit/dist has them.
# 2. Makes (once; kept in benchmarks/device/kit/rehearse-venv) a clean Python 3.12 venv
#    with only what the device has: torch at .ci/run's pin, numpy,
#    opencv-python-headless, pyarrow, pyyaml. torch is PyPI's CUDA build, as on the
#    device (it runs on the CPU when no GPU is there; PyPI has no CPU build for 3.12
#    and this machine's mirror only a 3.11 one): installed without its pinned
#    dependencies, with the CUDA libraries it loads, in the versions the registry has.
# 3. Cuts the network (a new network namespace with only loopback, and a PID namespace:
#    `unshare -n -p`, with -r when not root), checks that no package index is reachable, and runs
#    there run_on_device.sh (unpacking into a fresh temporary folder) with
#      - the GPU suite's CPU dry run: benchmarks/gpu_check.py --device cpu --quick
#        --only env,models,detector;
#      - benchmarks/device/smoke_ray.py: Ray started from the kit, Ray Data, the State
#        API, a TorchTrainer step, a 2-trial ASHA sweep (--no-tune skips it).
#    --two-calls stages the bundles as two device calls would: `--stage` with only the
#    deps bundle, then the run with only the ray bundle.
# HOME, TMPDIR and RAY_TMPDIR point into the temporary folder, so nothing of a Ray run
# elsewhere on this machine (/tmp/ray, ~/.ray) is touched. Prints each phase's time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT="$ROOT/benchmarks/device/kit"
VENV=${FINEGYM_REHEARSE_VENV:-$KIT/rehearse-venv}
TWO_CALLS=0
SMOKE_ARGS=()
for a in "$@"; do
    case "$a" in
        --two-calls) TWO_CALLS=1 ;;
        --no-tune) SMOKE_ARGS+=(--no-tune) ;;
        *) echo "usage: $0 [--two-calls] [--no-tune]" >&2; exit 2 ;;
    esac
done
T0=$(date +%s)
phase() { echo "[rehearse $(( $(date +%s) - T0 ))s] $*"; }

# 1. The bundles.
if ! ls "$KIT"/dist/deps/deps.tar.xz "$KIT"/dist/ray/ray.tar.xz >/dev/null 2>&1; then
    BUILD_PY=python3
    [ -x "$ROOT/.venv/bin/python" ] && BUILD_PY="$ROOT/.venv/bin/python"
    phase "building the kit"
    nice -n 19 "$BUILD_PY" "$ROOT/benchmarks/device/build_kit.py"
fi
cat "$KIT/dist/SIZES.txt" 2>/dev/null || true

# 2. The device's Python, with the device's packages only.
if [ ! -f "$VENV/.ready" ]; then
    if [ -z "${PY312:-}" ]; then  # the first that runs: a pyenv shim on PATH may not
        for c in python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
            if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then PY312=$c; break; fi
        done
    fi
    [ -n "${PY312:-}" ] || { echo "rehearse: needs a Python 3.12 (set PY312=/path/to/python3.12)" >&2; exit 2; }
    TORCH_PIN=$(grep -o 'torch==[0-9][0-9.]*' "$ROOT/.ci/run" | head -1)
    phase "making $VENV: $PY312, $TORCH_PIN (CUDA build) and the device's other packages"
    rm -rf "$VENV"
    "$PY312" -m venv "$VENV"
    PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile)
    nice -n 19 "${PIP[@]}" --no-deps --only-binary=:all: "$TORCH_PIN"
    # torch's own requirements, without the CUDA ones (pinned to exact builds that the
    # registry may lack), then the CUDA libraries by name, in whatever version is there:
    # importing torch needs their sonames, not their exact builds.
    read -r -a PLAIN < <("$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, re
out = []
for r in md.requires("torch") or []:
    if "extra ==" in r:
        continue
    name = re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]
    if not name.startswith(("nvidia-", "cuda-", "triton")):
        out.append(r.split(";")[0].strip())
print(" ".join(out))
EOF
)
    nice -n 19 "${PIP[@]}" "${PLAIN[@]}" numpy opencv-python-headless pyarrow pyyaml
    if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
        CUDA_LIBS=$(cd "$VENV" && "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, re, subprocess, sys, tempfile, zipfile, pathlib
names, toolkit = [], None
for r in md.requires("torch") or []:
    if "extra ==" in r:
        continue
    m = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]*)\])?\s*(==\s*([^;\s]+))?", r)
    name = m.group(1)
    if name.startswith("nvidia-"):
        names.append(name)
    elif name == "cuda-toolkit":
        toolkit = (m.group(3) or "").split(","), m.group(5)
if toolkit:  # cuda-toolkit[cublas,cudart,...]==X: its extras name the nvidia-* packages
    extras, version = toolkit
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", d,
                        f"cuda-toolkit=={version}" if version else "cuda-toolkit"], check=True)
        whl = next(pathlib.Path(d).glob("*.whl"))
        meta = next(n for n in zipfile.ZipFile(whl).namelist() if n.endswith(".dist-info/METADATA"))
        for line in zipfile.ZipFile(whl).read(meta).decode().splitlines():
            m = re.match(r"Requires-Dist: ([A-Za-z0-9_.-]+).*extra == [\"']([^\"']+)[\"']", line)
            if m and m.group(2).strip() in [e.strip() for e in extras]:
                names.append(m.group(1))
print(" ".join(sorted(set(names))))
EOF
)
        phase "CUDA libraries for torch's import: $CUDA_LIBS"
        # shellcheck disable=SC2086
        nice -n 19 "${PIP[@]}" --no-deps $CUDA_LIBS
    fi
    "$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())'
    touch "$VENV/.ready"
fi
phase "venv: $("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -ciE '^(torch|numpy|opencv-python-headless|pyarrow|pyyaml)==') of the device's 5 packages; no ray/av/pandas: $("$VENV/bin/python" -c '
import importlib.util as u; print(all(u.find_spec(m) is None for m in ("ray", "av", "pandas", "pydantic", "boto3")))')"

# 3. The run, with the network cut.
WORK=$(mktemp -d /tmp/fgkit.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/home" "$WORK/tmp" "$WORK/ray"
if [ "$TWO_CALLS" = 1 ]; then
    mkdir -p "$WORK/call1/deps" "$WORK/call2/ray"
    ln -s "$KIT/dist/deps/deps.tar.xz" "$WORK/call1/deps/"
    ln -s "$KIT/dist/ray/ray.tar.xz" "$WORK/call2/ray/"
fi
# A new network namespace (only loopback) and PID namespace (Ray's State API looks for
# Ray processes on the host: other Rays running here must not be seen, as on the device).
if [ "$(id -u)" = 0 ]; then NETNS=(unshare -n -p -f --mount-proc); else NETNS=(unshare -r -n -p -f --mount-proc); fi
phase "cutting the network (${NETNS[*]}) and running the kit"
"${NETNS[@]}" env -i PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" HOME="$WORK/home" TMPDIR="$WORK/tmp" RAY_TMPDIR="$WORK/ray" \
    LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHON="$VENV/bin/python" FINEGYM_KIT_HOME="$WORK/kit" \
    PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null TWO_CALLS="$TWO_CALLS" WORK="$WORK" ROOT="$ROOT" \
    SMOKE_ARGS="${SMOKE_ARGS[*]}" bash -c '
set -euo pipefail
ip link set lo up 2>/dev/null || true
"$PYTHON" - <<EOF
import socket
for host in ("pypi.org", "files.pythonhosted.org", "1.1.1.1"):
    try:
        socket.create_connection((host, 443), timeout=3).close()
        raise SystemExit(f"rehearse: {host} is reachable: the network is not cut")
    except OSError as e:
        pass
print("[rehearse] network cut: no package index reachable")
EOF
RUN="$ROOT/benchmarks/device/run_on_device.sh"
if [ "$TWO_CALLS" = 1 ]; then
    FINEGYM_KIT_DIST="$WORK/call1" bash "$RUN" --stage
    export FINEGYM_KIT_DIST="$WORK/call2"
fi
t=$(date +%s)
bash "$RUN" bash -c "
    ray --version && finegym-ray --help >/dev/null && echo \"[rehearse] launchers: ray, finegym-ray run\" &&
    python3 benchmarks/gpu_check.py --device cpu --quick --only env,models,detector --out \"$WORK/gpu_check\" &&
    python3 benchmarks/device/smoke_ray.py --cpus 2 $SMOKE_ARGS"
echo "[rehearse] kit run: $(( $(date +%s) - t )) s"
'
phase "passed"
