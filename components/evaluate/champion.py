"""The registered champion, scored on the candidate's own test split.

A number stored when the champion was pushed was measured on *its* run's test
split; comparing it with the candidate's is only fair if the data did not move.
So the champion is loaded from the registry (``models:/<name>@champion``, through
the pyfunc interface) and predicts the very rows the candidate was scored on: the
raw test rows for a version whose MLflow model takes raw rows (its own fitted
transform inside, so a re-fitted transform cannot skew it), the transformed ones
for a version registered as the bare network (before raw-rows models existed).
Only when it cannot be loaded or run does the gate fall back to its recorded
``test_*`` tags, and the verdict says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.errors import DataError
from components.export.pyfunc_model import PREDICTION_COLUMN, PROBABILITY_PREFIX
from components.tags import MODEL_INPUT_TAG

log = logging.getLogger(__name__)
SAME_SPLIT = "re-evaluated on the same test split"


@dataclass(frozen=True)
class Champion:
    """The champion version and, if it could be run, its outputs on the test split."""

    version: str
    outputs: np.ndarray | None  # rows x width: class scores or one logit/value per row
    note: str  # why there are no predictions, if there are none
    tag_metrics: dict[str, float]  # its recorded test_* metrics (push copies them)


@dataclass(frozen=True)
class TestRows:
    """The candidate's test split, as each kind of champion takes it."""

    x: np.ndarray  # transformed features
    raw: pd.DataFrame | None  # the same rows raw (None: not available)
    classes: list[str]  # [] for regression
    widths: tuple[int, ...]  # output widths a model of this data set may have


def find_champion(model_name: str, rows: TestRows,
                  alias: str = "champion") -> Champion | None:
    """The current champion of ``model_name`` with its outputs on ``rows``; None if none."""
    version = _version(model_name, alias)
    if version is None:
        return None
    tags = metric_tags(version)
    uri = f"models:/{model_name}@{alias}"
    try:
        outputs = (_raw_outputs(uri, rows) if version.tags.get(MODEL_INPUT_TAG) == "raw"
                   else predict_outputs(uri, rows.x, rows.widths))
    except Exception as err:  # any failure to load or run it means: use the tags instead
        note = f"could not be loaded and run ({type(err).__name__}: {str(err)[:200]})"
        log.warning("champion %s v%s %s", model_name, version.version, note)
        return Champion(str(version.version), None, note, tags)
    return Champion(str(version.version), outputs, SAME_SPLIT, tags)


def predict_outputs(model_uri: str, x: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """A logged model's outputs on ``x`` as rows x width (the gate needs only their
    argmax, sign or value)."""
    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(np.ascontiguousarray(x, np.float32))
    if isinstance(out, dict):  # a named-output Keras model
        out = next(iter(out.values()))
    scores = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out, dtype=np.float64)
    scores = scores.reshape(len(scores), -1) if scores.ndim == 1 else scores
    if scores.shape[0] != len(x) or scores.shape[1] not in widths:
        raise DataError(f"{model_uri} returned shape {scores.shape}, expected "
                        f"({len(x)}, {' or '.join(map(str, widths))}): not a model of this "
                        "data set")
    return scores


def _raw_outputs(model_uri: str, rows: TestRows) -> np.ndarray:
    """A raw-rows model's answers on the raw test rows: class probabilities in the data
    set's class order, or values (one column). Called through the model's own predict,
    past MLflow's signature check: ingest stores integers as floats."""
    if rows.raw is None:
        raise DataError("the champion takes raw rows and this evaluation has none")
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    frame = model.predict(None, rows.raw)
    columns = ([f"{PROBABILITY_PREFIX}{c}" for c in rows.classes] if rows.classes
               else [PREDICTION_COLUMN])
    absent = [c for c in columns if c not in frame.columns]
    if absent or len(frame) != len(rows.raw):
        raise DataError(f"{model_uri} answered columns {list(frame.columns)[:8]} for "
                        f"{len(frame)} rows, expected {columns[:8]} for {len(rows.raw)}: "
                        "not a model of this data set")
    return frame[columns].to_numpy(dtype=np.float64)


def metric_tags(version: ModelVersion) -> dict[str, float]:
    out = {}
    for key, value in version.tags.items():
        if key.startswith("test_"):
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def _version(model_name: str, alias: str) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
