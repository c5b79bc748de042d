"""Every MLflow tag key twinflow writes, defined once.

Tags are how the steps talk to each other after the fact: evaluate writes the
verdict that push, compare and the run summary read; push tags the registered
version that the next evaluate gates against. A key spelt twice drifts apart
silently (a reader just gets ``None``), so writers and readers import it from
here. Plain ``str`` constants rather than an enum: MLflow stores, filters and
returns keys as strings, and a constant drops into dict literals and
``search_runs`` filter strings unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# --- run tags (``twinflow.`` namespace, beside MLflow's own ``mlflow.*``) ---

# The pipeline (parent) run.
KIND_TAG: Final = "twinflow.kind"  # marks the parent run of a pipeline job
PIPELINE_KIND: Final = "pipeline"  # the value of KIND_TAG on a parent run
RUN_KEY_TAG: Final = "twinflow.run_key"  # the pipeline job id the exit task looks it up by
ERROR_TAG: Final = "twinflow.error"  # why a failed pipeline (or step) failed: one line
ERROR_TAG_CHARS: Final = 5000  # MLflow's limit on a tag value is 8000
OWNER_TAG: Final = "twinflow.owner"  # host:pid:start of the local process running it
RECOMMENDATION_TAG: Final = "twinflow.recommendation"  # compare's one-line verdict

# Every step run.
STEP_TAG: Final = "twinflow.step"
FRAMEWORK_TAG: Final = "twinflow.framework"  # absent on framework-neutral steps

# The ingest step run.
MODEL_TAG: Final = "twinflow.model"  # the train step's model: zoo name or the user's code
MODEL_DIGEST_TAG: Final = "twinflow.model_digest"  # sha256 of a user model file's source
DATASET_TAG: Final = "twinflow.dataset"
DATASET_DIGEST_TAG: Final = "twinflow.dataset_digest"
SCHEMA_TAG: Final = "twinflow.schema_for"  # later ingests of the data set validate against it
SCHEMA_INFERRED_TAG: Final = "twinflow.schema_inferred"
TASK_TAG: Final = "twinflow.task"  # the resolved task (--task auto is resolved at ingest)
TASK_REASON_TAG: Final = "twinflow.task_reason"  # why: the user's choice, or what was detected

# The train step run.
HARDWARE_TAG: Final = "twinflow.hardware"  # what trained: CPUs, GPUs, workers, or a cluster

# The trial runs of a search (nested under the tune step's run).
TUNE_TRIAL_TAG: Final = "twinflow.tune_trial"  # the Optuna trial's number
TUNE_STATE_TAG: Final = "twinflow.tune_state"  # TUNE_COMPLETE or TUNE_PRUNED
TUNE_COMPLETE: Final = "complete"  # the trial trained every epoch
TUNE_PRUNED: Final = "pruned"  # the pruner (or Katib's early stopping) stopped it
# The pipeline run a trial belongs to, two levels up: finishing the pipeline finds (and
# closes) a trial left RUNNING by a killed task in one query.
PIPELINE_ROOT_TAG: Final = "twinflow.pipeline_run"
# The tune step's run, the train run it fed, and the registered version.
TUNE_STUDY_TAG: Final = "twinflow.tune_study"  # the Optuna study's name
TUNE_BEST_TRIAL_TAG: Final = "twinflow.tune_best_trial"  # the winning trial's number
TUNE_VALUE_TAG: Final = "twinflow.tune_best_value"  # "<objective metric>=<value>"
TUNE_RUN_TAG: Final = "twinflow.tune_run"  # the tune step's MLflow run id

# The evaluate step run.
BLESSED_TAG: Final = "twinflow.blessed"  # "true" / "false"
VERDICT_TAG: Final = "twinflow.verdict"
CHAMPION_SOURCE_TAG: Final = "twinflow.champion_source"
# The champion version the candidate was judged against ("" for none): push re-judges
# against a champion crowned by a concurrent run after that.
JUDGED_AGAINST_TAG: Final = "twinflow.judged_against"

# The push step run.
REGISTERED_MODEL_TAG: Final = "twinflow.registered_model"
MODEL_VERSION_TAG: Final = "twinflow.model_version"
MODEL_CARD_TAG: Final = "twinflow.model_card"  # the card's artifact URI
CROWNED_TAG: Final = "twinflow.crowned"  # "true": this push moved the champion alias to it
CROWN_REASON_TAG: Final = "twinflow.crown_reason"  # why it did or did not
# The registered model that serves as a mutex while a push moves the champion alias.
LOCK_MODEL_SUFFIX: Final = ".twinflow-lock"

# --- registered model version tags (written by push, read by the next evaluate) ---

VERSION_FRAMEWORK_TAG: Final = "framework"
VERSION_DATASET_TAG: Final = "dataset"
VERSION_MODEL_TAG: Final = "model"
VERSION_MODEL_DIGEST_TAG: Final = "model_digest"
VERSION_TASK_TAG: Final = "task"
VERSION_DATASET_DIGEST_TAG: Final = "dataset_digest"
PIPELINE_RUN_TAG: Final = "pipeline_run"  # makes a retried push find its own version
# Push copies every ``test_*`` metric of evaluate onto the version under its
# metric name; the gate falls back to this one when the champion cannot be run.
ACCURACY_TAG: Final = "test_accuracy"
COMPRESSION_VARIANT_TAG: Final = "compression_variant"
COMPRESSION_FORMAT_TAG: Final = "compression_format"
COMPRESSION_BYTES_TAG: Final = "compression_bytes"
COMPRESSION_ACCURACY_TAG: Final = "compression_accuracy"
SERVING_EXPORT_TAG: Final = "serving_export"
SERVING_INPUT_TAG: Final = "serving_input"
# What the version's MLflow model takes: "raw" rows (the pyfunc with the transform
# inside) or "transformed" features (the bare network, when there is no raw export).
MODEL_INPUT_TAG: Final = "model_input"
NETWORK_MODEL_TAG: Final = "network_model_uri"  # the bare network, framework flavor


class Step(StrEnum):
    """The pipeline's steps as their runs are tagged (``STEP_TAG``) and found again."""

    INGEST = "ingest"
    TRANSFORM = "transform"
    TUNE = "tune"  # the hyperparameter search before train
    TRAIN = "train"
    EVALUATE = "evaluate"
    COMPRESS = "compress"
    PUSH = "push"
    COMPARE = "compare"
    PREDICT = "predict"  # batch scoring, a pipeline of its own
