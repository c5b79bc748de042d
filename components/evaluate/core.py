"""Evaluate: test-split metrics, curves, slices, and the blessing verdict.

Metrics come from ``mlflow.models.evaluate`` (MLflow's default classifier
evaluator) over the test split with the model's predictions.

Why mlflow.models.evaluate rather than TensorFlow Model Analysis (which installs
here, 0.52):

* Framework-neutral. TFMA imports TensorFlow and runs its evaluation as an
  Apache Beam job; a PyTorch step must not import TensorFlow (the step-torch
  image does not carry it), and TFMA loads only TensorFlow models, so PyTorch
  would go through its model-less path (a precomputed prediction column) while
  Keras went through another. MLflow evaluates a static data set with a
  predictions column, one path for both frameworks.
* Already in the stack, and writes where the results are read: the metrics, the
  evaluated data set as the run's input (lineage), a confusion matrix and a
  per-class table land in the step's MLflow run, which the UI, compare, push and
  the run summary read. TFMA writes its own protobuf results for a notebook
  viewer that nothing else here reads.
* Cost: no Beam pipeline start-up per evaluation (seconds on this 2-core
  machine), which matters since the champion is evaluated too.

TFMA's strength, sliced metrics computed in Beam over big data, is not needed for
a test split that fits in memory; slices are done here with pandas/sklearn
(:mod:`.slices`). MLflow draws ROC / PR curves only when it can call
``predict_proba`` on the model, which it finds on sklearn-style models alone, so
they come from scikit-learn (:mod:`.curves`). The project's own metric names
(``test_accuracy``, ``test_f1_macro``, ``f1_<class>`` ...; push and compare read
them) come from scikit-learn too.

Beyond ``MAX_MATRIX_CLASSES`` classes a confusion matrix's cells are drawn without
their numbers, and MLflow's evaluator (whose matrix always carries them, n² texts
at 175 dpi: 46 s for 100 classes, minutes for hundreds) is replaced by its metrics
and the evaluated data set logged directly (:func:`_summary_evaluate`).

The registered champion is scored on the same split in the same step
(:mod:`.champion`) and the gate (:mod:`.gate`) compares the two; the verdict and
its reason are logged as tags and as ``verdict.json``, so a skipped push
explains itself. Regression (:mod:`.regression`) has RMSE, MAE and R², residual
and predicted-vs-actual plots, and a gate on ``--gate-metric`` in its direction.
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
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset, from_pandas
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from components.config import EvaluateConfig, model_name_for
from components.data.dataset import (
    DatasetMetadata,
    Split,
    label_array,
    read_frame,
    read_metadata,
)
from components.evaluate import regression
from components.evaluate.champion import SAME_SPLIT, Champion, TestRows, find_champion
from components.evaluate.curves import RocPoints, curve_figures, curve_metrics, roc_points
from components.evaluate.gate import Baseline, Verdict, judge
from components.evaluate.slices import slice_column, slice_labels, slice_metrics
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec
from components.tags import (
    BLESSED_TAG,
    CHAMPION_SOURCE_TAG,
    JUDGED_AGAINST_TAG,
    TASK_TAG,
    VERDICT_TAG,
)
from components.tasks import TaskName

log = logging.getLogger(__name__)
PREDICTION = "twinflow_prediction"
DECISION_THRESHOLD = 0.5  # a binary classifier answers its positive class from p >= this
#: Classes up to which a confusion matrix shows each cell's count (beyond: unreadable,
#: and drawing the n² numbers is what made evaluate take minutes).
MAX_MATRIX_CLASSES = 30
__all__ = ["Evaluation", "Verdict", "judge", "run_evaluate", "score"]


@dataclass(frozen=True)
class Evaluation:
    """Test metrics of the candidate, its curves and slices, plus the verdict.

    Classifier fields (accuracy, confusion, classes, roc, slices) are empty for
    regression, whose figures are in ``metrics`` (test_rmse, test_mae, test_r2).
    """

    accuracy: float | None
    metrics: dict[str, float]
    confusion: list[list[int]]
    classes: list[str]
    verdict: Verdict = field(default_factory=lambda: Verdict(False, "not judged"))
    roc: RocPoints | None = None
    slices: pd.DataFrame | None = None


def run_evaluate(config: EvaluateConfig, data_dir: Path, model_dir: Path,
                 raw_dir: Path | None = None) -> Evaluation:
    """Score the model (and the champion) on the test split, judge, log to the active run.

    ``raw_dir`` is the ingested (untransformed) data set, used to name slices in
    the data's own units; without it slices come from the transformed split.
    """
    meta = read_metadata(data_dir)
    task = meta.task_object
    task.gate_metric(config.gate_metric)  # a metric the task lacks fails before any work
    frame = read_frame(data_dir, Split.TEST)
    x = frame[meta.features].to_numpy(dtype=np.float32)
    y = label_array(frame[meta.label], meta)
    adapter = get_adapter(config.framework)
    spec = ModelSpec.load(model_dir)
    answers = adapter.predict(adapter.load_model(model_dir), x, spec.output_kind)
    model_name = model_name_for(config.model_name, meta.name, config.framework)
    widths = (meta.n_classes, 1) if task.is_classifier else (1,)
    raw = read_frame(raw_dir, Split.TEST) if raw_dir is not None else None
    champion = find_champion(model_name, TestRows(x, raw, meta.classes, widths),
                             config.champion_alias)
    if not task.is_classifier:
        return _evaluate_regression(config, meta, frame, y, answers, champion, model_name,
                                    (data_dir, raw_dir))
    proba = answers
    pred = proba.argmax(axis=1)
    baseline = _baseline(champion, frame, y, meta)  # evaluated first, see _library_evaluate
    scored = score(y, pred, meta)
    _library_evaluate(frame, pred, meta, "test_")
    metrics = scored.metrics | curve_metrics(y, proba, meta.n_classes)
    if baseline is not None and baseline.source == SAME_SPLIT:
        metrics["champion_accuracy"] = baseline.metrics["test_accuracy"]
        metrics["champion_f1_macro"] = baseline.metrics["test_f1_macro"]
    verdict = judge(metrics, config, model_name, baseline, task)
    slices = (_slices(config, data_dir, raw_dir, y, pred) if config.slice_feature else None)
    roc = roc_points(y, proba, meta.classes, config.roc_class)
    evaluation = Evaluation(scored.accuracy, metrics, scored.confusion, meta.classes, verdict,
                            roc, slices)
    _track(evaluation, config, meta, model_name, y, proba)
    log.info("test accuracy %.4f; %s", scored.accuracy, verdict.reason)
    return evaluation


def _evaluate_regression(config: EvaluateConfig, meta: DatasetMetadata, frame: pd.DataFrame,
                         y: np.ndarray, pred: np.ndarray, champion: Champion | None,
                         model_name: str, dirs: tuple[Path, Path | None]) -> Evaluation:
    """RMSE/MAE/R², the champion's on the same rows, the gate, slices, and the residual
    plots."""
    data_dir, raw_dir = dirs
    baseline = None
    if champion is not None and champion.outputs is not None:
        theirs = champion.outputs[:, 0]
        regression.library_evaluate(frame, theirs, meta, "champion_")
        baseline = Baseline(champion.version, regression.regression_metrics(y, theirs),
                            SAME_SPLIT)
    elif champion is not None:
        baseline = _tag_baseline(champion)
    regression.library_evaluate(frame, pred, meta, "test_")
    metrics = regression.regression_metrics(y, pred)
    if baseline is not None and baseline.source == SAME_SPLIT:
        metrics |= {f"champion_{k.removeprefix('test_')}": v
                    for k, v in baseline.metrics.items()}
    verdict = judge(metrics, config, model_name, baseline, meta.task_object)
    slices = (_slices(config, data_dir, raw_dir, y, pred, classifier=False)
              if config.slice_feature else None)
    evaluation = Evaluation(None, metrics, [], [], verdict, slices=slices)
    _log_verdict(evaluation, config, model_name, meta.task)
    if slices is not None:
        mlflow.log_table(slices, f"slices/{_metric_key(config.slice_feature)}.json")
    title = f"{meta.name} / {config.framework}"
    for name, fig in regression.regression_figures(y, pred, title).items():
        mlflow.log_figure(fig, name)
        plt.close(fig)
    log.info("test RMSE %.4f, R² %.4f; %s", metrics["test_rmse"], metrics["test_r2"],
             verdict.reason)
    return evaluation


def score(y_true: np.ndarray, y_pred: np.ndarray, meta: DatasetMetadata) -> Evaluation:
    """Accuracy, macro and per-class precision/recall/F1, confusion matrix (sklearn)."""
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


def _library_evaluate(frame: pd.DataFrame, pred: np.ndarray, meta: DatasetMetadata,
                      prefix: str) -> dict[str, float]:
    """mlflow.models.evaluate on the split with ``pred``; its metrics are prefixed.

    MLflow writes ``per_class_metrics.csv`` without the prefix, so the champion is
    evaluated before the candidate, whose table is the one that stays. Beyond
    ``MAX_MATRIX_CLASSES`` classes see :func:`_summary_evaluate`.
    """
    classes = np.asarray(meta.classes)
    data = frame.assign(**{meta.label: classes[frame[meta.label].to_numpy()],
                           PREDICTION: classes[pred]})
    dataset = from_pandas(data, name=f"{meta.name}-test", targets=meta.label,
                                      predictions=PREDICTION)
    if meta.n_classes > MAX_MATRIX_CLASSES:
        return _summary_evaluate(dataset, frame[meta.label].to_numpy(), pred, prefix)
    config = {"log_model_explainability": False, "metric_prefix": prefix, "average": "macro",
              "label_list": list(meta.classes)}
    if meta.n_classes == 2:
        config["pos_label"] = meta.classes[1]
    result = mlflow.models.evaluate(data=dataset, model_type="classifier",
                                    evaluators="default", evaluator_config=config)
    return {k: float(v) for k, v in result.metrics.items()}


def _summary_evaluate(dataset: PandasDataset, y: np.ndarray, pred: np.ndarray,
                      prefix: str) -> dict[str, float]:
    """What mlflow.models.evaluate logs for a multiclass model, without its confusion
    matrix image (see the module docstring): its macro metrics under its names, and the
    data set as the run's input, its context the prefix as MLflow sets it."""
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    metrics = {"example_count": float(len(y)), "accuracy_score": float(accuracy_score(y, pred)),
               "recall_score": float(r), "precision_score": float(p), "f1_score": float(f)}
    metrics = {f"{prefix}{k}": v for k, v in metrics.items()}
    mlflow.log_input(dataset, context=prefix)
    mlflow.log_metrics(metrics)
    log.info("%s: more than %d classes: MLflow's evaluator (and its confusion matrix "
             "image) skipped, its metrics logged directly", dataset.name, MAX_MATRIX_CLASSES)
    return metrics


