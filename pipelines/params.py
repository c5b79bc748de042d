"""The pipeline's parameters as one typed object, shared by run, compile and submit.

:class:`PipelineParams` is the one definition of a pipeline parameter: the steps'
parameters are inherited from their configs (``components.config``), the
pipeline's own are declared here. The KFP signature of the pipeline
(:func:`pipeline_signature`) and the CLI options (``pipelines.options``) are
generated from its fields, so a new parameter is added in one place.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from components.config import (
    BOTH,
    CompressParams,
    EvaluateParams,
    FrameworkChoice,
    IngestParams,
    Priority,
    PushParams,
    TrainParams,
    TuneParams,
)
from components.frameworks import framework_names


class _FrameworkParams(BaseModel):
    """The framework choice, a base of its own so that it is the first field."""

    framework: FrameworkChoice = Field(
        default=framework_names()[0], description="Training framework.",
        json_schema_extra={"choices": [*framework_names(), BOTH]})  # the CLI lists them


class PipelineParams(PushParams, CompressParams, EvaluateParams, TrainParams, TuneParams,
                     IngestParams, _FrameworkParams):
    """Every parameter of :func:`pipelines.pipeline.twinflow_pipeline`, validated.

    The bases are listed last step first: pydantic orders the fields from the
    most basic class on, so they read framework, ingest, tune, train, evaluate,
    compress, push, then the pipeline's own below. The steps' validators (e.g.
    tolerance vs min_improvement) come along with their fields.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint_root: str = Field(default="", description="Checkpoints that outlive the run, "
                                                         "for resume; '' = inside the model.")
    cluster_options: str = Field(
        default="{}", description='Training job placement as JSON, e.g. {"cpu": "4", '
                                  '"memory": "8Gi", "node_selector": {"pool": "gpu"}, '
                                  '"job_kind": "pytorchjob"}')
    ingest_options: str = Field(
        default="{}", description='Ingest settings as JSON, e.g. {"bad_rows": "skip", '
                                  '"split_method": "hash", "key_column": "id", "csv": '
                                  '{"delimiter": ";"}, "runner": "FlinkRunner", '
                                  '"pipeline_options": {"flink_master": "host:8081"}}')
    transform_options: str = Field(
        default="{}", description='Transform settings as JSON, e.g. {"numeric": {"scale": '
                                  '"minmax"}, "features": {"age": {"scale": "bucketize", '
                                  '"buckets": 5}, "city": {"encoding": "index", '
                                  '"max_vocab": 100}}}')
    experiment: str = "twinflow"
    prefer: Priority = Field(default=Priority.ACCURACY,
                             description="With --framework both: what the recommendation "
                                         "optimises.")
    run_key: str = Field(default="", description="The caller's name of the run, to find its "
                                                 "MLflow run; '' = the KFP job id.")

    def as_arguments(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline function (plain JSON values)."""
        return self.model_dump(mode="json")


def pipeline_signature(model: type[BaseModel] = PipelineParams) -> inspect.Signature:
    """The pipeline function's signature: one parameter per field of ``model``.

    KFP reads a pipeline's inputs, their types and defaults from
    ``inspect.signature``; it knows only plain types, so enums and literals
    become the type of their values and defaults are JSON values.
    """
    defaults = model().model_dump(mode="json")
    return inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[name],
                          annotation=plain_type(field.annotation))
        for name, field in model.model_fields.items()])


def plain_type(annotation: Any) -> Any:
    """``str`` for a string enum or literal, else ``annotation`` itself."""
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return type(next(iter(annotation)).value)
    return annotation


def with_model_code(params: PipelineParams) -> PipelineParams:
    """Read a ``--model`` file (or a ``module:function`` builder's package) here, on the
    user's machine: its code travels in the run's parameters (``model_code``), so every
    step and every pod builds exactly this code; ``model_ref`` keeps the file's name.
    ConfigError if the file is missing (see components.models.package for packages)."""
    from components.models.package import pack
    from components.models.user import resolve

    ref = resolve(params.model_ref)
    source = ref.source or (pack(ref.name) if ":" in ref.name else "")
    if not source:
        return params
    return params.model_copy(update={"model_ref": ref.name, "model_code": source})


def with_tune_space(params: PipelineParams) -> PipelineParams:
    """Read a ``--tune`` search.yaml here, on the user's machine, and validate it: the
    space travels as JSON in the run's parameters, so a mistake fails before any step
    runs (ConfigError naming the file and the key)."""
    if not params.tune_space or params.tune_space.lstrip().startswith("{"):
        return params
    from pathlib import Path

    from components.tune.space import load_space

    space = load_space(Path(params.tune_space))
    return params.model_copy(update={"tune_space": space.model_dump_json()})


def is_tuned(params: PipelineParams) -> bool:
    """Whether the run searches before training (the tuned pipeline's shape)."""
    return bool(params.tune_space)
