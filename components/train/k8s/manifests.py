"""The custom resources, as plain dicts: TrainJob, PyTorchJob, TFJob."""

from __future__ import annotations

from typing import Any

from components.train.k8s.spec import DistributedJobConfig, JobKind

MANAGER = "twinflow.io/launcher"
_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
             "capabilities": {"drop": ["ALL"]}}


def build(cfg: DistributedJobConfig) -> dict[str, Any]:
    """The object for ``cfg.job_kind``."""
    return {JobKind.TRAINJOB: trainjob, JobKind.PYTORCHJOB: pytorchjob,
            JobKind.TFJOB: tfjob}[cfg.job_kind](cfg)


def _env(cfg: DistributedJobConfig) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(cfg.env.items())]


def _metadata(cfg: DistributedJobConfig) -> dict[str, Any]:
    return {"name": cfg.name, "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/part-of": "twinflow",
                       "app.kubernetes.io/component": "train"}}


def trainjob(cfg: DistributedJobConfig) -> dict[str, Any]:
    """Kubeflow Trainer v2: the torch-distributed runtime launches torchrun per node."""
    pod_patch: dict[str, Any] = {"serviceAccountName": cfg.service_account}
    if cfg.node_selector:
        pod_patch["nodeSelector"] = cfg.node_selector
    if cfg.tolerations:
        pod_patch["tolerations"] = cfg.tolerations
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": _metadata(cfg),
        "spec": {
            "runtimeRef": {"name": cfg.runtime, "apiGroup": "trainer.kubeflow.org",
                           "kind": "ClusterTrainingRuntime"},
            "trainer": {"image": cfg.image, "command": cfg.command, "env": _env(cfg),
                        "numNodes": cfg.workers,
                        "resourcesPerNode": cfg.resources()},
            "runtimePatches": [{"manager": MANAGER, "trainingRuntimeSpec": {"template": {
                "spec": {"replicatedJobs": [{"name": "node", "template": {"spec": {
                    "template": {"spec": pod_patch}}}}]}}}}],
        },
    }


def _pod(cfg: DistributedJobConfig, container: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": cfg.service_account,
        "containers": [{"name": container, "image": cfg.image, "command": cfg.command,
                        "env": _env(cfg), "resources": cfg.resources(),
                        "securityContext": _SECURITY}],
    }
    if cfg.node_selector:
        spec["nodeSelector"] = cfg.node_selector
    if cfg.tolerations:
        spec["tolerations"] = cfg.tolerations
    return {"spec": spec}


def pytorchjob(cfg: DistributedJobConfig) -> dict[str, Any]:
    """training-operator v1: one Master plus workers-1 Workers, container `pytorch`."""
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never",
                           "template": _pod(cfg, "pytorch")}}
    if cfg.workers > 1:
        replicas["Worker"] = {"replicas": cfg.workers - 1, "restartPolicy": "Never",
                              "template": _pod(cfg, "pytorch")}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": _metadata(cfg),
            "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "pytorchReplicaSpecs": replicas,
                     "nprocPerNode": str(max(1, cfg.gpus_per_worker))}}


def tfjob(cfg: DistributedJobConfig) -> dict[str, Any]:
    """training-operator v1: workers with TF_CONFIG set by the operator (worker 0 is chief)."""
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": _metadata(cfg),
            "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "tfReplicaSpecs": {
                "Worker": {"replicas": cfg.workers, "restartPolicy": "Never",
                           "template": _pod(cfg, "tensorflow")}}}}
