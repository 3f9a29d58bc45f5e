"""Build the device kit: what the lent GPU machine lacks for its Python 3.12, as xz bundles.

    python benchmarks/device/build_kit.py            # -> benchmarks/device/kit/dist/{deps,ray}/*.tar.xz
    python benchmarks/device/build_kit.py --fast     # xz -6 instead of -9e (for trying changes)

The GPU machine (see README.md beside this file) has Python 3.12 with torch (CUDA),
numpy, opencv-python-headless, pyarrow and pyyaml, and no network. Everything else
finegym_ray needs (Ray 2.60 with the default, data, train and tune extras, pandas,
pydantic, PyAV, tensorboardX and the rest of Ray's requirements) is fetched here as
cp312 manylinux wheels, unpacked into one folder laid out like site-packages
(kit/stage/site), cut down to what we run, and packed as two tar.xz bundles:

- ``kit/dist/ray/ray.tar.xz``: the ``ray`` package alone;
- ``kit/dist/deps/deps.tar.xz``: everything else.

Two bundles so that a call whose working tree would pass the device tool's 64 MiB can
stage them over two back-to-back calls (README.md); each folder is one ``carry`` path.
``benchmarks/device/run_on_device.sh`` unpacks them there. Nothing here needs Python
3.12 itself: wheels are unpacked with zipfile.

What is left out (and why it is safe to), in order of size saved:

- Ray: ``jars`` (Java workers), ``rllib``, ``serve``, ``llm`` (unused libraries); the
  dashboard's web UI build (``dashboard/client/build``; the dashboard *process*, which
  the State API, job submission and Ray Train/Tune's placement group cleaner talk to,
  still starts: it only needs the folder to exist, so an empty one with a one-line
  index.html is kept); the runtime env agent's own copy of aiohttp and its deps
  (``_private/runtime_env/agent/thirdparty_files``: it falls back to the bundle's
  aiohttp, a newer patch release); debug symbols of gcs_server, raylet, _raylet.so.
- PyAV: the shared libraries of codecs FineGym's H.264 never touches are replaced by
  stubs of a few KB with the same name and symbols (x265 = HEVC encoding, SVT-AV1 =
  AV1 encoding; the stubs make those encoders fail to open, with an error, instead of
  running); libavcodec's own H.264 decoder and libx264 (our synthetic videos'
  encoder) are untouched. ``--no-stub-codecs`` keeps the real ones. Debug info of
  PyAV's Cython modules (about 27 MB of its 31).
- everywhere: ``__pycache__``, ``*.pyi``, ``tests`` of pandas, virtualenv's seed
  wheels (only runtime_env pip/virtualenv uses them), py-spy (stack dumps from the
  dashboard), cryptography and cffi (only TLS certificates and Google credentials
  import it, lazily), SBOMs and RECORD files, console-script launchers (the runner
  writes its own ``ray`` and ``finegym-ray``), unneeded symbols of extension modules
  where that saves over 10%.

Also left out, on purpose: boto3/botocore (only s3:// paths import them, lazily: the
device has no S3 server; the runner checks that finegym_ray imports without them) and
decord (its backend is imported only when chosen; PyAV is the default).

Sizes are printed and written to ``kit/dist/SIZES.txt``; ``kit/dist/MANIFEST.txt`` lists
every distribution in the bundles with its version. Wheels are cached in kit/wheels
(``--refresh`` downloads again).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KIT = Path(os.environ.get("FINEGYM_KIT_DIR", HERE / "kit"))

# What the kit brings: pyproject.toml's dependencies that the device lacks (checked
# against pyproject by check_against_pyproject).
REQUIREMENTS = [
    "ray[default,data,train,tune]==2.60.0",
    "av>=14,<19",
    "tensorboardX>=2.6,<3",
]
# On the device already (its image): never bundled, even where Ray asks for them. torch's
# own requirements are there with it (and in the rehearsal's venv). typing_extensions,
# filelock and fsspec are small and bundled anyway: pydantic needs a recent
# typing_extensions, newer than an image's may be.
ON_DEVICE = {"torch", "numpy", "opencv-python-headless", "pyarrow", "pyyaml",
             "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "setuptools", "triton"}
# In pyproject.toml but left out of the kit on purpose (see the module docstring).
LEFT_OUT = {"boto3", "decord"}

PY_TAGS = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
PLATFORMS = ["manylinux2014_x86_64", "manylinux1_x86_64"] + [
    f"manylinux_2_{n}_x86_64" for n in (5, 12, 17, 24, 27, 28, 31, 34)]

# Distributions not unpacked at all (see the docstring).
DROP_DISTS = {"cryptography", "cffi", "pycparser", "py-spy"}
# Paths (relative to site/) removed after unpacking.
DROP_PATHS = [
    "ray/jars", "ray/rllib", "ray/serve", "ray/llm",
    "ray/_private/runtime_env/agent/thirdparty_files",
    "pandas/tests",
    "virtualenv/seed/wheels/embed/*.whl",
    "bin",
]
DASHBOARD_BUILD = "ray/dashboard/client/build"
# PyAV's bundled libraries replaced by stubs: prefix -> what every stub function returns.
# x265: x265_api_get returns NULL (FFmpeg: "Could not get API for bit depth").
# SVT-AV1: every call returns EB_ErrorInsufficientResources (0x80001000, an int < 0).
CODEC_STUBS = {"libx265": "0", "libSvtAv1Enc": "(long)(int)0x80001000"}


def log(msg: str) -> None:
    print(f"[build_kit] {msg}", flush=True)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def check_against_pyproject() -> None:
    """Every runtime dependency of pyproject.toml is bundled, on the device, or left out
    on purpose: a new dependency fails the build until this file says which."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bundled = {norm(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in REQUIREMENTS}
    for dep in deps:
        name = norm(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0])
        if name not in bundled | ON_DEVICE | LEFT_OUT:
            sys.exit(f"build_kit: pyproject.toml's dependency {dep!r} is neither bundled (REQUIREMENTS), "
                     f"on the device (ON_DEVICE) nor left out on purpose (LEFT_OUT): add it to one")


