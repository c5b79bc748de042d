"""Compare: gather both frameworks' figures from one pipeline run's MLflow step
runs and decide by the user's stated priority.

Everything is read back from MLflow, where the steps already logged it, so the
same code serves the pipeline's compare step and `twinflow compare RUN_ID`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from components.config import Priority
from components.errors import TwinflowError
from components.frameworks import framework_names, get_adapter
from components.tags import BLESSED_TAG, FRAMEWORK_TAG, STEP_TAG, Step


@dataclass(frozen=True)
class RowSpec:
    """A compared figure's display label, where it is logged and which direction is better."""

    label: str
    step: str
    metric: str
    higher_is_better: bool
    scale: float = 1.0


class Row(Enum):
    """The compared figures, in table order. Code looks a figure up by its member, so a
    reworded label only changes what is shown."""

    TEST_ACCURACY = RowSpec("test accuracy", Step.EVALUATE, "test_accuracy", True)
    F1_MACRO = RowSpec("macro F1", Step.EVALUATE, "test_f1_macro", True)
    TEST_RMSE = RowSpec("test RMSE", Step.EVALUATE, "test_rmse", False)
    TEST_MAE = RowSpec("test MAE", Step.EVALUATE, "test_mae", False)
    TEST_R2 = RowSpec("test R²", Step.EVALUATE, "test_r2", True)
    TRAIN_SECONDS = RowSpec("train time (s)", Step.TRAIN, "train_seconds", False)
    TRAIN_THROUGHPUT = RowSpec("train throughput (samples/s)", Step.TRAIN,
                               "train_samples_per_second", True)
    TRAIN_PEAK_MEMORY = RowSpec("train peak memory (MiB)", Step.TRAIN, "peak_rss_mb", False)
    FP32_SIZE = RowSpec("fp32 model size (KiB)", Step.COMPRESS, "fp32_bytes", False, 1 / 1024)
    INT8_SIZE = RowSpec("int8 model size (KiB)", Step.COMPRESS, "int8_bytes", False, 1 / 1024)
    INT8_ACCURACY = RowSpec("int8 test accuracy", Step.COMPRESS, "int8_accuracy", True)
    INT8_RMSE = RowSpec("int8 test RMSE", Step.COMPRESS, "int8_rmse", False)
    FP32_LATENCY_P50 = RowSpec("fp32 latency p50, batch 1 (ms)", Step.COMPRESS,
                               "latency_p50_ms_fp32", False)
    FP32_LATENCY_P99 = RowSpec("fp32 latency p99, batch 1 (ms)", Step.COMPRESS,
                               "latency_p99_ms_fp32", False)
    INT8_LATENCY_P50 = RowSpec("int8 latency p50, batch 1 (ms)", Step.COMPRESS,
                               "latency_p50_ms_int8", False)
    INT8_LATENCY_P99 = RowSpec("int8 latency p99, batch 1 (ms)", Step.COMPRESS,
                               "latency_p99_ms_int8", False)

    @property
    def spec(self) -> RowSpec:
        """Label, source and direction of this figure."""
        spec: RowSpec = self.value
        return spec

    @property
    def label(self) -> str:
        """What the table, the charts and the report call this figure."""
        return self.spec.label


BLESSED_LABEL = "passed the blessing gate"
FORMATS_LABEL = "export formats"


@dataclass
class FrameworkFigures:
    """Everything compared for one framework."""

    framework: str
    values: dict[Row, float | None]
    blessed: bool | None
    per_class_f1: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    """Both frameworks of one pipeline run."""

    parent_run_id: str
    frameworks: list[FrameworkFigures]

    def get(self, framework: str) -> FrameworkFigures:
        """The figures of ``framework``."""
        return next(f for f in self.frameworks if f.framework == framework)


