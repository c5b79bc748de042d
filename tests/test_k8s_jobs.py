"""Cluster training jobs, checked offline: every generated object validates against
the upstream CRD's schema (and declares no field the schema lacks), job conditions
map to outcomes, bad configs fail naming the field. No cluster runs here, so the
launcher's API calls are not exercised; only its pure parts are."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from components.config import Framework
from components.images import image
from components.train.k8s.conditions import Outcome, State, outcome
from components.train.k8s.launcher import API, JobTimeoutError, chief_selector
from components.train.k8s.manifests import CONTAINER, MANAGER, build
from components.train.k8s.spec import DistributedJobConfig, JobKind, parse_quantity
from components.train.launch import TrainingError

CRD_DIR = Path(__file__).parents[1].parent / "shared" / "crds"
CRDS = {JobKind.TRAINJOB: ("trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
        JobKind.PYTORCHJOB: ("kubeflow.org_pytorchjobs.yaml", "v1"),
        JobKind.TFJOB: ("kubeflow.org_tfjobs.yaml", "v1")}
_CRD_CACHE: dict[JobKind, dict[str, Any]] = {}


def _crd(kind: JobKind) -> dict[str, Any]:
    path = CRD_DIR / CRDS[kind][0]
    if not path.is_file():
        pytest.skip("../shared/crds is absent")
    if kind not in _CRD_CACHE:
        _CRD_CACHE[kind] = yaml.safe_load(path.read_text())
    return _CRD_CACHE[kind]


def _schema(kind: JobKind) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD version the manifests target."""
    version = next(v for v in _crd(kind)["spec"]["versions"] if v["name"] == CRDS[kind][1])
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare. The API server drops (or, with strict
    field validation, rejects) them; plain jsonschema lets them through."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict) and "properties" in schema:
        found = []
        for key, value in obj.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        sub = schema["additionalProperties"]
        return [f for key, value in obj.items()
                for f in _unknown_fields(value, sub, f"{path}.{key}")]
    if isinstance(obj, list) and "items" in schema:
        return [f for item in obj for f in _unknown_fields(item, schema["items"], path + "[]")]
    return []


def _config(framework: Framework | str = Framework.TORCH, kind: JobKind | None = None,
            **extra: Any) -> DistributedJobConfig:
    values: dict[str, Any] = {
        "framework": framework, "kind": kind, "name": "twinflow-0123456789ab-train",
        "image": f"twinflow/step-{framework}:0.1.0",
        "command": ["python", "-m", "components.train.worker", "--config", "{}"],
        "env": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}}
    return DistributedJobConfig(**{**values, **extra})


def _containers(obj: Any) -> list[dict[str, Any]]:
    """Every container (or TrainJob container patch) anywhere in the object."""
    if isinstance(obj, dict):
        own = obj.get("containers", []) if isinstance(obj.get("containers"), list) else []
        return own + [c for v in obj.values() for c in _containers(v)]
    if isinstance(obj, list):
        return [c for v in obj for c in _containers(v)]
    return []


