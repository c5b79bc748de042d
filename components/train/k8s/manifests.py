"""The custom resources, as plain dicts: TrainJob (v2), PyTorchJob and TFJob (v1).

Pure functions of a :class:`DistributedJobConfig`, so every object can be checked
against the upstream CRD schemas without a cluster. Field choices follow the CRD
versions in ``../shared/crds`` (Trainer v2.3.0, training-operator v1.9.4).
"""

from __future__ import annotations

import copy
from typing import Any

from components.train.k8s.spec import DistributedJobConfig, JobKind

# runtimePatches are keyed by manager (a list-map); ours is one entry.
MANAGER = "twinflow.io/launcher"
# Container names the operators look for: v1 injects its env (MASTER_ADDR,
# TF_CONFIG, ...) only into `pytorch` / `tensorflow`; the torch-distributed
# runtime's trainer container (and replicated job) is `node`.
CONTAINER = {JobKind.TRAINJOB: "node", JobKind.PYTORCHJOB: "pytorch",
             JobKind.TFJOB: "tensorflow"}
TRAINER_REPLICATED_JOB = "node"
# v1 defaults, set explicitly so the rendezvous port does not depend on a webhook.
_PORTS = {JobKind.PYTORCHJOB: {"name": "pytorchjob-port", "containerPort": 23456},
          JobKind.TFJOB: {"name": "tfjob-port", "containerPort": 2222}}
# The step images run as uid/gid 1000 (images/step-*/Dockerfile); the restricted
# Pod Security Standard asks for exactly these settings.
SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
LABELS = {"app.kubernetes.io/part-of": "twinflow", "app.kubernetes.io/component": "train"}


def build(cfg: DistributedJobConfig) -> dict[str, Any]:
    """The object for ``cfg.job_kind``."""
    builders = {JobKind.TRAINJOB: trainjob, JobKind.PYTORCHJOB: pytorchjob,
                JobKind.TFJOB: tfjob}
    return builders[cfg.job_kind](cfg)


def resources(cfg: DistributedJobConfig) -> dict[str, dict[str, str]]:
    """Requests and limits of one worker pod; GPUs as ``nvidia.com/gpu`` limits
    (an extended resource's request defaults to its limit)."""
    limits = {"cpu": cfg.cpu_limit or cfg.cpu, "memory": cfg.memory_limit or cfg.memory}
    if cfg.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(cfg.gpus_per_worker)
    return {"requests": {"cpu": cfg.cpu, "memory": cfg.memory}, "limits": limits}


def _env(cfg: DistributedJobConfig) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(cfg.env.items())]


def _metadata(cfg: DistributedJobConfig) -> dict[str, Any]:
    return {"name": cfg.name, "namespace": cfg.namespace, "labels": dict(LABELS)}


def _placement(cfg: DistributedJobConfig) -> dict[str, Any]:
    """Pod-spec fields shared by every kind: where pods may run, and as whom."""
    spec: dict[str, Any] = {}
    if cfg.service_account:
        spec["serviceAccountName"] = cfg.service_account
    if cfg.node_selector:
        spec["nodeSelector"] = dict(cfg.node_selector)
    if cfg.tolerations:
        spec["tolerations"] = [dict(t) for t in cfg.tolerations]
    return spec


