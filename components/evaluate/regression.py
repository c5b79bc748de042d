"""Regression metrics through the same library as the classifier path.

The pipeline trains classifiers only (train's adapters end in a softmax), so
nothing in the pipeline calls this yet; it exists so that a regression head, when
one is added, is scored by ``mlflow.models.evaluate(model_type="regressor")``
exactly like the classifier path is, overall and per slice, with the data set
logged as the run's input. Per-slice figures come from separate evaluations of
each slice's rows, named ``<prefix>slice_<slice>_<metric>``.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas

from components.errors import DataError

TARGET, PREDICTION = "target", "prediction"


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, name: str = "test",
                       prefix: str = "test_", slices: pd.Series | None = None
                       ) -> dict[str, float]:
    """MAE, MSE, RMSE, R², max error, ... of ``y_pred``; logged to the active run.

    ``slices`` (one label per row, e.g. from :func:`.slices.slice_labels`) adds the
    same metrics for every slice. Raises DataError when the arrays do not line up.
    """
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise DataError(f"{name}: regression targets {y_true.shape} and predictions "
                        f"{y_pred.shape} must be two non-empty 1-D arrays of one length")
    metrics = _evaluate(y_true, y_pred, name, prefix)
    if slices is not None:
        if len(slices) != len(y_true):
            raise DataError(f"{name}: {len(slices)} slice labels for {len(y_true)} rows")
        labels = slices.astype(str).to_numpy()
        for value in pd.unique(labels):
            mask = labels == value
            key = "".join(c if c.isalnum() or c in "_-." else "_" for c in value)
            metrics |= _evaluate(y_true[mask], y_pred[mask], f"{name}-{key}",
                                 f"{prefix}slice_{key}_")
    return metrics


def _evaluate(y_true: np.ndarray, y_pred: np.ndarray, name: str, prefix: str
              ) -> dict[str, float]:
    frame = pd.DataFrame({TARGET: y_true, PREDICTION: y_pred})
    dataset = from_pandas(frame, name=name, targets=TARGET, predictions=PREDICTION)
    result = mlflow.models.evaluate(data=dataset, model_type="regressor", evaluators="default",
                                    evaluator_config={"metric_prefix": prefix,
                                                      "log_model_explainability": False})
    return {k: float(v) for k, v in result.metrics.items()}