def _pod_specs(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["kind"] == "TrainJob":
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        return [rj["template"]["spec"]["template"]["spec"] for rj in patch["replicatedJobs"]]
    replicas = job["spec"].get("pytorchReplicaSpecs") or job["spec"]["tfReplicaSpecs"]
    return [r["template"]["spec"] for r in replicas.values()]


KINDS = [(Framework.TORCH, None), (Framework.TORCH, JobKind.PYTORCHJOB),
         (Framework.TENSORFLOW, None)]
KIND_IDS = ["trainjob", "pytorchjob", "tfjob"]
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
PLACEMENTS = {
    "cpu": {},
    "gpu": {"gpus_per_worker": 2},
    "node-selector": {"node_selector": {"pool": "train"}},
    "tolerations": {"tolerations": [TOLERATION, {"key": "spot", "operator": "Equal",
                                                 "value": "true", "effect": "NoExecute",
                                                 "tolerationSeconds": 60}]},
    "everything": {"gpus_per_worker": 1, "node_selector": {"gpu": "a100"},
                   "tolerations": [TOLERATION], "service_account": "trainer",
                   "args": ["--epochs", "3"], "cpu": "4", "cpu_limit": "8", "memory": "8Gi",
                   "active_deadline_s": 7200},
}


@pytest.mark.parametrize("placement", list(PLACEMENTS.values()), ids=list(PLACEMENTS))
@pytest.mark.parametrize(("framework", "kind"), KINDS, ids=KIND_IDS)
def test_generated_jobs_validate_against_upstream_crds(
        framework: Framework, kind: JobKind | None, placement: dict[str, Any]) -> None:
    cfg = _config(framework, kind, workers=3, **placement)
    job = build(cfg)
    schema = _schema(cfg.job_kind)
    jsonschema.validate(job, schema)
    assert _unknown_fields(job, schema) == []
    crd = _crd(cfg.job_kind)["spec"]
    assert job["kind"] == crd["names"]["kind"]
    assert job["apiVersion"] == f"{crd['group']}/{CRDS[cfg.job_kind][1]}"
    # TrainJob's CEL rules on metadata.name, which jsonschema does not evaluate.
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    assert len(job["metadata"]["name"]) <= 63
    assert "&id" not in yaml.safe_dump(job)  # no shared sub-objects (YAML aliases)


@pytest.mark.parametrize(("framework", "kind"), KINDS, ids=KIND_IDS)
def test_unknown_field_check_reaches_replica_and_patch_contents(
        framework: Framework, kind: JobKind | None) -> None:
    """The strictness check itself must see inside maps and patches."""
    job = build(_config(framework, kind))
    _containers(job)[0]["imagePullPolicyy"] = "Always"
    assert len(_unknown_fields(job, _schema(_config(framework, kind).job_kind))) == 1


@pytest.mark.parametrize(("framework", "kind"), KINDS, ids=KIND_IDS)
def test_gpus_placement_and_security_land_in_every_pod(framework: Framework,
                                                       kind: JobKind | None) -> None:
    cfg = _config(framework, kind, workers=3, **PLACEMENTS["everything"])
    job = build(cfg)
    containers = _containers(job)
    assert containers and all(c["securityContext"]["runAsNonRoot"] is True
                              and c["securityContext"]["allowPrivilegeEscalation"] is False
                              for c in containers)
    assert all(c["name"] == CONTAINER[cfg.job_kind] for c in containers)
    for pod in _pod_specs(job):
        assert pod["nodeSelector"] == {"gpu": "a100"}
        assert pod["tolerations"] == [TOLERATION]
        assert pod["serviceAccountName"] == "trainer"
    if cfg.job_kind is JobKind.TRAINJOB:
        trainer = job["spec"]["trainer"]
        assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
        assert trainer["command"] == list(cfg.command) and trainer["args"] == ["--epochs", "3"]
        assert trainer["env"] == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]
        assert job["spec"]["runtimePatches"][0]["manager"] == MANAGER
        assert job["spec"]["activeDeadlineSeconds"] == 7200
    else:
        assert all(c["resources"]["limits"] == {"cpu": "8", "memory": "8Gi",
                                                "nvidia.com/gpu": "1"} for c in containers)
        assert all(c["command"] == list(cfg.command) for c in containers)
        assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200


@pytest.mark.parametrize(("framework", "kind"), KINDS, ids=KIND_IDS)
def test_cpu_jobs_request_no_gpu_and_keep_no_api_token(framework: Framework,
                                                       kind: JobKind | None) -> None:
    job = build(_config(framework, kind))
    assert "nvidia.com/gpu" not in yaml.safe_dump(job)
    for pod in _pod_specs(job):
        assert "nodeSelector" not in pod and "serviceAccountName" not in pod
        if job["kind"] != "TrainJob":  # the TrainJob patch cannot set this field
            assert pod["automountServiceAccountToken"] is False


