"""The registered champion, scored on the candidate's own test split.

A number stored when the champion was pushed was measured on *its* run's test
split; comparing it with the candidate's is only fair if the data did not move.
So the champion is loaded from the registry (``models:/<name>@champion``, through
the pyfunc interface, which serves both the PyTorch and the TensorFlow flavor)
and predicts the very rows the candidate was scored on. Only when it cannot be
loaded or run does the gate fall back to its recorded ``test_*`` tags, and
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

log = logging.getLogger(__name__)
SAME_SPLIT = "re-evaluated on the same test split"


@dataclass(frozen=True)
class Champion:
    """The champion version and, if it could be run, its outputs on the test split."""

    version: str
    outputs: np.ndarray | None  # rows x width: class scores or one logit/value per row
    note: str  # why there are no predictions, if there are none
    tag_metrics: dict[str, float]  # its recorded test_* metrics (push copies them)


def find_champion(model_name: str, x: np.ndarray, widths: tuple[int, ...],
                  alias: str = "champion") -> Champion | None:
    """The current champion of ``model_name`` with its outputs on ``x``; None if none.

    ``widths``: the output widths a model of this data set may have (a binary
    classifier's one logit or two).
    """
    version = _version(model_name, alias)
    if version is None:
        return None
    tags = _metric_tags(version)
    uri = f"models:/{model_name}@{alias}"
    try:
        outputs = predict_outputs(uri, x, widths)
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


def _metric_tags(version: ModelVersion) -> dict[str, float]:
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
