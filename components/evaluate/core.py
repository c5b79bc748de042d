"""Evaluate: test-split metrics, a confusion matrix, and the blessing verdict.

The candidate is blessed when its accuracy clears an absolute floor and is not
worse than the registered champion's by more than a tolerance; the verdict and
its reason are logged so a skipped push explains itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from components.config import EvaluateConfig, model_name_for
from components.data.dataset import DatasetMetadata, Split, read_arrays, read_metadata
from components.frameworks import get_adapter

log = logging.getLogger(__name__)
ACCURACY_TAG = "test_accuracy"


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate may be pushed, and why."""

    blessed: bool
    reason: str
    champion_accuracy: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """Test metrics of the candidate plus the verdict."""

    accuracy: float
    metrics: dict[str, float]
    confusion: list[list[int]]
    classes: list[str]
    verdict: Verdict = field(default_factory=lambda: Verdict(False, "not judged"))


def run_evaluate(config: EvaluateConfig, data_dir: Path, model_dir: Path) -> Evaluation:
    """Score the model on the test split, judge it, log everything to the active run."""
    meta = read_metadata(data_dir)
    test = read_arrays(data_dir, Split.TEST, meta)
    adapter = get_adapter(config.framework)
    pred = adapter.predict_proba(adapter.load_model(model_dir), test.x).argmax(axis=1)
    evaluation = score(test.y, pred, meta)
    model_name = model_name_for(config.model_name, meta.name, config.framework)
    verdict = judge(evaluation.accuracy, config, model_name)
    evaluation = Evaluation(evaluation.accuracy, evaluation.metrics, evaluation.confusion,
                            evaluation.classes, verdict)
    _track(evaluation, config, meta, model_name)
    log.info("test accuracy %.4f; %s", evaluation.accuracy, verdict.reason)
    return evaluation


def score(y_true: np.ndarray, y_pred: np.ndarray, meta: DatasetMetadata) -> Evaluation:
    """Accuracy, macro and per-class precision/recall/F1, confusion matrix."""
    labels = list(range(meta.n_classes))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    metrics = {"test_accuracy": float(accuracy_score(y_true, y_pred)),
               "test_f1_macro": float(np.mean(f)),
               "test_precision_macro": float(np.mean(p)),
               "test_recall_macro": float(np.mean(r))}
    for i, name in enumerate(meta.classes):
        key = _metric_key(name)
        metrics |= {f"precision_{key}": float(p[i]), f"recall_{key}": float(r[i]),
                    f"f1_{key}": float(f[i])}
    matrix = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return Evaluation(metrics["test_accuracy"], metrics, matrix, meta.classes)


def judge(accuracy: float, config: EvaluateConfig, model_name: str) -> Verdict:
    """Apply the absolute floor and the champion comparison."""
    if accuracy < config.min_accuracy:
        return Verdict(False, f"accuracy {accuracy:.4f} below the minimum {config.min_accuracy}")
    champion = champion_accuracy(model_name)
    if champion is None:
        return Verdict(True, f"accuracy {accuracy:.4f}; no champion of '{model_name}' yet")
    if accuracy >= champion - config.tolerance:
        return Verdict(True, f"accuracy {accuracy:.4f} >= champion {champion:.4f} "
                             f"- tolerance {config.tolerance}", champion)
    return Verdict(False, f"accuracy {accuracy:.4f} < champion {champion:.4f} "
                          f"- tolerance {config.tolerance}", champion)


def champion_accuracy(model_name: str, alias: str = "champion") -> float | None:
    """Test accuracy recorded on the current champion version, or None if there is none."""
    try:
        version = MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    value = version.tags.get(ACCURACY_TAG)
    return float(value) if value is not None else None


def _track(evaluation: Evaluation, config: EvaluateConfig, meta: DatasetMetadata,
           model_name: str) -> None:
    mlflow.log_params({"min_accuracy": config.min_accuracy, "tolerance": config.tolerance,
                       "model_name": model_name})
    mlflow.log_metrics(evaluation.metrics)
    verdict = evaluation.verdict
    mlflow.set_tags({"twinflow.blessed": str(verdict.blessed).lower(),
                     "twinflow.verdict": verdict.reason})
    if verdict.champion_accuracy is not None:
        mlflow.log_metric("champion_accuracy", verdict.champion_accuracy)
    display = ConfusionMatrixDisplay(np.asarray(evaluation.confusion),
                                     display_labels=meta.classes)
    fig, ax = plt.subplots(figsize=(6, 6))
    display.plot(ax=ax, colorbar=False)
    ax.set_title(f"{meta.name} / {config.framework.value}: test confusion matrix")
    mlflow.log_figure(fig, "confusion_matrix.png")
    plt.close(fig)


def _metric_key(name: str) -> str:
    """MLflow metric names allow only some characters."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
