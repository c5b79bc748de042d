"""The MLflow side of batch scoring: its own run, and the registered model it scores with."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from components.config import PredictConfig
from components.errors import DataError
from components.serve.resolve import find_version, parse_model_ref
from components.settings import get_settings
from components.tags import REGISTERED_MODEL_TAG, STEP_TAG, VERSION_FRAMEWORK_TAG, Step
from components.tracking import configure, experiment_id


def model_uri(ref: str) -> str:
    """``models:/NAME@alias`` or ``models:/NAME/VERSION`` of a ``--model`` value."""
    name, alias, version = parse_model_ref(ref)
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"


def model_framework(ref: str) -> str:
    """The framework tag of the registered version ``ref`` (which image scores it)."""
    _, found = find_version(ref)
    return str(found.tags.get(VERSION_FRAMEWORK_TAG, ""))


@contextlib.contextmanager
def predict_run(config: PredictConfig) -> Iterator[Path]:
    """An MLflow run for the scoring (FAILED if it raises) and the model downloaded for it."""
    configure()
    exp = experiment_id(get_settings().experiment)
    uri = model_uri(config.model)
    tags = {STEP_TAG: Step.PREDICT, REGISTERED_MODEL_TAG: config.model}
    with mlflow.start_run(experiment_id=exp, run_name=f"predict-{config.model}", tags=tags), \
            tempfile.TemporaryDirectory(prefix="twinflow-predict-") as tmp:
        mlflow.log_params({"model": config.model, "model_uri": uri, "data": config.data,
                           "batch_rows": config.batch_rows, "keep": ",".join(config.keep)})
        try:
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as err:
            raise DataError(f"--model {config.model!r}: cannot download {uri}: {err}") from None
        yield root
