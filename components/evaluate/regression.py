"""Regression metrics and plots: RMSE, MAE and R² in the label's units.

The project's names (``test_rmse``, ``test_mae``, ``test_r2``: the gate, push and
compare read them) come from scikit-learn; ``mlflow.models.evaluate``'s
regressor evaluator logs its own set beside them (``test_root_mean_squared_error``,
``test_r2_score``, ``test_max_error`` ...) with the evaluated data set as the
run's input. The residual and predicted-vs-actual plots are matplotlib figures
logged to the run.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.data.pandas_dataset import from_pandas
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from components.data.dataset import DatasetMetadata

PREDICTION = "twinflow_prediction"


def regression_metrics(y: np.ndarray, pred: np.ndarray, prefix: str = "test_") -> dict[str, float]:
    """RMSE, MAE and R² (scikit-learn) under the project's names."""
    return {f"{prefix}rmse": float(np.sqrt(mean_squared_error(y, pred))),
            f"{prefix}mae": float(mean_absolute_error(y, pred)),
            f"{prefix}r2": float(r2_score(y, pred))}


def library_evaluate(frame: pd.DataFrame, pred: np.ndarray, meta: DatasetMetadata,
                     prefix: str) -> dict[str, float]:
    """mlflow.models.evaluate (regressor) on the split with ``pred``; metrics prefixed."""
    data = frame.assign(**{PREDICTION: pred})
    dataset = from_pandas(data, name=f"{meta.name}-test", targets=meta.label,
                          predictions=PREDICTION)
    result = mlflow.models.evaluate(data=dataset, model_type="regressor", evaluators="default",
                                    evaluator_config={"log_model_explainability": False,
                                                      "metric_prefix": prefix})
    return {k: float(v) for k, v in result.metrics.items()}


def regression_figures(y: np.ndarray, pred: np.ndarray, title: str) -> dict[str, Figure]:
    """Residuals against predictions, and predicted against actual with the diagonal."""
    residual = y - pred
    fig_r, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(pred, residual, s=10, alpha=0.6)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set(xlabel="predicted", ylabel="actual - predicted", title=f"{title}: residuals")
    fig_p, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(y, pred, s=10, alpha=0.6)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set(xlabel="actual", ylabel="predicted", title=f"{title}: predicted vs actual")
    return {"residuals.png": fig_r, "predicted_vs_actual.png": fig_p}
