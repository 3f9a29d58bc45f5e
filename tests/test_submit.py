"""What `finegym-ray submit` uploads, computed by Ray's own packaging code from a checkout
that holds credentials, outputs and weights beside the code."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from finegym_ray import submit

ROOT = Path(__file__).resolve().parents[1]

# What a job needs of the checkout: the package, the job entry points, the configs.
CODE = ["pyproject.toml", "finegym_ray/__init__.py", "finegym_ray/train/run.py", "jobs/preprocess.py",
        "configs/tsm_rgb_gym99.yaml", "configs/sweeps/tsm_rgb_gym99.yaml"]
# The rest of a checkout, harmless but not needed by a job.
OTHER = ["README.md", "cluster/aws.yaml", "benchmarks/decode.py", "tests/test_cli.py", "notes.txt"]
SENSITIVE = [
    ".env", ".env.local", "configs/.env", "key.pem", "cluster/deploy.key", "tls/server.p12", "ray.token",
    "id_rsa", "id_ed25519.pub", "credentials", ".aws/credentials", ".aws/config", ".ssh/id_ed25519",
    ".kube/config", ".ray/auth_token", ".netrc", ".git-credentials", ".pypirc", ".docker/config.json",
    ".git/config", ".venv/bin/python", "finegym_ray/__pycache__/cli.cpython-311.pyc",
    "finegym_runs/tsm_rgb_event/epoch_0000/state.pt", "finegym_demo/store/clips/u.parquet", "runs/a/meta.json",
    "store/manifest/events.parquet", "ray_results/trial/result.json", "model.pt", "weights/resnet.pth",
    "finegym_ray/models/best.ckpt", "w.safetensors", "videos/abc.mp4", "abc.mkv", "clips.parquet", "backup.tar.gz",
    # Credentials of other tools, also where code and configs live.
    ".envrc", "jobs/.envrc", ".s3cfg", ".boto", ".pgpass", ".vault-token", "kubeconfig", "cluster/kubeconfig",
    "service-account.json", "configs/gcp-sa-key.json", "secrets.yaml", "configs/secrets.yaml",
    "finegym_ray/secrets.yaml", "terraform.tfstate", "cluster/terraform.tfstate.backup",
    # Weights, also inside the package.
    "pytorch_model.bin", "weights/resnet50.h5", "finegym_ray/models/tsm.safetensors", "finegym_ray/models/r.bin",
    # The project's own outputs: features, sweeps (a Tuner pickle among them), studies.
    "finegym_features/tsm/features.npy", "finegym_features/tsm/manifest.json", "finegym_sweeps/lr/tuner.pkl",
    "finegym_sweeps/lr/experiment_state-2026-12-01.json", "finegym_studies/frames/results/results.csv",
]


def _checkout(tmp: Path) -> Path:
    """A checkout-like folder: the repository's ignore files, code files and the rest."""
    root = tmp / "checkout"
    for name in (".rayignore", ".gitignore"):
        if (ROOT / name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, root / name)
    for rel in [*CODE, *OTHER, *SENSITIVE]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    # Links out of the uploaded folders, named like code and configs.
    (root / "finegym_ray" / "keys.py").symlink_to(root / ".aws" / "credentials")
    (root / "configs" / "deploy").symlink_to(root / "cluster", target_is_directory=True)
    return root


def _uploaded(root: Path, tmp: Path, *, include_gitignore: bool) -> set[str]:
    """Files in the package Ray would build for submit's runtime env, via the functions the
    Jobs SDK calls (upload_working_dir_if_needed, create_package)."""
    from ray._private.runtime_env.packaging import create_package
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    packages: list[Path] = []

    def build(working_dir: str, excludes: list[str], is_file: bool = False) -> None:
        assert not is_file
        packages.append(tmp / f"package{len(packages)}.zip")
        create_package(working_dir, packages[-1], include_gitignore=include_gitignore, excludes=excludes)

    with submit.job_spec("preprocess", ["--out", "s3://b/x"]) as spec:
        upload_working_dir_if_needed(dict(spec["runtime_env"]), include_gitignore=include_gitignore,
                                     upload_fn=build)
    (package,) = packages
    with zipfile.ZipFile(package) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


@pytest.mark.parametrize("include_gitignore", [True, False])
def test_submit_uploads_the_code_and_none_of_the_secrets_outputs_or_weights(tmp_path, monkeypatch,
                                                                             include_gitignore):
    # Ray's built-in defaults (.git, .venv, ...) can be switched off by the user: the
    # project's own list must hold without them, and without .gitignore.
    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    root = _checkout(tmp_path)
    monkeypatch.setattr(submit, "project_root", lambda: root)
    uploaded = _uploaded(root, tmp_path, include_gitignore=include_gitignore)
    leaked = sorted(set(SENSITIVE) & uploaded)
    assert not leaked, f"submit would upload {leaked}"
    assert uploaded == set(CODE), (sorted(set(CODE) - uploaded), sorted(uploaded - set(CODE)))