def test_replicas_and_processes_per_kind() -> None:
    trainjob = build(_config(workers=4, gpus_per_worker=2))["spec"]["trainer"]
    assert (trainjob["numNodes"], trainjob["numProcPerNode"]) == (4, 2)
    assert build(_config(workers=2))["spec"]["trainer"]["numProcPerNode"] == 1  # not "auto"
    torch_v1 = build(_config(kind=JobKind.PYTORCHJOB, workers=4, gpus_per_worker=2))["spec"]
    replicas = torch_v1["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 3)
    assert torch_v1["nprocPerNode"] == "1"  # a plain python command: one process per pod
    single = build(_config(kind=JobKind.PYTORCHJOB, workers=1, gpus_per_worker=1))["spec"]
    assert list(single["pytorchReplicaSpecs"]) == ["Master"]
    tf = build(_config(Framework.TENSORFLOW, workers=4))["spec"]["tfReplicaSpecs"]
    assert list(tf) == ["Worker"] and tf["Worker"]["replicas"] == 4
    chief = build(_config(Framework.TENSORFLOW, workers=4, tf_chief=True))["spec"]
    assert {k: v["replicas"] for k, v in chief["tfReplicaSpecs"].items()} == {"Chief": 1,
                                                                             "Worker": 3}
    jsonschema.validate(build(_config(Framework.TENSORFLOW, workers=4, tf_chief=True)),
                        _schema(JobKind.TFJOB))


def test_defaults_kind_image_and_cleanup() -> None:
    torch = DistributedJobConfig(framework=Framework.TORCH, name="a", command=["torchrun"])
    assert torch.job_kind is JobKind.TRAINJOB and torch.image == image("torch")
    tf = DistributedJobConfig(framework="tensorflow", name="b", command=["python"])
    assert tf.job_kind is JobKind.TFJOB and tf.image == image("tensorflow")
    policy = build(_config(kind=JobKind.PYTORCHJOB))["spec"]["runPolicy"]
    assert policy["ttlSecondsAfterFinished"] == 3600 and policy["cleanPodPolicy"] == "Running"


def test_api_coordinates_match_the_crds() -> None:
    for kind, (group, version, plural) in API.items():
        crd = _crd(kind)["spec"]
        assert (crd["group"], crd["names"]["plural"]) == (group, plural)
        assert any(v["name"] == version and v["served"] for v in crd["versions"])


@pytest.mark.parametrize(("framework", "kind", "expected"), [
    (Framework.TORCH, None, "jobset.sigs.k8s.io/jobset-name=twinflow-0123456789ab-train,"
     "jobset.sigs.k8s.io/replicatedjob-name=node,batch.kubernetes.io/job-completion-index=0"),
    (Framework.TORCH, JobKind.PYTORCHJOB, "training.kubeflow.org/job-name="
     "twinflow-0123456789ab-train,training.kubeflow.org/job-role=master"),
    (Framework.TENSORFLOW, None, "training.kubeflow.org/job-name="
     "twinflow-0123456789ab-train,training.kubeflow.org/job-role=master"),
], ids=KIND_IDS)
def test_chief_selector(framework: Framework, kind: JobKind | None, expected: str) -> None:
    assert chief_selector(_config(framework, kind)) == expected


def test_timeout_error_is_both_a_timeout_and_a_training_error() -> None:
    err = JobTimeoutError("trainjob ml/x did not finish within 10 s")
    assert isinstance(err, TimeoutError) and isinstance(err, TrainingError)


@pytest.mark.parametrize(("changes", "message"), [
    ({"framework": Framework.TENSORFLOW, "kind": JobKind.TRAINJOB},
     "kind: 'trainjob' cannot run tensorflow; use one of: tfjob"),
    ({"framework": Framework.TENSORFLOW, "kind": JobKind.PYTORCHJOB},
     "kind: 'pytorchjob' cannot run tensorflow"),
    ({"kind": JobKind.TFJOB}, "kind: 'tfjob' cannot run torch; use one of: pytorchjob, trainjob"),
    ({"framework": Framework.BOTH}, "framework\n.*a step runs one framework"),
    ({"framework": "jax"}, "framework\n.*unknown framework 'jax'"),
    ({"kind": "mpijob"}, r"kind\n"),
    ({"name": "Train"}, r"name\n"),
    ({"name": "1-train"}, r"name\n"),
    ({"name": "t" * 41}, r"name\n"),
    ({"namespace": "ML"}, r"namespace\n"),
    ({"command": []}, r"command\n"),
    ({"workers": 0}, r"workers\n"),
    ({"cpu": "two"}, r"cpu\n.*not a Kubernetes quantity"),
    ({"memory": "0"}, r"memory\n.*must be positive"),
    ({"memory_limit": "1Gi"}, "memory_limit: 1Gi is below the request memory=2Gi"),
    ({"env": {"WORLD_SIZE": "2"}}, r"env\n.*WORLD_SIZE is set by the training operator"),
    ({"env": {"PET_NNODES": "2"}}, r"env\n.*PET_NNODES is set by the training operator"),
    ({"env": {"1BAD": "x"}}, r"env\n.*not a valid variable name"),
    ({"tolerations": [{"key": "a", "efect": "NoSchedule"}]}, r"tolerations\n.*unknown key"),
    ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]},
     r"tolerations\n.*Exists takes no value"),
    ({"tolerations": [{"key": "a", "effect": "Never"}]}, r"tolerations\n.*effect must be"),
    ({"gpus_per_worker": 1, "procs_per_worker": 2}, "procs_per_worker: 2 processes cannot share"),
    ({"framework": Framework.TENSORFLOW, "procs_per_worker": 2},
     "procs_per_worker: a TFJob runs one process per pod"),
    ({"tf_chief": True}, "tf_chief: only a TFJob has a Chief replica"),
    ({"clean_pod_policy": "Sometimes"}, r"clean_pod_policy\n"),
    ({"replicas": 3}, r"replicas\n.*Extra inputs are not permitted"),
], ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_invalid_configs_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(**changes)