def _baseline(champion: Champion | None, frame: pd.DataFrame, y: np.ndarray,
              meta: DatasetMetadata) -> Baseline | None:
    """The champion's figures: re-evaluated on this split, else its recorded tags."""
    if champion is None:
        return None
    if champion.outputs is not None:
        out = champion.outputs
        pred = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0).astype(np.int64)
        _library_evaluate(frame, pred, meta, "champion_")
        return Baseline(champion.version, score(y, pred, meta).metrics, SAME_SPLIT)
    return _tag_baseline(champion)


def _tag_baseline(champion: Champion) -> Baseline | None:
    if not champion.tag_metrics:
        log.warning("champion v%s %s and has no test_* tags; judged as if there were none",
                    champion.version, champion.note)
        return None
    return Baseline(champion.version, champion.tag_metrics,
                    f"{champion.note}; its recorded test_* tags")


def _slices(config: EvaluateConfig, data_dir: Path, raw_dir: Path | None, y: np.ndarray,
            pred: np.ndarray, classifier: bool = True) -> pd.DataFrame:
    column = slice_column(config.slice_feature, data_dir, raw_dir, len(y))
    table = slice_metrics(slice_labels(column, config.slice_bins), y, pred, classifier)
    return table.assign(feature=config.slice_feature)


