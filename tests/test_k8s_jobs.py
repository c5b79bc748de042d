"""Cluster training jobs: generated objects validate against the upstream CRDs;
job conditions map to outcomes. No cluster runs here, so the launcher's API
calls are not exercised; these are the parts that can be checked offline."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from components.config import Framework
from components.train.k8s.conditions import Outcome, State, outcome
from components.train.k8s.launcher import chief_selector
from components.train.k8s.manifests import build
from components.train.k8s.spec import DistributedJobConfig, JobKind
from tests.conftest import SHARED

CRDS = {JobKind.TRAINJOB: ("trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
        JobKind.PYTORCHJOB: ("kubeflow.org_pytorchjobs.yaml", "v1"),
        JobKind.TFJOB: ("kubeflow.org_tfjobs.yaml", "v1")}


def _schema(kind: JobKind) -> dict[str, Any]:
    path = SHARED / "crds" / CRDS[kind][0]
    if not path.is_file():
        pytest.skip("../shared/crds is absent")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == CRDS[kind][1])
    return version["schema"]["openAPIV3Schema"]


def _unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (the API server's strict validation would
    reject them; plain jsonschema lets them through since CRDs allow extra keys)."""
    if isinstance(obj, dict) and "properties" in schema:
        found = []
        for key, value in obj.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(obj, list) and "items" in schema:
        return [f for item in obj for f in _unknown_fields(item, schema["items"], path + "[]")]
    return []


def _config(framework: Framework, kind: JobKind | None, **extra: Any) -> DistributedJobConfig:
    return DistributedJobConfig(framework=framework, kind=kind, name="digits-train-1",
                                image="twinflow/step-torch:0.1.0",
                                command=["python", "-m", "components.train.worker"],
                                env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, **extra)


PLACEMENT = {"gpus_per_worker": 2, "node_selector": {"gpu": "a100"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                              "effect": "NoSchedule"}]}


@pytest.mark.parametrize("placement", [{}, PLACEMENT], ids=["cpu", "gpu-placed"])
@pytest.mark.parametrize(("framework", "kind"), [
    (Framework.TORCH, None), (Framework.TORCH, JobKind.PYTORCHJOB),
    (Framework.TENSORFLOW, None)], ids=["trainjob", "pytorchjob", "tfjob"])
def test_generated_jobs_validate_against_upstream_crds(framework: Framework,
                                                       kind: JobKind | None,
                                                       placement: dict[str, Any]) -> None:
    cfg = _config(framework, kind, workers=3, **placement)
    job = build(cfg)
    schema = _schema(cfg.job_kind)
    jsonschema.validate(job, schema)
    assert _unknown_fields(job, schema) == []
    text = yaml.safe_dump(job)
    assert ("nvidia.com/gpu: '2'" in text) == bool(placement)
    assert ("a100" in text) == bool(placement)


def test_worker_counts_per_kind() -> None:
    trainjob = build(_config(Framework.TORCH, None, workers=4))
    assert trainjob["spec"]["trainer"]["numNodes"] == 4
    torchjob = build(_config(Framework.TORCH, JobKind.PYTORCHJOB, workers=4))
    replicas = torchjob["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    tfjob = build(_config(Framework.TENSORFLOW, None, workers=4))
    assert tfjob["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 4
    assert "training.kubeflow.org/replica-type=worker" in chief_selector(
        _config(Framework.TENSORFLOW, None))


@pytest.mark.parametrize(("framework", "kind", "message"), [
    (Framework.TENSORFLOW, JobKind.TRAINJOB, "cannot run tensorflow; use one of: tfjob"),
    (Framework.TORCH, JobKind.TFJOB, "cannot run torch; use one of: pytorchjob, trainjob"),
    (Framework.BOTH, None, "a job trains one framework")])
def test_invalid_configs_name_the_field(framework: Framework, kind: JobKind | None,
                                        message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(framework, kind)


def _job(*conditions: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": s, "reason": f"{t}Reason",
                                       "message": f"{t} happened"} for t, s in conditions]}}


@pytest.mark.parametrize(("job", "expected"), [
    ({}, Outcome(State.RUNNING)),
    ({"status": {}}, Outcome(State.RUNNING)),
    (_job(("Created", "True"), ("Running", "True")), Outcome(State.RUNNING)),
    (_job(("Created", "True"), ("Running", "False"), ("Succeeded", "True")),
     Outcome(State.SUCCEEDED)),
    (_job(("Complete", "True")), Outcome(State.SUCCEEDED)),  # TrainJob v2
    (_job(("Succeeded", "False"), ("Running", "True")), Outcome(State.RUNNING)),
    (_job(("Restarting", "True")), Outcome(State.RUNNING)),
    (_job(("Failed", "True"), ("Running", "True")),
     Outcome(State.FAILED, "FailedReason: Failed happened")),
    (_job(("Succeeded", "True"), ("Failed", "True")),
     Outcome(State.FAILED, "FailedReason: Failed happened")),
    (_job(("Failed", "False"), ("Complete", "True")), Outcome(State.SUCCEEDED)),
], ids=["no-status", "empty-status", "running", "v1-succeeded", "v2-complete",
        "false-terminal", "restarting", "failed", "failed-wins", "false-failed"])
def test_conditions_map_to_outcomes(job: dict[str, Any], expected: Outcome) -> None:
    assert outcome(job) == expected
