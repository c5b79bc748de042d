"""Typed step configurations.

Each KFP wrapper builds one of these from its primitive parameters, so bad
values fail in one place with a message naming the field.

A step's pipeline parameters (the ones a user sets per run) are a base class of
its config, e.g. :class:`TrainParams` of :class:`TrainConfig`: the pipeline's
``PipelineParams`` inherits them all, so a parameter's type, default, bounds and
description are written here once and reach the pipeline signature and the CLI.
Their descriptions are the CLI's help texts (hence the ``--data`` wording).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from components.frameworks import check_framework, framework_names
from components.tasks import TaskName


class Framework(StrEnum):
    """Shorthand names of the built-in framework packages, and `both`.

    What a run accepts is the registry's (components.frameworks), not this list:
    :data:`FrameworkChoice` for the pipeline (one registered framework, or `both`),
    :data:`FrameworkName` for a step (one registered framework).
    tests/test_frameworks.py checks that the shorthands and the registry agree.
    """

    TORCH = "torch"
    TENSORFLOW = "tensorflow"
    BOTH = "both"


BOTH = Framework.BOTH.value  # the pipeline's choice of every framework side by side


def frameworks_of(choice: str) -> tuple[str, ...]:
    """The frameworks a pipeline choice trains: every registered one for `both`."""
    return framework_names() if choice == BOTH else (str(choice),)


def check_choice(name: str) -> str:
    """A pydantic validator: a registered framework or `both`."""
    if name == BOTH:
        return BOTH
    try:
        return check_framework(name)
    except ValueError:
        raise ValueError(f"unknown framework '{name}'; choose one of: "
                         f"{', '.join([*framework_names(), BOTH])}") from None


def _one_framework(name: str) -> str:
    if name == BOTH:
        raise ValueError("a step runs one framework; 'both' is split by the pipeline")
    return check_framework(name)


FrameworkChoice = Annotated[str, AfterValidator(check_choice)]
FrameworkName = Annotated[str, AfterValidator(_one_framework)]


class Precision(StrEnum):
    """Training precision: fp32, or mixed precision with bf16 / fp16 compute."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Priority(StrEnum):
    """What the user cares about most when the frameworks are compared."""

    ACCURACY = "accuracy"
    LATENCY = "latency"
    SIZE = "size"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedParams(_Config):
    """The seed; one value for the split and for training, so that a run repeats."""

    seed: int = 42


class ModelNameParams(_Config):
    """The registered model's name; evaluate reads its champion, push registers it."""

    # Empty: one name per data set and framework (model_name_for).
    model_name: str = Field(default="", description="Registered model name.")


class CsvOptions(_Config):
    """How CSV files are parsed (pyarrow.csv options)."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = Field(default=True, description="False: columns are named c0, c1, ...")
    max_row_bytes: int = Field(
        default=0, ge=0, le=1 << 30,
        description="Longest CSV/JSON Lines row the reader parses (its block size); 0 = "
                    "from batch_rows (16 KiB to 1 MiB). Raise it for fields of several MB.")


DataFormat = Literal["auto", "csv", "parquet", "jsonl", "tfrecord", "images", "idx"]


class ValidationLimits(_Config):
    """When ingest's checks against a schema call the data severe (ingest and predict)."""

    drift_threshold: float = Field(default=0.1, gt=0.0, le=1.0)
    missing_spike: float = Field(default=0.1, gt=0.0, le=1.0,
                                 description="Severe if a column's missing rate grows this much.")


class IngestParams(SeedParams):
    """The ingest step's pipeline parameters: the data and its split."""

    source: str = Field(default="sklearn:digits", min_length=1,
                        description="CSV/Parquet file or sklearn:NAME.")
    # Empty: the source's own label (e.g. an sklearn data set's target).
    label: str = Field(default="", description="Label column of --data.")
    val_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    task: TaskName = Field(default=TaskName.AUTO,
                           description="auto (from the label's values), multiclass, binary or "
                                       "regression.")


class IngestConfig(IngestParams, ValidationLimits):
    """Where the data comes from, how it is read, split, validated and run."""

    format: DataFormat = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    split_method: Literal["random", "hash"] = Field(
        default="random", description="random: seeded hash of the row position; "
                                      "hash: seeded hash of key_column (stable as data grows).")
    key_column: str = ""
    stratify: bool = True
    bad_rows: Literal["fail", "skip"] = "fail"
    batch_rows: int = Field(default=524_288, ge=16, le=4_194_304)
    runner: str = Field(default="DirectRunner", min_length=1)
    pipeline_options: dict[str, Any] = Field(
        default_factory=dict, description="Passed to beam PipelineOptions, e.g. flink_master.")
    schema_source: str = Field(
        default="", description="'' = latest schema logged for this data set in the MLflow "
                                "experiment; a path or MLflow artifact URI; 'none' = infer anew.")

    @model_validator(mode="after")
    def _key_for_hash(self) -> IngestConfig:
        if self.split_method == "hash" and not self.key_column:
            raise ValueError("split_method 'hash' needs key_column")
        return self