def _log_verdict(evaluation: Evaluation, config: EvaluateConfig, model_name: str,
                 task: TaskName) -> None:
    """The gate's settings, the metrics, and the verdict (tags and verdict.json)."""
    mlflow.log_params({"min_accuracy": config.min_accuracy, "tolerance": config.tolerance,
                       "min_f1_macro": config.min_f1_macro, "min_r2": config.min_r2,
                       "min_improvement": config.min_improvement,
                       "gate_metric": evaluation.verdict.gate_metric,
                       "slice_feature": config.slice_feature, "model_name": model_name})
    mlflow.log_metrics(evaluation.metrics | _slice_metric_dict(evaluation.slices))
    verdict = evaluation.verdict
    mlflow.set_tags({BLESSED_TAG: str(verdict.blessed).lower(), TASK_TAG: task.value,
                     VERDICT_TAG: verdict.reason[:5000],
                     CHAMPION_SOURCE_TAG: verdict.champion_source or "none",
                     JUDGED_AGAINST_TAG: verdict.champion_version or ""})
    mlflow.log_text(verdict.to_json(evaluation.metrics, config), "verdict.json")


def _track(evaluation: Evaluation, config: EvaluateConfig, meta: DatasetMetadata,
           model_name: str, y: np.ndarray, proba: np.ndarray) -> None:
    _log_verdict(evaluation, config, model_name, meta.task)
    if meta.n_classes == 2:
        mlflow.log_param("decision_threshold", DECISION_THRESHOLD)
    if evaluation.slices is not None:
        mlflow.log_table(evaluation.slices, f"slices/{_metric_key(config.slice_feature)}.json")
    figures = curve_figures(y, proba, meta.classes)
    figures["confusion_matrix.png"] = _confusion_figure(evaluation, config, meta)
    for name, fig in figures.items():
        mlflow.log_figure(fig, name)
        plt.close(fig)