def collect(parent_run_id: str) -> Comparison:
    """Read the step runs of ``parent_run_id``; both frameworks must have been evaluated."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    by_step = {(c.data.tags.get(STEP_TAG), c.data.tags.get(FRAMEWORK_TAG)): c for c in children}
    figures = [_figures(fw, by_step) for fw in framework_names() if (Step.EVALUATE, fw) in by_step]
    if len(figures) < 2:
        raise TwinflowError(f"run {parent_run_id} has no evaluated "
                            f"{'/'.join(framework_names())} pair to compare; run with "
                            "--framework both")
    return Comparison(parent_run_id, figures)


def _figures(fw: str, by_step: dict[tuple[str | None, str | None], Run]) -> FrameworkFigures:
    values: dict[Row, float | None] = {}
    for row in Row:
        spec = row.spec
        run = by_step.get((spec.step, fw))
        value = run.data.metrics.get(spec.metric) if run else None
        values[row] = None if value is None else value * spec.scale
    evaluation = by_step[(Step.EVALUATE, fw)]
    blessed = evaluation.data.tags.get(BLESSED_TAG)
    per_class = {k.removeprefix("f1_"): v for k, v in evaluation.data.metrics.items()
                 if k.startswith("f1_")}
    return FrameworkFigures(fw, values, None if blessed is None else blessed == "true",
                            per_class)


def table(comparison: Comparison) -> pd.DataFrame:
    """Rows = figures, columns = frameworks (what the report and the CLI show)."""
    rows = present_rows(comparison)
    data: dict[str, list[object]] = {"figure": [r.label for r in rows]}
    data["figure"] += [BLESSED_LABEL, FORMATS_LABEL]
    for f in comparison.frameworks:
        data[f.framework] = [*(f.values[r] for r in rows),
                             {True: "yes", False: "no", None: "n/a"}[f.blessed],
                             get_adapter(f.framework).export_formats]
    classes = sorted(set().union(*(f.per_class_f1 for f in comparison.frameworks)))
    for c in classes:
        data["figure"].append(f"F1 class {c}")
        for f in comparison.frameworks:
            data[f.framework].append(f.per_class_f1.get(c))
    return pd.DataFrame(data)


def present_rows(comparison: Comparison) -> list[Row]:
    """The figures some framework has (a regression run has no accuracy, and so on)."""
    return [r for r in Row if any(f.values[r] is not None for f in comparison.frameworks)]


def recommend(comparison: Comparison, prefer: Priority) -> str:
    """One line: the framework that wins on ``prefer``, and the margin that decided it."""
    a, b = comparison.frameworks[0], comparison.frameworks[1]
    score, unit, higher = _criterion(prefer, Row.TEST_ACCURACY in present_rows(comparison))
    sa, sb = score(a), score(b)
    if sa is None or sb is None:
        return f"prefer {prefer.value}: cannot decide, a figure is missing"
    if sa == sb:
        return f"prefer {prefer.value}: tie ({sa:.4g} {unit} each)"
    win, lose = (a, b) if (sa > sb) == higher else (b, a)
    sw, sl = (sa, sb) if win is a else (sb, sa)
    points = unit == "accuracy"
    margin = abs(sw - sl) * (100 if points else 1)
    margin_unit = "points" if points else unit
    return (f"prefer {prefer.value}: {win.framework} ({sw:.4g} {unit} vs {sl:.4g} for "
            f"{lose.framework}, a margin of {margin:.3g} {margin_unit})")


Score = Callable[[FrameworkFigures], float | None]


def _criterion(prefer: Priority, classifier: bool = True) -> tuple[Score, str, bool]:
    """(score function, unit, higher is better) for a priority; a regression run's
    "accuracy" is its test RMSE."""
    if prefer is Priority.ACCURACY and classifier:
        return (lambda f: f.values[Row.TEST_ACCURACY]), "accuracy", True
    if prefer is Priority.ACCURACY:
        return (lambda f: f.values[Row.TEST_RMSE]), "RMSE", False
    if prefer is Priority.LATENCY:
        return (lambda f: _best(f, Row.FP32_LATENCY_P50, Row.INT8_LATENCY_P50)), "ms p50", False
    return (lambda f: _best(f, Row.FP32_SIZE, Row.INT8_SIZE)), "KiB", False


def _best(f: FrameworkFigures, *rows: Row) -> float | None:
    """The lower of the figures present (fp32 or int8: whichever export does better)."""
    values = [v for v in (f.values[row] for row in rows) if v is not None]
    return min(values) if values else None