@pytest.mark.parametrize(("text", "value"), [
    ("500m", 0.5), ("2", 2), ("4Gi", 4 * 2**30), ("1.5G", 1.5e9), ("1e3", 1000), ("128Mi", 2**27),
])
def test_quantities(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == pytest.approx(value)


def _job(*conditions: tuple[str, str], times: bool = False) -> dict[str, Any]:
    items = []
    for i, (kind, status) in enumerate(conditions):
        item = {"type": kind, "status": status, "reason": f"{kind}Reason",
                "message": f"{kind} happened"}
        if times:
            item["lastTransitionTime"] = f"2026-01-01T00:00:0{i}Z"
        items.append(item)
    return {"status": {"conditions": items}}


FAILED = Outcome(State.FAILED, "FailedReason: Failed happened")
CONDITION_CASES = {
    "no-status": ({}, Outcome(State.RUNNING)),
    "null-job": (None, Outcome(State.RUNNING)),
    "null-status": ({"status": None}, Outcome(State.RUNNING)),
    "null-conditions": ({"status": {"conditions": None}}, Outcome(State.RUNNING)),
    "garbage-conditions": ({"status": {"conditions": ["x", 3, None]}}, Outcome(State.RUNNING)),
    "v1-created": (_job(("Created", "True")), Outcome(State.RUNNING, "Created")),
    "v1-running": (_job(("Created", "True"), ("Running", "True"), times=True),
                   Outcome(State.RUNNING, "Running")),
    "v1-restarting": (_job(("Created", "True"), ("Running", "False"), ("Restarting", "True")),
                      Outcome(State.RUNNING, "Restarting")),
    "v1-succeeded": (_job(("Created", "True"), ("Running", "False"), ("Succeeded", "True")),
                     Outcome(State.SUCCEEDED)),
    "v1-failed": (_job(("Created", "True"), ("Running", "False"), ("Failed", "True")), FAILED),
    "v1-unordered": (_job(("Succeeded", "True"), ("Running", "False"), ("Created", "True")),
                     Outcome(State.SUCCEEDED)),
    "false-terminal": (_job(("Succeeded", "False"), ("Running", "True")),
                       Outcome(State.RUNNING, "Running")),
    "unknown-status": (_job(("Failed", "Unknown")), Outcome(State.RUNNING)),
    "v2-no-conditions": ({"status": {"jobsStatus": []}}, Outcome(State.RUNNING)),
    "v2-complete": (_job(("Complete", "True")), Outcome(State.SUCCEEDED)),
    "v2-suspended": (_job(("Suspended", "True")), Outcome(State.RUNNING, "Suspended")),
    "v2-resumed": (_job(("Suspended", "False")), Outcome(State.RUNNING)),
    "v2-deadline": ({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": ""}]}},
        Outcome(State.FAILED, "DeadlineExceeded")),
    "v2-failed-false": (_job(("Failed", "False"), ("Complete", "True")),
                        Outcome(State.SUCCEEDED)),
    "failure-wins": (_job(("Succeeded", "True"), ("Failed", "True")), FAILED),
    "bare-failure": ({"status": {"conditions": [{"type": "Failed", "status": "True"}]}},
                     Outcome(State.FAILED, "Failed")),
}


@pytest.mark.parametrize(("job", "expected"), list(CONDITION_CASES.values()),
                         ids=list(CONDITION_CASES))
def test_conditions_map_to_outcomes(job: dict[str, Any] | None, expected: Outcome) -> None:
    assert outcome(job) == expected


def test_latest_true_condition_by_transition_time_not_list_order() -> None:
    job = _job(("Running", "True"), ("Restarting", "True"), times=True)
    job["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-02T00:00:00Z"
    assert outcome(job) == Outcome(State.RUNNING, "Running")