class PredictConfig(ValidationLimits):
    """Batch scoring: which registered model, which rows, what to keep beside the answers."""

    model: str = Field(min_length=1, description="Registered NAME[@alias] or NAME/VERSION.")
    data: str = Field(min_length=1, description="A file or folder in any ingest format.")
    format: DataFormat = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    keep: list[str] = Field(default_factory=list,
                            description="Input columns written beside the answers (default: "
                                        "the row number).")
    batch_rows: int = Field(default=65_536, ge=16, le=4_194_304)


class RegressionLoss(StrEnum):
    """The regression loss, on the standardised label."""

    MSE = "mse"
    HUBER = "huber"


class ClusterOptions(_Config):
    """Placement of distributed training jobs on a cluster (ignored locally)."""

    job_kind: str = Field(default="", description="trainjob | pytorchjob | tfjob; '' = default")
    cpu: str = "1"
    memory: str = "2Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str | int]] = Field(default_factory=list)


class TrainParams(SeedParams):
    """The train step's pipeline parameters: hyper-parameters, processes, precision."""

    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    # DDP / MWMS processes; with 0 TensorFlow runs all GPUs in one MirroredStrategy process.
    workers: int = Field(default=1, ge=0, le=64,
                         description="Training processes on this machine; 0 = per visible GPU.")
    precision: Precision = Field(default=Precision.FP32, description="fp32, or mixed bf16 / fp16.")
    gpus_per_worker: int = Field(default=0, ge=0, le=16,
                                 description="GPUs per worker of a cluster training job.")
    resume: bool = Field(default=False, description="Continue training from the last checkpoint.")
    # `model_ref`, not `model`: the train step's output artifact is called model.
    model_ref: str = Field(
        default="", description="Built-in model (linear, mlp, cnn, resnet), a .py file defining "
                                "build_torch / build_tensorflow(spec, **options), or "
                                "module:function; default: cnn for images, mlp otherwise.")
    model_options: str = Field(
        default="{}", description='The model builder\'s keyword arguments as JSON, e.g. '
                                  '{"depth": 8}.')
    early_stopping_patience: int = Field(
        default=0, ge=0, le=10_000,
        description="Stop after this many epochs without a lower validation loss, keeping "
                    "the best epoch's weights; 0 = train every epoch.")
    binary_logits: int = Field(default=2, ge=1, le=2,
                               description="Binary task: 1 logit (sigmoid) or 2 (softmax).")
    regression_loss: RegressionLoss = Field(default=RegressionLoss.MSE,
                                            description="Regression loss: mse or huber.")
    # A --model file's source, read on the user's machine so that every step (and pod)
    # builds the code the run started with; not a CLI option of its own.
    model_code: str = ""

    @field_validator("model_options")
    @classmethod
    def _options_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object of the builder's keyword arguments")
        return value or "{}"


class TrainConfig(TrainParams):
    """Hyper-parameters shared by both frameworks."""

    framework: FrameworkName
    show_progress: bool = True
    cluster: ClusterOptions = Field(default_factory=ClusterOptions)

    @property
    def options(self) -> dict[str, Any]:
        """The model builder's keyword arguments."""
        parsed: dict[str, Any] = json.loads(self.model_options)
        return parsed