def download(refresh: bool) -> list[Path]:
    wheels = KIT / "wheels"
    stamp = wheels / ".requirements"
    want = "\n".join(REQUIREMENTS + PLATFORMS) + "\n"
    if refresh or not stamp.exists() or stamp.read_text() != want:
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        log(f"downloading cp312 wheels: {' '.join(REQUIREMENTS)}")
        plat = [a for p in PLATFORMS for a in ("--platform", p)]
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *PY_TAGS,
                            *plat, "-d", str(wheels), *REQUIREMENTS], stderr=subprocess.PIPE, text=True)
        # Less the lines about local find-links/index folders that lack a package.
        sys.stderr.write("".join(line for line in r.stderr.splitlines(keepends=True)
                                 if "' is ignored: it is neither a file nor a directory" not in line))
        if r.returncode:
            sys.exit(f"build_kit: pip download failed (exit {r.returncode})")
        stamp.write_text(want)
    return sorted(wheels.glob("*.whl"))


def dist_name(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return norm(name), version


def unpack(wheels: list[Path], site: Path) -> list[str]:
    """Unpacks the wheels that the kit brings into site/ (purelib/platlib of .data
    folders to the top, scripts and headers dropped). Returns 'name==version' lines."""
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    manifest = []
    for wheel in wheels:
        name, version = dist_name(wheel)
        if name in ON_DEVICE or name in DROP_DISTS or name.startswith(("nvidia-", "cuda-")):
            continue
        manifest.append(f"{name}=={version}")
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue  # scripts, headers, data
                    parts = parts[2:]
                if info.is_dir():
                    continue
                dest = site.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                mode = (info.external_attr >> 16) & 0o777
                os.chmod(dest, mode | 0o644 if mode else 0o644)
    return manifest


def prune(site: Path) -> None:
    for pattern in DROP_PATHS:
        for p in site.glob(pattern):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in list(site.rglob("__pycache__")):
        shutil.rmtree(p)
    for p in list(site.rglob("*.pyi")):
        p.unlink()
    for d in site.glob("*.dist-info"):
        for junk in ("RECORD", "sboms", "INSTALLER", "REQUESTED"):
            p = d / junk
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    build = site / DASHBOARD_BUILD
    if build.is_dir():
        shutil.rmtree(build)
        (build / "static").mkdir(parents=True)
        (build / "index.html").write_text("<!doctype html><title>Ray</title><p>Ray's dashboard web UI is left out of "
                                          "finegym_ray's device kit; its HTTP API works.</p>\n")


def is_elf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def strip_binaries(site: Path) -> int:
    """strip --strip-unneeded every ELF file where that saves over 10% (the dynamic
    symbol tables stay). Returns the bytes saved."""
    saved = 0
    for p in sorted(site.rglob("*")):
        if not p.is_file() or p.is_symlink() or not is_elf(p) or "av.libs" in p.parts:
            continue  # auditwheel's bundled libraries are stripped already
        before = p.stat().st_size
        tmp = p.with_name(p.name + ".stripped")
        if subprocess.run(["strip", "--strip-unneeded", "-o", str(tmp), str(p)],
                          capture_output=True).returncode != 0:
            tmp.unlink(missing_ok=True)
            continue
        after = tmp.stat().st_size
        if before - after > before // 10:
            shutil.copymode(p, tmp)
            tmp.replace(p)
            saved += before - after
        else:
            tmp.unlink()
    return saved


def _nm(args: list[str]) -> list[str]:
    return subprocess.run(["nm", "-D", *args], capture_output=True, text=True, check=True).stdout.splitlines()


def _soname(lib: Path) -> str:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return m.group(1) if m else lib.name


def _needed(lib: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def stub_codecs(site: Path, work: Path) -> list[str]:
    """Replaces CODEC_STUBS' libraries in av.libs by stubs that define every symbol the
    other libraries and PyAV's modules take from them (functions return the given
    value, data is zeros, symbol versions kept), then deletes libraries that nothing
    needs any more. Returns what it did, one line each."""
    libs = site / "av.libs"
    users = [p for p in list(libs.iterdir()) + list((site / "av").rglob("*.so")) if is_elf(p)]
    done = []
    work.mkdir(parents=True, exist_ok=True)
    for prefix, ret in CODEC_STUBS.items():
        found = sorted(libs.glob(prefix + "-*.so*"))
        if not found:
            done.append(f"{prefix}: not in this PyAV, nothing to stub")
            continue
        lib = found[0]
        defined: dict[str, tuple[str, int]] = {}
        for line in _nm(["--defined-only", "-S", str(lib)]):
            f = line.split()
            if len(f) == 4:  # value size type name
                defined[f[3].split("@")[0]] = (f[2], int(f[1], 16))
            elif len(f) == 3:  # value type name (no size)
                defined[f[2].split("@")[0]] = (f[1], 0)
        wanted: dict[str, str | None] = {}
        for user in users:
            if user == lib:
                continue
            for line in _nm(["--undefined-only", "--with-symbol-versions", str(user)]):
                f = line.split()
                sym, _, ver = f[-1].partition("@")
                if sym in defined and defined[sym][0] not in ("A",):
                    wanted[sym] = ver.lstrip("@") or wanted.get(sym)
        src = [f"/* stub of {lib.name} for finegym_ray's device kit (benchmarks/device/build_kit.py) */"]
        for sym in sorted(wanted):
            kind, size = defined[sym]
            if kind in ("T", "t", "W", "i"):
                src.append(f"long {sym}(void) {{ return {ret}; }}")
            else:
                src.append(f"char {sym}[{max(size, 1)}] __attribute__((aligned(16)));")
        c = work / f"{prefix}.c"
        c.write_text("\n".join(src) + "\n")
        cmd = ["gcc", "-shared", "-fPIC", "-O2", "-s", f"-Wl,-soname,{_soname(lib)}", "-o", str(lib), str(c)]
        versions: dict[str, list[str]] = {}
        for sym, ver in wanted.items():
            if ver:
                versions.setdefault(ver, []).append(sym)
        if versions:
            vs = work / f"{prefix}.map"
            vs.write_text("".join(f"{v} {{ global: {'; '.join(sorted(s))}; }};\n" for v, s in sorted(versions.items())))
            cmd.append(f"-Wl,--version-script={vs}")
        before = lib.stat().st_size
        run(cmd)
        done.append(f"{lib.name}: {before} B -> stub of {lib.stat().st_size} B ({len(wanted)} symbols)")
    # Libraries that nothing loads any more (their only user was a stubbed one).
    while True:
        needed = set()
        for p in list(libs.iterdir()) + list((site / "av").rglob("*.so")):
            if is_elf(p):
                needed.update(_needed(p))
        orphans = [p for p in libs.iterdir() if p.name not in needed]
        if not orphans:
            break
        for p in orphans:
            done.append(f"{p.name}: {p.stat().st_size} B, no longer needed, removed")
            p.unlink()
    return done


def pack(src: Path, members: list[str], dest: Path, xz_opts: list[str]) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0",
                                "-C", str(src), "-cf", "-", *members], stdout=subprocess.PIPE)
        xz = subprocess.Popen(["nice", "-n", "19", "xz", *xz_opts, "-T1", "-c"], stdin=tar.stdout, stdout=out)
        tar.stdout.close()
        if xz.wait() or tar.wait():
            sys.exit(f"build_kit: packing {dest} failed")
    tmp.replace(dest)
    return dest.stat().st_size


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def working_tree_bytes() -> int:
    """What the device tool sends besides the carried paths: tracked files, plus
    untracked files that git does not ignore."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    total = 0
    for rel in filter(None, out.split(b"\0")):
        p = ROOT / os.fsdecode(rel)
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--refresh", action="store_true", help="download the wheels again")
    p.add_argument("--fast", action="store_true", help="xz -6 rather than -9e (sizes ~3%% larger, minutes faster)")
    p.add_argument("--no-stub-codecs", action="store_true", help="keep PyAV's x265 and SVT-AV1 libraries")
    p.add_argument("--no-pack", action="store_true", help="stop after staging kit/stage/site (for trying it out)")
    args = p.parse_args(argv)
    for tool in ("tar", "xz", "strip", "nm", "readelf") + (() if args.no_stub_codecs else ("gcc",)):
        if shutil.which(tool) is None:
            sys.exit(f"build_kit: needs {tool} (binutils, xz-utils, tar, gcc)")
    t0 = time.monotonic()
    check_against_pyproject()
    wheels = download(args.refresh)
    site = KIT / "stage" / "site"
    log(f"unpacking {len(wheels)} wheels into {site.relative_to(ROOT) if site.is_relative_to(ROOT) else site}")
    manifest = unpack(wheels, site)
    raw_unpacked = tree_bytes(site)
    prune(site)
    saved = strip_binaries(site)
    log(f"unpacked {raw_unpacked / 1e6:.1f} MB; pruned and stripped ({saved / 1e6:.1f} MB of symbols): "
        f"{tree_bytes(site) / 1e6:.1f} MB")
    notes = [] if args.no_stub_codecs else stub_codecs(site, KIT / "stage" / "stubs")
    for line in notes:
        log("av.libs: " + line)
    if args.no_pack:
        return 0
    dist = KIT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    xz_opts = ["-6"] if args.fast else ["-9e"]
    others = sorted(p.name for p in site.iterdir() if p.name != "ray")
    log(f"packing with xz {xz_opts[0]} (single-threaded, nice 19)")
    sizes = {"deps": pack(site, others, dist / "deps" / "deps.tar.xz", xz_opts),
             "ray": pack(site, ["ray"], dist / "ray" / "ray.tar.xz", xz_opts)}
    (dist / "MANIFEST.txt").write_text("".join(f"{m}\n" for m in manifest))
    tree = working_tree_bytes()
    total = sum(sizes.values())
    mib = 1 << 20
    lines = [
        f"deps.tar.xz  {sizes['deps']:>11,} B  {sizes['deps'] / mib:6.2f} MiB  "
        f"(unpacked {tree_bytes(site) - tree_bytes(site / 'ray'):,} B)  sha256 {sha256(dist / 'deps' / 'deps.tar.xz')}",
        f"ray.tar.xz   {sizes['ray']:>11,} B  {sizes['ray'] / mib:6.2f} MiB  "
        f"(unpacked {tree_bytes(site / 'ray'):,} B)  sha256 {sha256(dist / 'ray' / 'ray.tar.xz')}",
        f"bundles      {total:>11,} B  {total / mib:6.2f} MiB",
        f"working tree {tree:>11,} B  {tree / mib:6.2f} MiB  (tracked + untracked-not-ignored, as the tool sends it)",
        f"one call     {total + tree:>11,} B  {(total + tree) / mib:6.2f} MiB  of the tool's 64 MiB: "
        + ("fits" if total + tree < 62 * mib else "too big: stage over two calls (README.md)"),
        f"xz {xz_opts[0]}, built in {time.monotonic() - t0:.0f} s",
    ]
    (dist / "SIZES.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        log(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
