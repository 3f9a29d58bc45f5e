"""The cloud and Kubernetes configs parse, hold what they must, and agree with the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from ray._private.thirdparty.pathspec import PathSpec

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"
# Resources the code asks Ray for: num_cpus on the preprocessing actors, GPUs in training.
KNOWN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


def load(name: str) -> dict:
    """The first YAML document of a config (the Ray resource; NetworkPolicies follow it)."""
    return load_all(name)[0]


def load_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


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
        assert "RAY_AUTH_MODE=token" in cmd and "disabled" not in cmd, cmd


def test_aws_token_is_made_on_the_head_and_synced_to_the_workers():
    c = load("aws.yaml")
    head_setup = " ".join(c["head_setup_commands"])
    # Made once, with Ray's own generator, readable only by its user, never printed.
    assert "get-auth-token --generate" in head_setup and "umask 077" in head_setup and ">/dev/null" in head_setup
    assert c["cluster_synced_files"] == ["~/.ray/auth_token"]  # Ray's default token path
    # The sync goes through rsync_exclude: no pattern may drop the token file itself.
    spec = PathSpec.from_lines("gitwildmatch", c["rsync_exclude"])
    assert not spec.match_file("auth_token")
    assert "--dashboard-host=127.0.0.1" in " ".join(c["head_start_ray_commands"])


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec["template"]["spec"]["containers"]


IMAGE_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?(@sha256:[0-9a-f]{64})?$")
AUTH_SECRET = "finegym-ray-auth"


def _check_token_env(env_list: list[dict], where: str) -> None:
    """RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the Secret, never a literal token."""
    env = {e["name"]: e for e in env_list}
    assert env["RAY_AUTH_MODE"].get("value") == "token", where
    token = env["RAY_AUTH_TOKEN"]
    assert "value" not in token, f"{where}: a token literal in a manifest"
    assert token["valueFrom"]["secretKeyRef"] == {"name": AUTH_SECRET, "key": "auth_token"}, where


def _check_security_context(pod: dict, container: dict, where: str) -> None:
    pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
    assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
    # A numeric user: Kubernetes cannot verify runAsNonRoot for a named image user.
    assert isinstance(ctx.get("runAsUser", pod_ctx.get("runAsUser")), int), where
    assert ctx.get("runAsUser", pod_ctx.get("runAsUser")) != 0, where
    assert ctx.get("allowPrivilegeEscalation") is False, where
    assert ctx.get("capabilities") == {"drop": ["ALL"]}, where
    assert ctx.get("privileged", False) is False, where
    assert pod_ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, where


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        for container in _containers(group):
            where = f"{group.get('groupName', 'head')}/{container['name']}"
            _check_token_env(container.get("env", []), where)
            _check_security_context(pod, container, where)
            assert IMAGE_TAG.match(container["image"]), f"{where}: image {container['image']} is not an exact version"
            assert container["resources"]["requests"] == container["resources"]["limits"]
    # The autoscaler runs as a sidecar of the head and talks to the GCS: it needs the token too.
    autoscaler = spec["autoscalerOptions"]
    _check_token_env(autoscaler["env"], "autoscaler")
    _check_security_context(spec["headGroupSpec"]["template"]["spec"], autoscaler, "autoscaler")
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # reached via the Service
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        (container,) = _containers(group)
        limits = container["resources"]["limits"]
        params = group["rayStartParams"]
        assert params["num-cpus"] == limits["cpu"], f"{group['groupName']}: Ray CPUs must match the pod's"
        assert params.get("num-gpus", "0") == limits.get("nvidia.com/gpu", "0"), group["groupName"]
        assert group["template"]["spec"]["nodeSelector"], group["groupName"]


def _labels(group: dict) -> dict:
    return group["template"].get("metadata", {}).get("labels", {})


def _selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    assert match and not selector.get("matchExpressions"), f"selector {selector} must name labels"
    return all(labels.get(k) == v for k, v in match.items())


def _check_head_network_policy(name: str, spec: dict, policies: list[dict], submitter_labels: dict | None) -> None:
    """Ingress to the head only from the cluster's own pods (all ports), and to the Jobs
    API (8265) from the submitter and the KubeRay operator; nothing else."""
    head = _labels(spec["headGroupSpec"])
    cluster = head.get("finegym-ray/cluster")
    assert cluster and head.get("finegym-ray/role") == "head", name
    for group in spec["workerGroupSpecs"]:
        assert _labels(group).get("finegym-ray/cluster") == cluster, f"{name}: {group['groupName']} unlabelled"
    covering = [p for p in policies if _selects(p["spec"]["podSelector"], head)]
    assert covering, f"{name}: no NetworkPolicy selects the head"
    for policy in covering:
        assert policy["apiVersion"] == "networking.k8s.io/v1" and "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{name}: an ingress rule open to every source"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, f"{name}: {peer}"
                assert "podSelector" in peer, f"{name}: a whole namespace let in: {peer}"
                own = peer["podSelector"].get("matchLabels") == {"finegym-ray/cluster": cluster}
                if not own:  # the Jobs API only
                    assert "namespaceSelector" not in peer or peer["podSelector"]["matchLabels"] == {
                        "app.kubernetes.io/name": "kuberay-operator"}, f"{name}: {peer}"
                    assert [p["port"] for p in rule.get("ports", [])] == [8265], f"{name}: {rule}"
    allowed = [peer["podSelector"]["matchLabels"] for p in covering for r in p["spec"].get("ingress", [])
               for peer in r["from"]]
    assert {"finegym-ray/cluster": cluster} in allowed, f"{name}: Ray's own pods cannot reach the head"
    assert {"app.kubernetes.io/name": "kuberay-operator"} in allowed, f"{name}: the operator cannot poll jobs"
    if submitter_labels is not None:
        assert any(_selects({"matchLabels": a}, submitter_labels) for a in allowed), f"{name}: submitter blocked"


def test_kuberay_raycluster_has_autoscaling_cpu_and_gpu_groups():
    c = load("kuberay/raycluster.yaml")
    assert c["apiVersion"] == "ray.io/v1" and c["kind"] == "RayCluster"
    _check_ray_cluster_spec(c["spec"])
    _check_head_network_policy("raycluster.yaml", c["spec"], load_all("kuberay/raycluster.yaml")[1:],
                               {"finegym-ray/submitter": c["metadata"]["name"]})
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
    # KubeRay's submitter pod runs `ray job submit`: it needs the token and the same hardening.
    submitter = spec["submitterPodTemplate"]
    (container,) = submitter["spec"]["containers"]
    assert "command" not in container and submitter["spec"]["restartPolicy"] == "Never"  # KubeRay fills it in
    _check_token_env(container["env"], f"{name} submitter")
    _check_security_context(submitter["spec"], container, f"{name} submitter")
    assert IMAGE_TAG.match(container["image"]), container["image"]
    _check_head_network_policy(name, spec["rayClusterSpec"], load_all(f"kuberay/{name}")[1:],
                               submitter["metadata"]["labels"])


@pytest.mark.parametrize("name", sorted(p.name for p in (CLUSTER / "kuberay").glob("rayjob-*.yaml")))
def test_a_rayjob_applied_again_takes_over_the_lease_of_its_killed_driver(name):
    """Applied again, a RayJob's driver runs on a new head pod, where the killed driver's
    pid says nothing: it waits until that driver's heartbeat is stale and takes the lease
    over (test_lease.py::test_a_killed_driver_on_another_pod_is_taken_over_once_its_heartbeat_is_stale).
    The manifest says how long, and never breaks a lease itself: a live job keeps it."""
    from finegym_ray.lease import HEARTBEAT_S, STALE_BEATS

    text = (CLUSTER / "kuberay" / name).read_text()
    header = " ".join(line.lstrip("#").strip() for line in text.split("apiVersion:")[0].splitlines())
    assert "apply it again" in header and f"{STALE_BEATS * HEARTBEAT_S / 60:g} minutes" in header, header
    assert "--break-lease" not in load(f"kuberay/{name}")["spec"]["entrypoint"]


def test_the_tune_rayjobs_driver_takes_the_sweep_state_key_from_a_secret():
    """Applied again, the sweep's driver runs on a new head pod, without the key file the
    old pod made: the key that signs the sweep's state (tune/state.py) comes from a
    Secret, the same for every head pod, to the head (the driver) only, never as a
    literal in the manifest or in the job's runtime env (shown in Ray's dashboard)."""
    from finegym_ray.tune.state import KEY_ENV

    text = (CLUSTER / "kuberay" / "rayjob-tune.yaml").read_text()
    spec = load("kuberay/rayjob-tune.yaml")["spec"]
    (head,) = _containers(spec["rayClusterSpec"]["headGroupSpec"])
    key = {e["name"]: e for e in head["env"]}[KEY_ENV]
    assert "value" not in key and key["valueFrom"]["secretKeyRef"] == {"name": "finegym-state-key", "key": "state-key"}
    others = [*spec["submitterPodTemplate"]["spec"]["containers"],
              *(c for g in spec["rayClusterSpec"]["workerGroupSpecs"] for c in _containers(g))]
    assert all(KEY_ENV not in {e["name"] for e in c.get("env", [])} for c in others)
    assert KEY_ENV not in spec["runtimeEnvYAML"]
    header = " ".join(line.lstrip("#").strip() for line in text.split("apiVersion:")[0].splitlines())
    assert re.search(r"kubectl create secret generic finegym-state-key .*--from-literal=state-key=", header), header


def test_dockerfile_copies_what_the_jobs_need():
    text = (CLUSTER / "Dockerfile").read_text()
    for needed in ("COPY finegym_ray", "COPY jobs", "COPY configs", "pip install --no-cache-dir -e .", "WORKDIR /app"):
        assert needed in text


def test_dockerfile_pins_its_base_and_runs_as_the_manifests_user():
    lines = [line.split() for line in (CLUSTER / "Dockerfile").read_text().splitlines() if line.strip()]
    (base,) = [words[1] for words in lines if words[0] == "FROM"]
    assert IMAGE_TAG.match(base) and "latest" not in base, f"base image {base} is not an exact version"
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users and users[-1] == "1000:1000", "the last USER must be the numeric non-root user"
    env = {w.split("=", 1)[0]: w.split("=", 1)[1] for words in lines if words[0] == "ENV" for w in words[1:]}
    assert env["RAY_AUTH_MODE"] == "token"  # a pod without the token fails instead of running open
    for name in sorted(p.name for p in (CLUSTER / "kuberay").glob("*.yaml")):
        for doc in load_all(f"kuberay/{name}"):
            for pod in _pod_specs(doc):
                assert pod["securityContext"]["runAsUser"] == 1000, name


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    cluster = spec.get("rayClusterSpec", spec) if doc["kind"] in ("RayCluster", "RayJob") else None
    if cluster is None:
        return []
    pods = [g["template"]["spec"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]
    return pods + ([spec["submitterPodTemplate"]["spec"]] if "submitterPodTemplate" in spec else [])


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
