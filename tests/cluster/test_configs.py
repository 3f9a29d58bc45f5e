"""The cloud and Kubernetes configs parse, hold what they must, and agree with the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"
# Resources the code asks Ray for: num_cpus on the preprocessing actors, GPUs in training.
KNOWN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_no_credentials_in_any_config():
    for path in [*CLUSTER.rglob("*.yaml"), CLUSTER / "Dockerfile", CLUSTER / "local.sh"]:
        text = path.read_text()
        assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)\s*[:=]", text), path
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), path


def test_aws_launcher_config():
    c = load("aws.yaml")
    assert c["provider"]["type"] == "aws" and c["head_node_type"] in c["available_node_types"]
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"], "the head runs the drivers: never spot"
    assert head["resources"]["CPU"] == 0
    cpu = types["cpu_worker"]
    assert cpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert cpu["min_workers"] == 0 < cpu["max_workers"] <= c["max_workers"]
    gpu = types["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 8 and gpu["max_workers"] <= c["max_workers"]
    for name, t in types.items():
        assert set(t["resources"]) <= KNOWN_RESOURCES, name
        assert "IamInstanceProfile" in t["node_config"], f"{name}: S3 access must come from an instance profile"
    assert any("pip install" in cmd and "finegym-ray" in cmd for cmd in c["setup_commands"])
    for cmd in c["head_start_ray_commands"] + c["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=disabled" in cmd, cmd


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec["template"]["spec"]["containers"]


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for container in _containers(group):
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE") == "disabled", container["name"]
            assert container["resources"]["requests"] == container["resources"]["limits"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        (container,) = _containers(group)
        limits = container["resources"]["limits"]
        params = group["rayStartParams"]
        assert params["num-cpus"] == limits["cpu"], f"{group['groupName']}: Ray CPUs must match the pod's"
        assert params.get("num-gpus", "0") == limits.get("nvidia.com/gpu", "0"), group["groupName"]
        assert group["template"]["spec"]["nodeSelector"], group["groupName"]


def test_kuberay_raycluster_has_autoscaling_cpu_and_gpu_groups():
    c = load("kuberay/raycluster.yaml")
    assert c["apiVersion"] == "ray.io/v1" and c["kind"] == "RayCluster"
    _check_ray_cluster_spec(c["spec"])
    groups = {g["groupName"]: g for g in c["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert "num-gpus" in groups["gpu"]["rayStartParams"] and "num-gpus" not in groups["cpu"]["rayStartParams"]


@pytest.mark.parametrize("name", sorted(p.name for p in (CLUSTER / "kuberay").glob("rayjob-*.yaml")))
def test_kuberay_rayjobs_run_existing_entry_points(name):
    c = load(f"kuberay/{name}")
    assert c["apiVersion"] == "ray.io/v1" and c["kind"] == "RayJob"
    spec = c["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("/app/jobs/")  # the Dockerfile's layout
    job = JOBS / Path(argv[1]).name
    assert job.exists(), f"{name} runs {argv[1]}, which jobs/ does not have"
    assert name == f"rayjob-{job.stem}.yaml"
    if "--config" in argv:  # a config file the image holds (the Dockerfile copies configs/)
        config = argv[argv.index("--config") + 1]
        assert config.startswith("/app/configs/") and (ROOT / config[len("/app/"):]).exists(), config
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    _check_ray_cluster_spec(spec["rayClusterSpec"])


def test_dockerfile_copies_what_the_jobs_need():
    text = (CLUSTER / "Dockerfile").read_text()
    for needed in ("COPY finegym_ray", "COPY jobs", "COPY configs", "pip install --no-cache-dir -e .", "WORKDIR /app"):
        assert needed in text


def _upload_ignore_patterns() -> list[str]:
    lines = (ROOT / ".rayignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_aws_rsync_excludes_exactly_the_upload_ignore_list():
    """One list: what `submit` keeps back (Ray reads .rayignore) is what `ray up` keeps back."""
    assert load("aws.yaml")["rsync_exclude"] == _upload_ignore_patterns()


def test_upload_ignore_patterns_mean_the_same_to_gitignore_and_rsync():
    # Forms whose meaning differs between the two matchers (negation, a slash inside a
    # pattern: anchored for gitignore, matched at any depth by rsync) are not used.
    for pattern in _upload_ignore_patterns():
        assert not pattern.startswith("!") and "/" not in pattern.rstrip("/"), pattern
        assert pattern == pattern.strip() and not pattern.startswith("\\"), pattern


def test_aws_mounts_only_project_paths():
    mounts = load("aws.yaml")["file_mounts"]
    remote_root = "/home/ubuntu/finegym-ray"
    for remote, local in mounts.items():
        assert local.startswith("./") and ".." not in Path(local).parts and local not in ("./", "./."), local
        assert (ROOT / local).exists(), f"{local} is not in the project"
        assert remote == f"{remote_root}/{local[2:]}", (remote, local)
    # What `pip install -e ~/finegym-ray` and the jobs need (the Dockerfile copies the same).
    assert {"./pyproject.toml", "./README.md", "./finegym_ray", "./jobs", "./configs"} <= set(mounts.values())
