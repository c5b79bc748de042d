"""ROC and precision-recall curves from the model's class probabilities.

mlflow.models.evaluate draws these only when it can call ``predict_proba`` on
the model, which it finds on sklearn, XGBoost and CatBoost models alone; our
PyTorch and Keras networks give it class predictions. So the curves come from
scikit-learn's displays over the probabilities we already have: one curve for a
binary problem (the positive, i.e. last, class), one-vs-rest curves per class
otherwise, for at most ``MAX_CURVE_CLASSES`` classes (those with the most test rows):
hundreds of curves and legend entries take minutes to draw and cannot be told apart.
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

#: Curves drawn per figure at most; MLflow's own default for multiclass ROC/PR curves
#: (its ``max_classes_for_multiclass_roc_pr``).
MAX_CURVE_CLASSES = 10


@dataclass(frozen=True)
class RocPoints:
    """One-vs-rest ROC curve of one class, as KFP's ClassificationMetrics wants it."""

    label: str
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def curve_classes(classes: list[str], y: np.ndarray) -> list[int]:
    """Indices of the classes that get a curve: the positive one if binary, else all,
    or the ``MAX_CURVE_CLASSES`` with the most rows in ``y`` (ties: the first)."""
    if len(classes) == 2:
        return [1]
    if len(classes) <= MAX_CURVE_CLASSES:
        return list(range(len(classes)))
    support = np.bincount(y, minlength=len(classes))
    return sorted(np.argsort(-support, kind="stable")[:MAX_CURVE_CLASSES].tolist())


def curve_figures(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Figure]:
    """``roc_curve.png`` and ``precision_recall_curve.png`` (one-vs-rest per class)."""
    figures = {}
    shown = curve_classes(classes, y)
    for name, display in (("roc_curve", RocCurveDisplay),
                          ("precision_recall_curve", PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(7, 6))
        for i in shown:
            if (y == i).any():
                display.from_predictions(y == i, proba[:, i], name=f"class {classes[i]}", ax=ax)
        ax.set_title(_curve_title(name, classes, len(shown)))
        ax.legend(loc="lower right" if name == "roc_curve" else "lower left", fontsize=7)
        figures[f"{name}.png"] = fig
    return figures


def _curve_title(name: str, classes: list[str], shown: int) -> str:
    title = name.replace("_", " ")
    if len(classes) == 2:
        return f"{title} (positive class {classes[1]})"
    if shown < len(classes):
        return f"{title} (one-vs-rest; the {shown} of {len(classes)} classes with most test rows)"
    return f"{title} (one-vs-rest)"


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