def test_the_job_env_names_no_credential(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value-0123456789")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-value-0123456789")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token-value-0123456789")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    with submit.job_spec("preprocess", []) as spec:
        text = repr(spec)
    for secret in ("AKIAEXAMPLE", "secret-value", "session-value", "ray-token-value"):
        assert secret not in text
    assert spec["runtime_env"]["env_vars"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"


def test_a_checkout_without_the_list_is_not_uploaded(tmp_path, monkeypatch):
    root = _checkout(tmp_path)
    (root / ".rayignore").unlink()
    monkeypatch.setattr(submit, "project_root", lambda: root)
    with pytest.raises(ValueError, match=r"\.rayignore is missing"):
        with submit.job_spec("preprocess", []):
            pass


def test_a_sweep_file_goes_by_its_path_in_the_checkout(tmp_path):
    # Its base config is named relative to its own folder and its name is its file's
    # stem: both survive only if the job reads the same file from the uploaded checkout.
    inside = submit.project_root() / "configs" / "sweeps" / "tsm_rgb_gym99.yaml"
    assert submit.sweep_file_args(str(inside)) == ["--config", "configs/sweeps/tsm_rgb_gym99.yaml"]
    outside = tmp_path / "mine.yaml"
    outside.write_text("space: {}\n")
    with pytest.raises(ValueError, match="must be inside the checkout"):
        submit.sweep_file_args(str(outside))


def test_a_config_in_the_checkout_that_the_upload_leaves_out_is_refused(tmp_path, monkeypatch):
    # The job reads its --config (a sweep file too) from its upload, which holds only the
    # checkout's configs: a file elsewhere, or one .rayignore keeps back, is not there.
    root = _checkout(tmp_path)
    monkeypatch.setattr(submit, "project_root", lambda: root)
    (root / "my_sweep.yaml").write_text("space: {}\n")
    for path in (root / "my_sweep.yaml", root / "configs" / "secrets.yaml"):
        with pytest.raises(ValueError, match="uploaded working directory .* configs"):
            submit.job_paths(["--config", str(path)])
        with pytest.raises(ValueError, match="must be inside the checkout's configs"):
            submit.sweep_file_args(str(path))
    assert submit.job_paths(["--config", str(root / "configs" / "tsm_rgb_gym99.yaml")])[0] == \
        ["--config", "configs/tsm_rgb_gym99.yaml"]


def test_a_failed_job_says_why_shows_its_last_lines_and_where_its_log_is():
    from types import SimpleNamespace

    failed = SimpleNamespace(message="Job entrypoint command failed with exit code 2, last available logs "
                                     "(truncated to 20,000 chars):\nfinegym-ray: error: not found: /data",
                             driver_exit_code=2)
    log = "".join(f"[train] line {i}\n" for i in range(30)) + "finegym-ray: error: not found: /data\n"
    report = submit.failure_report(failed, log, job_id="raysubmit_x", address="http://127.0.0.1:8265").splitlines()
    assert report[0] == "  reason: Job entrypoint command failed with exit code 2"
    assert report[1] == f"  last {submit.LAST_LINES} lines of its log:"
    assert report[-2] == "    finegym-ray: error: not found: /data" and "[train] line 10" not in report
    assert report[-1].startswith("  full log: ray job logs --address http://127.0.0.1:8265 raysubmit_x (the file "
                                 "job-driver-raysubmit_x.log")
    # Ended before its entry point printed a line: Ray's reason, the exit code, said so.
    lost = SimpleNamespace(message="Job supervisor actor died: killed", driver_exit_code=None)
    report = submit.failure_report(lost, "", job_id="raysubmit_y", address="http://h:8265").splitlines()
    assert report[:2] == ["  reason: Job supervisor actor died: killed",
                          "  its log is empty (the job ended before its entry point wrote a line)"]
    # Followed to its end with --wait: its lines are on the screen already, the rest is not.
    followed = submit.failure_report(failed, log, job_id="j", address="a", shown=31).splitlines()
    assert len(followed) == 2 and followed[1].startswith("  full log: ")
    assert submit.failure_report(failed, log, job_id="j", address="a", shown=30).splitlines()[1:3] == \
        ["  last line of its log (after those above):", "    finegym-ray: error: not found: /data"]
    killed = SimpleNamespace(message=None, driver_exit_code=-9)
    assert submit.failure_report(killed, "x\n", job_id="j", address="a").splitlines()[0] == \
        "  reason: none given by Ray (exit code -9)"


def test_a_submitted_jobs_driver_loads_torch_before_ray_and_the_video_libraries(tmp_path):
    # Loaded after them, torch died in the first job of a fresh cluster/local.sh cluster on
    # this machine (Intel oneMKL: "Cannot load .../libtorch_cpu.so", exit 2), and only there.
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "finegym_ray.cli", "evaluate", "--run",
                        str(tmp_path / "none")], env=env, capture_output=True, text=True, timeout=120)
    order = [line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    first = {name: order.index(name) for name in ("torch", "ray", "pyarrow", "cv2") if name in order}
    assert "torch" in first, r.stderr[-2000:]
    assert all(first["torch"] < first[name] for name in first if name != "torch"), first