def _slice_metric_dict(slices: pd.DataFrame | None) -> dict[str, float]:
    """``slice_<feature>_<slice>_<metric>`` for the run's metric list."""
    if slices is None:
        return {}
    out: dict[str, float] = {}
    scores = [c for c in slices.columns if c not in ("slice", "feature")]  # rows, accuracy ...
    for row in slices.to_dict("records"):
        key = f"slice_{_metric_key(str(row['feature']))}_{_metric_key(str(row['slice']))}"
        out |= {f"{key}_{name}": float(row[name]) for name in scores}
    return out


def _confusion_figure(evaluation: Evaluation, config: EvaluateConfig,
                      meta: DatasetMetadata) -> plt.Figure:
    """Counts (MLflow's own matrix is normalised per true class)."""
    display = ConfusionMatrixDisplay(np.asarray(evaluation.confusion),
                                     display_labels=meta.classes)
    fig, ax = plt.subplots(figsize=(6, 6))
    few = meta.n_classes <= MAX_MATRIX_CLASSES
    display.plot(ax=ax, colorbar=not few, include_values=few,
                 xticks_rotation="horizontal" if few else "vertical")
    if not few:
        ax.tick_params(labelsize=4)
    ax.set_title(f"{meta.name} / {config.framework}: test confusion matrix")
    return fig


def _metric_key(name: str) -> str:
    """MLflow metric names allow only some characters."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
