"""The pipeline's parameters as one typed object, shared by run, compile and submit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.config import Framework, Precision, Priority


class PipelineParams(BaseModel):
    """Every parameter of :func:`pipelines.pipeline.twinflow_pipeline`, validated."""

    model_config = ConfigDict(extra="forbid")

    framework: Framework = Framework.TORCH
    source: str = "sklearn:digits"
    label: str = ""
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=0.001, gt=0)
    seed: int = 42
    workers: int = Field(default=1, ge=0, le=64)
    precision: Precision = Precision.FP32
    resume: bool = False
    checkpoint_root: str = ""
    gpus_per_worker: int = Field(default=0, ge=0, le=16)
    cluster_options: str = Field(default="{}", description="ClusterOptions as JSON")
    ingest_options: str = Field(default="{}", description="IngestConfig fields as JSON")
    transform_options: str = Field(default="{}", description="TransformConfig as JSON")
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    model_name: str = ""
    min_accuracy: float = Field(default=0.5, ge=0, le=1)
    tolerance: float = Field(default=0.0, ge=0, le=1)
    min_f1_macro: float = Field(default=0.0, ge=0, le=1)
    min_improvement: float = Field(default=0.0, ge=0, le=1)
    slice_feature: str = Field(default="", description="Raw column to slice test metrics by")
    roc_class: str = Field(default="", description="Class of the KFP ROC curve; '' = last")
    max_accuracy_drop: float = Field(default=0.005, ge=0, le=1)
    pruning_sparsity: float = Field(default=0.5, ge=0, lt=1)
    predictor: Literal["custom", "builtin"] = "custom"
    canary_percent: int = Field(default=100, ge=0, le=100)
    experiment: str = "twinflow"
    namespace: str = "default"
    prefer: Priority = Priority.ACCURACY
    run_key: str = ""

    @model_validator(mode="after")
    def _one_relative_rule(self) -> PipelineParams:
        if self.tolerance > 0 and self.min_improvement > 0:
            raise ValueError("set either tolerance or min_improvement, not both")
        return self

    def as_arguments(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline function (plain JSON values)."""
        return self.model_dump(mode="json")
