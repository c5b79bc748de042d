"""Learning tasks: multiclass and binary classification, regression.

One class per task; what differs between tasks (the network's output width,
how its outputs become answers, the loss, the metric a run is judged on, how
the data is split) is an attribute or method of the task's class, never an
``if task ==`` at a call site. Framework code asks :func:`get_task` too.

The network's outputs and what users get back are related by an
:class:`Outputs` kind that the export manifest records, so a served model
answers probabilities (classifiers) or values in the label's units
(regression) without knowing the task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import numpy as np

from components.export.pyfunc_model import answers

log = logging.getLogger(__name__)

#: auto: more distinct numeric labels than this in the probed rows is regression.
MAX_CLASSES_AUTO = 20
#: ... and regression also needs distinct values to be this share of the rows or more.
MIN_DISTINCT_SHARE_AUTO = 0.05
#: regression splits are stratified by this many quantile bins of the label.
REGRESSION_BINS = 10


class TaskName(StrEnum):
    """What ``--task`` accepts; auto is resolved at ingest."""

    AUTO = "auto"
    MULTICLASS = "multiclass"
    BINARY = "binary"
    REGRESSION = "regression"


class Outputs(StrEnum):
    """What an exported network returns, hence how its answers are made."""

    LOGITS = "logits"  # one per class: softmax
    LOGIT = "logit"  # one, binary: sigmoid, answered as [1 - p, p]
    VALUES = "values"  # one, regression: already in the label's units

    def answers(self, outputs: np.ndarray) -> np.ndarray:
        """Class probabilities (rows x classes) or values (rows,), in float64 (computed
        where the registered MLflow model computes them too)."""
        return answers(self.value, outputs)

    @property
    def is_classifier(self) -> bool:
        """The answers are class probabilities."""
        return self is not Outputs.VALUES


@dataclass(frozen=True)
class GateMetric:
    """A test metric the blessing gate can compare, and which way is better."""

    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> float:
        """How much ``a`` is better than ``b`` (negative: worse), in the metric's units."""
        return a - b if self.higher_is_better else b - a


ACCURACY = GateMetric("test_accuracy", True)
F1_MACRO = GateMetric("test_f1_macro", True)
ROC_AUC = GateMetric("test_roc_auc", True)
RMSE = GateMetric("test_rmse", False)
MAE = GateMetric("test_mae", False)
R2 = GateMetric("test_r2", True)


class Task:
    """The shared interface; one subclass per task."""

    name: ClassVar[TaskName]
    #: The answers are classes (the label is encoded as class indices).
    is_classifier: ClassVar[bool] = True
    #: ``mlflow.models.evaluate``'s model type.
    mlflow_model_type: ClassVar[str] = "classifier"
    #: The per-epoch metric (logged as ``<metric>`` and ``val_<metric>``).
    epoch_metric: ClassVar[str] = "accuracy"
    #: Which way the epoch metric is better (what a search maximises or minimises).
    epoch_higher_is_better: ClassVar[bool] = True
    #: Metrics ``--gate-metric`` may name; the first is the default.
    gate_metrics: ClassVar[tuple[GateMetric, ...]] = (ACCURACY, F1_MACRO)
    #: The test metrics a step's KFP output and the parent run show.
    headline: ClassVar[tuple[str, ...]] = ("test_accuracy", "test_f1_macro")
    #: The blessing gate's absolute floors: (test metric, EvaluateConfig field of its minimum).
    floors: ClassVar[tuple[tuple[str, str], ...]] = (("test_accuracy", "min_accuracy"),
                                                     ("test_f1_macro", "min_f1_macro"))

    def outputs(self, n_classes: int, binary_logits: int) -> Outputs:
        """The network's output kind."""
        return Outputs.LOGITS

    def n_outputs(self, n_classes: int, binary_logits: int) -> int:
        """The network's output width."""
        return 1 if self.outputs(n_classes, binary_logits) is not Outputs.LOGITS else n_classes

    def gate_metric(self, name: str) -> GateMetric:
        """The metric named by ``--gate-metric`` ('' = the task's default)."""
        if not name:
            return self.gate_metrics[0]
        for metric in self.gate_metrics:
            if name in (metric.name, metric.name.removeprefix("test_")):
                return metric
        names = ", ".join(m.name.removeprefix("test_") for m in self.gate_metrics)
        raise ValueError(f"gate metric '{name}' does not apply to {self.name}; "
                         f"choose one of: {names}")


class Multiclass(Task):
    """One logit per class, softmax cross-entropy."""

    name = TaskName.MULTICLASS


class Binary(Task):
    """Two classes: one logit (sigmoid, binary cross-entropy) or two (softmax), the user's
    choice; ROC and PR curves are drawn for the positive (second) class."""

    name = TaskName.BINARY
    gate_metrics = (ACCURACY, F1_MACRO, ROC_AUC)

    def outputs(self, n_classes: int, binary_logits: int) -> Outputs:
        return Outputs.LOGIT if binary_logits == 1 else Outputs.LOGITS


class Regression(Task):
    """One value; the network learns the label standardised by the transform and a
    fixed last layer turns it back into the label's units."""

    name = TaskName.REGRESSION
    is_classifier = False
    mlflow_model_type = "regressor"
    epoch_metric = "rmse"
    epoch_higher_is_better = False
    gate_metrics = (RMSE, MAE, R2)
    floors = (("test_r2", "min_r2"),)
    headline = ("test_rmse", "test_mae", "test_r2")

    def outputs(self, n_classes: int, binary_logits: int) -> Outputs:
        return Outputs.VALUES


_TASKS: dict[str, Task] = {t.name.value: t for t in (Multiclass(), Binary(), Regression())}


def get_task(name: str) -> Task:
    """The task object of a resolved task name (not auto)."""
    try:
        return _TASKS[str(name)]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; choose one of: "
                         f"{', '.join(t.value for t in TaskName)}") from None


@dataclass(frozen=True)
class TaskChoice:
    """The resolved task and why (logged at ingest)."""

    task: TaskName
    reason: str


def detect_task(values: np.ndarray, numeric: bool, asked: str) -> TaskChoice:
    """Resolve ``asked`` (auto or a task) on a sample of the label's values.

    auto: a numeric label with non-integer values, or with more than
    ``MAX_CLASSES_AUTO`` distinct values that are also at least
    ``MIN_DISTINCT_SHARE_AUTO`` of the rows, is regression; otherwise two
    classes are binary and more are multiclass.
    """
    distinct = np.unique(values[~_missing(values)]) if len(values) else values
    n = len(distinct)
    if asked != TaskName.AUTO:
        return TaskChoice(TaskName(asked), f"--task {asked}")
    if numeric and n:
        floats = distinct.astype(np.float64)
        if not np.all(np.equal(np.mod(floats, 1.0), 0.0)):
            return TaskChoice(TaskName.REGRESSION, "numeric label with non-integer values")
        if n > MAX_CLASSES_AUTO and n >= MIN_DISTINCT_SHARE_AUTO * len(values):
            return TaskChoice(TaskName.REGRESSION,
                              f"numeric label with {n} distinct values in {len(values)} rows")
    kind = TaskName.BINARY if n == 2 else TaskName.MULTICLASS
    return TaskChoice(kind, f"label with {n} distinct values")


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.array([v is None for v in values], dtype=bool)
