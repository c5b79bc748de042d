"""What a distributed training job on the cluster needs, validated in one place.

Everything the API server or an operator's webhook would reject later (names,
quantities, reserved environment variables, a framework on the wrong operator)
is rejected here instead, with the field named, before anything is created.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.config import FrameworkName
from components.frameworks import framework_names, get_adapter
from components.train.k8s.kinds import JobKind

__all__ = ["DistributedJobConfig", "JobKind", "parse_quantity"]

# Set by the operators themselves (torchrun's PET_*, the v1 rendezvous variables,
# TF_CONFIG); Trainer's webhook rejects the PET_ ones, v1 would silently clash.
RESERVED_ENV = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "TF_CONFIG"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The Kubernetes resource.Quantity grammar, as the CRDs spell it.
_QUANTITY = re.compile(r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", "1e3") as a number; ValueError if malformed."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    suffix = match["suffix"] or ""
    number = Decimal(match["num"])
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** Decimal(suffix[1:])
    return number * _DECIMAL[suffix]


class DistributedJobConfig(BaseModel):
    """One training job: workers, resources, placement and the command to run.

    ``command``/``args`` are data: the caller decides what the pods run (the
    twinflow worker entrypoint); this model only carries and validates them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    framework: FrameworkName
    kind: JobKind | None = Field(default=None, description="None: the framework's first "
                                                            "job kind (TrainJob / TFJob).")
    # RFC 1035 label (TrainJob's CEL rule); short because operators derive pod,
    # service and Job names from it (JobSet: <name>-node-0-<index>-<suffix>).
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                           max_length=63)
    image: str = Field(default="", max_length=500,
                       description="Empty: the step image of `framework` (components.images).")
    command: list[str] = Field(min_length=1, max_length=128)
    args: list[str] = Field(default_factory=list, max_length=128)
    workers: int = Field(default=2, ge=1, le=1024, description="Pods (nodes) of the job.")
    gpus_per_worker: int = Field(default=0, ge=0, le=16)
    procs_per_worker: int | None = Field(
        default=None, ge=1, le=64,
        description="Training processes per pod (torchrun's nproc-per-node). None: one per "
                    "GPU (at least 1) for TrainJob, whose command is torchrun; 1 otherwise.")
    cpu: str = "1"
    memory: str = "2Gi"
    cpu_limit: str | None = Field(default=None, description="None: same as `cpu`.")
    memory_limit: str | None = Field(default=None, description="None: same as `memory`.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str | int]] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    service_account: str | None = Field(
        default=None, description="None: the namespace's default account, without an API "
                                  "token where the CRD allows it (the pods only talk to MLflow).")
    runtime: str = Field(default="torch-distributed", min_length=1,
                         description="ClusterTrainingRuntime of a TrainJob.")
    tf_chief: bool = Field(
        default=False,
        description="TFJob with a Chief replica; off because components.train.worker reads "
                    "rank and world size from TF_CONFIG's `worker` list only (worker 0 = chief).")
    ttl_seconds_after_finished: int | None = Field(
        default=3600, ge=0, description="v1 jobs: garbage-collect a finished job the launcher "
                                        "could not delete. TrainJob v2.3.0 has no such field.")
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        default="Running", description="v1 jobs: keep finished pods (for their logs), stop the "
                                       "rest once the job is done.")
    active_deadline_s: int | None = Field(default=None, ge=1,
                                          description="Server-side bound on the job's run time.")

    @model_validator(mode="before")
    @classmethod
    def _default_image(cls, data: Any) -> Any:
        """The framework's step image when none is given (the worker code is baked in)."""
        if isinstance(data, dict) and not data.get("image"):
            from components.images import image

            framework = data.get("framework")
            if framework in framework_names():
                return {**data, "image": image(get_adapter(framework).image)}
        return data

    @field_validator("cpu", "memory", "cpu_limit", "memory_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and parse_quantity(value) <= 0:
            raise ValueError(f"{value!r} must be positive")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid variable name")
            if name in RESERVED_ENV or name.startswith("PET_"):
                raise ValueError(f"{name} is set by the training operator; do not set it")
        return env

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, items: list[dict[str, str | int]]) -> list[dict[str, str | int]]:
        for i, tol in enumerate(items):
            unknown = sorted(set(tol) - _TOLERATION_KEYS)
            if unknown:
                raise ValueError(f"[{i}]: unknown key(s) {unknown}; allowed: "
                                 f"{sorted(_TOLERATION_KEYS)}")
            if tol.get("effect", "") not in _EFFECTS:
                raise ValueError(f"[{i}]: effect must be one of {sorted(_EFFECTS - {''})}")
            if tol.get("operator") == "Exists" and tol.get("value"):
                raise ValueError(f"[{i}]: operator Exists takes no value")
            if "tolerationSeconds" in tol and not isinstance(tol["tolerationSeconds"], int):
                raise ValueError(f"[{i}]: tolerationSeconds must be an integer")
        return items

    @model_validator(mode="after")
    def _consistent(self) -> DistributedJobConfig:
        allowed = get_adapter(self.framework).job_kinds
        if not allowed:
            raise ValueError(f"framework: {self.framework} has no cluster training job")
        if self.kind is not None and self.kind not in allowed:
            raise ValueError(f"kind: '{self.kind.value}' cannot run {self.framework}; "
                             f"use one of: {', '.join(sorted(k.value for k in allowed))}")
        if self.job_kind is JobKind.TFJOB and self.procs_per_worker not in (None, 1):
            raise ValueError("procs_per_worker: a TFJob runs one process per pod")
        if self.tf_chief and self.job_kind is not JobKind.TFJOB:
            raise ValueError("tf_chief: only a TFJob has a Chief replica")
        if self.gpus_per_worker and self.procs > self.gpus_per_worker:
            raise ValueError(f"procs_per_worker: {self.procs} processes cannot share "
                             f"{self.gpus_per_worker} GPU(s) under nccl; at most one per GPU")
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            given = getattr(self, limit)
            if given is not None and parse_quantity(given) < parse_quantity(getattr(self, request)):
                raise ValueError(f"{limit}: {given} is below the request {request}="
                                 f"{getattr(self, request)}")
        return self

    @property
    def job_kind(self) -> JobKind:
        """The kind to create (default: the adapter's first, TrainJob for PyTorch, TFJob
        for TensorFlow)."""
        return self.kind if self.kind is not None else get_adapter(self.framework).job_kinds[0]

    @property
    def procs(self) -> int:
        """Processes per pod: TrainJob's command is torchrun, which starts one per GPU;
        a v1 job's command is one process unless the caller says otherwise, and the
        operator's WORLD_SIZE (pods x nprocPerNode) must match what actually runs."""
        if self.procs_per_worker is not None:
            return self.procs_per_worker
        return max(1, self.gpus_per_worker) if self.job_kind is JobKind.TRAINJOB else 1
