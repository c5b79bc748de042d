"""What a distributed training job on the cluster needs, validated in one place."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.config import Framework


class JobKind(StrEnum):
    """The custom resource that runs the workers."""

    TRAINJOB = "trainjob"  # Kubeflow Trainer v2, runtime torch-distributed
    PYTORCHJOB = "pytorchjob"  # training-operator v1
    TFJOB = "tfjob"  # training-operator v1


_ALLOWED = {Framework.TORCH: {JobKind.TRAINJOB, JobKind.PYTORCHJOB},
            Framework.TENSORFLOW: {JobKind.TFJOB}}


class DistributedJobConfig(BaseModel):
    """A training job: workers, resources and placement come from the run's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    framework: Framework
    kind: JobKind | None = Field(default=None, description="None: TrainJob / TFJob.")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")
    namespace: str = "default"
    image: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    workers: int = Field(default=2, ge=1, le=1024)
    gpus_per_worker: int = Field(default=0, ge=0, le=16)
    cpu: str = "1"
    memory: str = "2Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str | int]] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    service_account: str = "twinflow-pipeline"
    runtime: str = "torch-distributed"

    @model_validator(mode="after")
    def _kind_fits_framework(self) -> DistributedJobConfig:
        if self.framework is Framework.BOTH:
            raise ValueError("framework: a job trains one framework, not 'both'")
        if self.kind is not None and self.kind not in _ALLOWED[self.framework]:
            allowed = ", ".join(sorted(k.value for k in _ALLOWED[self.framework]))
            raise ValueError(f"kind: '{self.kind.value}' cannot run {self.framework.value}; "
                             f"use one of: {allowed}")
        return self

    @property
    def job_kind(self) -> JobKind:
        """The kind to create (defaults: TrainJob for PyTorch, TFJob for TensorFlow)."""
        if self.kind is not None:
            return self.kind
        return JobKind.TRAINJOB if self.framework is Framework.TORCH else JobKind.TFJOB

    def resources(self) -> dict[str, dict[str, str]]:
        """Requests and limits of one worker; GPUs as nvidia.com/gpu limits."""
        limits = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus_per_worker:
            limits["nvidia.com/gpu"] = str(self.gpus_per_worker)
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": limits}