def trainjob(cfg: DistributedJobConfig) -> dict[str, Any]:
    """Kubeflow Trainer v2 TrainJob on the ``torch-distributed`` runtime.

    ``spec.trainer`` carries what the Trainer API owns (image, command, env, nodes,
    resources); placement, the service account and the container's security
    context are not Trainer fields in v2.3.0, so they go in a ``runtimePatches``
    entry on the runtime's ``node`` replicated job (v2.3.0 has no
    podTemplateOverrides). ``numProcPerNode`` is explicit: the runtime's ``auto``
    would start one process per CPU of the limit on a CPU-only node.
    """
    pod_spec = _placement(cfg)
    pod_spec["containers"] = [{"name": CONTAINER[JobKind.TRAINJOB],
                               "securityContext": copy.deepcopy(SECURITY_CONTEXT)}]
    trainer: dict[str, Any] = {"image": cfg.image, "command": list(cfg.command),
                               "numNodes": cfg.workers, "numProcPerNode": cfg.procs,
                               "resourcesPerNode": resources(cfg)}
    if cfg.args:
        trainer["args"] = list(cfg.args)
    if cfg.env:
        trainer["env"] = _env(cfg)
    patch = {"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": TRAINER_REPLICATED_JOB, "template": {"spec": {
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod_spec}}}}]}}}}
    spec: dict[str, Any] = {
        "runtimeRef": {"name": cfg.runtime, "apiGroup": "trainer.kubeflow.org",
                       "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
        "runtimePatches": [patch],
    }
    if cfg.active_deadline_s:
        spec["activeDeadlineSeconds"] = cfg.active_deadline_s
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": _metadata(cfg), "spec": spec}


def _pod_template(cfg: DistributedJobConfig) -> dict[str, Any]:
    """A v1 replica's pod: the training container plus placement."""
    container: dict[str, Any] = {
        "name": CONTAINER[cfg.job_kind], "image": cfg.image, "command": list(cfg.command),
        "resources": resources(cfg), "ports": [dict(_PORTS[cfg.job_kind])],
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
    }
    if cfg.args:
        container["args"] = list(cfg.args)
    if cfg.env:
        container["env"] = _env(cfg)
    spec = _placement(cfg)
    if not cfg.service_account:
        spec["automountServiceAccountToken"] = False
    spec["containers"] = [container]
    return {"metadata": {"labels": dict(LABELS)}, "spec": spec}


def _replica(cfg: DistributedJobConfig, count: int) -> dict[str, Any]:
    # Never: a failed worker fails the job at once instead of hanging the
    # others in a collective while it restarts alone.
    return {"replicas": count, "restartPolicy": "Never", "template": _pod_template(cfg)}


def _run_policy(cfg: DistributedJobConfig) -> dict[str, Any]:
    policy: dict[str, Any] = {"cleanPodPolicy": cfg.clean_pod_policy, "backoffLimit": 0}
    if cfg.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = cfg.ttl_seconds_after_finished
    if cfg.active_deadline_s:
        policy["activeDeadlineSeconds"] = cfg.active_deadline_s
    return policy


def pytorchjob(cfg: DistributedJobConfig) -> dict[str, Any]:
    """training-operator v1 PyTorchJob: one Master plus ``workers - 1`` Workers.

    The operator sets MASTER_ADDR/PORT, RANK (master 0, worker i -> i + 1) and
    WORLD_SIZE = pods x nprocPerNode, so nprocPerNode must be the number of
    processes each pod really starts (1 for a plain ``python`` command). The
    collective backend (nccl on GPUs, gloo on CPU) is chosen by the worker from
    its device, so it needs no variable here.
    """
    replicas = {"Master": _replica(cfg, 1)}
    if cfg.workers > 1:
        replicas["Worker"] = _replica(cfg, cfg.workers - 1)
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": _metadata(cfg),
            "spec": {"runPolicy": _run_policy(cfg), "nprocPerNode": str(cfg.procs),
                     "pytorchReplicaSpecs": replicas}}


def tfjob(cfg: DistributedJobConfig) -> dict[str, Any]:
    """training-operator v1 TFJob; the operator writes each pod's TF_CONFIG.

    By default only ``Worker`` replicas: worker 0 is MultiWorkerMirroredStrategy's
    chief, the operator labels it job-role=master, and the job succeeds when it
    does, which is what the twinflow worker expects (it derives rank and world size
    from TF_CONFIG's worker list). ``tf_chief`` adds a separate Chief replica.
    """
    if cfg.tf_chief:
        replicas = {"Chief": _replica(cfg, 1)}
        if cfg.workers > 1:
            replicas["Worker"] = _replica(cfg, cfg.workers - 1)
    else:
        replicas = {"Worker": _replica(cfg, cfg.workers)}
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": _metadata(cfg),
            "spec": {"runPolicy": _run_policy(cfg), "tfReplicaSpecs": replicas}}