def train_config_from(inputs: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a step whose inputs are named as its fields (train, tune).

    A KFP component cannot take ``**kwargs``, so such a step passes its ``locals()``:
    the fields are picked by name, ``cluster_options`` (JSON) becomes ``cluster``.
    """
    fields = {k: v for k, v in inputs.items() if k in TrainConfig.model_fields}
    if inputs.get("cluster_options"):
        fields["cluster"] = ClusterOptions.model_validate_json(inputs["cluster_options"])
    return TrainConfig.model_validate(fields)


class TuneParams(_Config):
    """The tune steps' pipeline parameters: a search before train (the tuned pipeline)."""

    tune_space: str = Field(
        default="", description="A search.yaml: search the training parameters and model "
                                "options before training; '' = no search.")
    tune_trials: int = Field(default=0, ge=0, le=100_000,
                             description="Trials of the search; 0 = the search file's.")
    tune_parallel: int = Field(default=1, ge=1, le=256,
                               description="Trials at once (processes, over all tasks).")
    tune_tasks: int = Field(default=1, ge=1, le=256,
                            description="KFP tasks (pods on a cluster) the trials spread over.")
    tune_storage: str = Field(
        default="", description="Where the study lives, reached by every trial process: "
                                "a journal file path, or a database URL (sqlite:///..., "
                                "postgresql://...); '' = optuna-journal.log beside an "
                                "SQLite MLflow store.")


class EvaluateParams(ModelNameParams):
    """The evaluate step's pipeline parameters: the blessing gate's thresholds."""

    min_accuracy: float = Field(default=0.5, ge=0.0, le=1.0,
                                description="Classifiers' test accuracy floor.")
    min_r2: float = Field(default=0.0, le=1.0, description="Regression's test R² floor.")
    gate_metric: str = Field(
        default="", description="Metric compared with the champion: accuracy, f1_macro, "
                                "roc_auc (binary); rmse, mae, r2 (regression); '' = accuracy "
                                "or rmse.")
    tolerance: float = Field(
        default=0.0, ge=0.0,
        description="Blessed if the gate metric is at most this much worse than the "
                    "champion's.",
    )
    min_f1_macro: float = Field(default=0.0, ge=0.0, le=1.0,
                                description="Macro-F1 floor; 0 = none.")
    # 0: beating the champion is not required; '' slice_feature: no slices.
    min_improvement: float = Field(
        default=0.0, ge=0.0,
        description="Blessed only if the gate metric beats the champion's by this much.",
    )
    slice_feature: str = Field(default="", description="Column of --data to slice test "
                                                       "metrics by.")
    # The one-vs-rest ROC curve of the KFP output; the last class is a binary's positive one.
    roc_class: str = Field(default="", description="Class of the KFP ROC curve (default: the "
                                                   "last).")

    @model_validator(mode="after")
    def _one_relative_rule(self) -> EvaluateParams:
        if self.tolerance > 0 and self.min_improvement > 0:
            raise ValueError("set either tolerance or min_improvement, not both (tolerance: may "
                             "be worse than the champion; min_improvement: must beat it)")
        return self


class EvaluateConfig(EvaluateParams):
    """The blessing gate."""

    framework: FrameworkName
    slice_bins: int = Field(default=4, ge=2, le=20,
                            description="Quantile bins for a numeric slice column.")
    champion_alias: str = "champion"


class CompressParams(_Config):
    """The compress step's pipeline parameters: the gate and the pruned variant."""

    max_accuracy_drop: float = Field(default=0.005, ge=0.0, le=1.0,
                                     description="Compression gate: largest accuracy drop a "
                                                 "variant may have (0.005 = 0.5 points).")
    max_relative_change: float = Field(
        default=0.02, ge=0.0, le=1.0,
        description="Compression gate of regression: largest relative RMSE growth of a "
                    "variant (0.02 = 2%).")
    pruning_sparsity: float = Field(default=0.5, ge=0.0, lt=1.0,
                                    description="Sparsity of the pruned variant.")


class CompressConfig(CompressParams):
    """Compression variants and the gate that picks one (see components/compress)."""

    framework: FrameworkName
    finetune_epochs: int = Field(default=2, ge=0, le=100,
                                 description="Fine-tuning epochs while pruning.")
    finetune_learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0,
                                          description="Adam's learning rate while pruning.")
    finetune_batch_size: int = Field(default=32, ge=1, le=65_536,
                                     description="Batch size of the pruning fine-tune.")
    calibration_rows: int = Field(default=256, ge=1, description="Train rows for static int8.")
    latency_calls: int = Field(default=200, ge=5, le=100_000,
                               description="Timed batch-1 calls per variant (batch 64: 1/4).")
    latency_tie: float = Field(default=0.10, ge=0.0, le=1.0,
                               description="Batch-1 p50s within this fraction of the fastest "
                                           "passing variant's count as equal; the smaller "
                                           "file wins among them.")
    verify_atol: float = Field(default=1e-3, gt=0.0,
                               description="Largest |logit| difference of a reloaded export.")


class PushParams(ModelNameParams):
    """The push step's pipeline parameters: where and how the model is served."""

    namespace: str = Field(default="default", description="Namespace of the InferenceService.")
    # builtin: KServe's runtime for the exported format.
    predictor: Literal["custom", "builtin"] = Field(
        default="custom", description="InferenceService predictor: custom (the serving image) "
                                      "or builtin.")
    canary_percent: int = Field(
        default=100, ge=0, le=100,
        description="Traffic share of the new revision; 100 = no canary.")


class PushConfig(PushParams):
    """Registration and the serving manifest."""

    framework: FrameworkName
    champion_alias: str = "champion"
    previous_alias: str = "previous-champion"


def model_name_for(given: str, dataset: str, framework: str) -> str:
    """The registered-model name: the user's, or one per data set and framework."""
    return given or f"{dataset}-{framework}"
