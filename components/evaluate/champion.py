"""The registered champion, scored on the candidate's own test split.

A number stored when the champion was pushed was measured on *its* run's test
split; comparing it with the candidate's is only fair if the data did not move.
So the champion is loaded from the registry (``models:/<name>@champion``, through
the pyfunc interface, which serves both the PyTorch and the TensorFlow flavor)
and predicts the very rows the candidate was scored on. Only when it cannot be
loaded or run does the gate fall back to its recorded ``test_accuracy`` tag, and
the verdict says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.errors import DataError
from components.tags import ACCURACY_TAG

log = logging.getLogger(__name__)
SAME_SPLIT = "re-evaluated on the same test split"


@dataclass(frozen=True)
class Champion:
    """The champion version and, if it could be run, its predictions on the test split."""

    version: str
    proba: np.ndarray | None
    note: str  # why there are no predictions, if there are none
    tag_accuracy: float | None


def find_champion(model_name: str, x: np.ndarray, n_classes: int,
                  alias: str = "champion") -> Champion | None:
    """The current champion of ``model_name`` with its predictions on ``x``; None if none."""
    version = _version(model_name, alias)
    if version is None:
        return None
    tag = version.tags.get(ACCURACY_TAG)
    tag_accuracy = float(tag) if tag is not None else None
    uri = f"models:/{model_name}@{alias}"
    try:
        proba = predict_proba(uri, x, n_classes)
    except Exception as err:  # any failure to load or run it means: use the tag instead
        note = f"could not be loaded and run ({type(err).__name__}: {str(err)[:200]})"
        log.warning("champion %s v%s %s", model_name, version.version, note)
        return Champion(str(version.version), None, note, tag_accuracy)
    return Champion(str(version.version), proba, SAME_SPLIT, tag_accuracy)


def predict_proba(model_uri: str, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class scores of a logged model on ``x`` (argmax is all the gate needs of them)."""
    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(np.ascontiguousarray(x, np.float32))
    if isinstance(out, dict):  # a named-output Keras model
        out = next(iter(out.values()))
    scores = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out, dtype=np.float64)
    if scores.shape != (len(x), n_classes):
        raise DataError(f"{model_uri} returned shape {scores.shape}, expected "
                        f"({len(x)}, {n_classes}): not a model of this data set")
    return scores


def _version(model_name: str, alias: str) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
