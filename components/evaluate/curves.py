"""ROC and precision-recall curves from the model's class probabilities.

mlflow.models.evaluate draws these only when it can call ``predict_proba`` on
the model, which it finds on sklearn, XGBoost and CatBoost models alone; our
PyTorch and Keras networks give it class predictions. So the curves come from
scikit-learn's displays over the probabilities we already have: one curve for a
binary problem (the positive, i.e. last, class), one-vs-rest curves per class
otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)
from sklearn.preprocessing import label_binarize

from components.errors import ConfigError


@dataclass(frozen=True)
class RocPoints:
    """One-vs-rest ROC curve of one class, as KFP's ClassificationMetrics wants it."""

    label: str
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def curve_classes(classes: list[str]) -> list[int]:
    """Indices of the classes that get a curve: the positive one if binary, else all."""
    return [1] if len(classes) == 2 else list(range(len(classes)))


def curve_figures(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Figure]:
    """``roc_curve.png`` and ``precision_recall_curve.png`` (one-vs-rest per class)."""
    figures = {}
    for name, display in (("roc_curve", RocCurveDisplay),
                          ("precision_recall_curve", PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(7, 6))
        for i in curve_classes(classes):
            if (y == i).any():
                display.from_predictions(y == i, proba[:, i], name=f"class {classes[i]}", ax=ax)
        ax.set_title(f"{name.replace('_', ' ')} (one-vs-rest)" if len(classes) > 2
                     else f"{name.replace('_', ' ')} (positive class {classes[1]})")
        ax.legend(loc="lower right" if name == "roc_curve" else "lower left", fontsize=7)
        figures[f"{name}.png"] = fig
    return figures


def curve_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """ROC AUC and average precision: of the positive class if binary, else macro OvR.

    Empty when the split lacks a class (the scores are then undefined).
    """
    if len(np.unique(y)) < n_classes:
        return {}
    if n_classes == 2:
        precision, recall, cuts = precision_recall_curve(y, proba[:, 1])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return {"test_roc_auc": float(roc_auc_score(y, proba[:, 1])),
                "test_average_precision": float(average_precision_score(y, proba[:, 1])),
                # the positive-class probability cut that maximises F1 on the test split
                "test_best_f1_threshold": float(cuts[int(np.argmax(f1[:-1]))])}
    onehot = label_binarize(y, classes=list(range(n_classes)))
    return {"test_roc_auc": float(roc_auc_score(y, proba, multi_class="ovr",
                                                labels=list(range(n_classes)))),
            "test_average_precision": float(average_precision_score(onehot, proba,
                                                                    average="macro"))}


def roc_points(y: np.ndarray, proba: np.ndarray, classes: list[str], chosen: str) -> RocPoints:
    """The ROC curve of class ``chosen`` ('' = the last class: the positive one if binary)."""
    if chosen and chosen not in classes:
        raise ConfigError(f"roc_class '{chosen}' is not a class of the data set "
                          f"(classes: {', '.join(classes[:20])})")
    index = classes.index(chosen) if chosen else len(classes) - 1
    fpr, tpr, thresholds = roc_curve(y == index, proba[:, index])
    # sklearn starts at threshold +inf, which JSON (KFP metadata) cannot hold.
    return RocPoints(classes[index], fpr.tolist(), tpr.tolist(),
                     np.minimum(thresholds, 1.0).tolist())
