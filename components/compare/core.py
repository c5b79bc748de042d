"""Compare: gather both frameworks' figures from one pipeline run's MLflow step
runs and decide by the user's stated priority.

Everything is read back from MLflow, where the steps already logged it, so the
same code serves the pipeline's compare step and `twinflow compare RUN_ID`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from components.config import Priority
from components.errors import TwinflowError
from components.tracking import FRAMEWORK_TAG, STEP_TAG


@dataclass(frozen=True)
class Row:
    """One compared figure: where it is logged and which direction is better."""

    label: str
    step: str
    metric: str
    higher_is_better: bool
    scale: float = 1.0


ROWS = [
    Row("test accuracy", "evaluate", "test_accuracy", True),
    Row("macro F1", "evaluate", "test_f1_macro", True),
    Row("train time (s)", "train", "train_seconds", False),
    Row("train throughput (samples/s)", "train", "train_samples_per_second", True),
    Row("train peak memory (MiB)", "train", "peak_rss_mb", False),
    Row("fp32 model size (KiB)", "compress", "fp32_bytes", False, 1 / 1024),
    Row("int8 model size (KiB)", "compress", "int8_bytes", False, 1 / 1024),
    Row("int8 test accuracy", "compress", "int8_accuracy", True),
    Row("fp32 latency p50, batch 1 (ms)", "compress", "latency_p50_ms_fp32", False),
    Row("fp32 latency p99, batch 1 (ms)", "compress", "latency_p99_ms_fp32", False),
    Row("int8 latency p50, batch 1 (ms)", "compress", "latency_p50_ms_int8", False),
    Row("int8 latency p99, batch 1 (ms)", "compress", "latency_p99_ms_int8", False),
]
# What each framework's steps write; kept here so comparing never imports a framework.
EXPORT_FORMATS = {
    "torch": "state dict, TorchScript fp32/int8, MLflow pytorch flavor",
    "tensorflow": "Keras .keras, TFLite fp32/int8, MLflow tensorflow flavor",
}


@dataclass
class FrameworkFigures:
    """Everything compared for one framework."""

    framework: str
    values: dict[str, float | None]
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
    figures = [_figures(fw, by_step) for fw in ("torch", "tensorflow")
               if ("evaluate", fw) in by_step]
    if len(figures) < 2:
        raise TwinflowError(f"run {parent_run_id} has no evaluated {'/'.join(EXPORT_FORMATS)} "
                            "pair to compare; run with --framework both")
    return Comparison(parent_run_id, figures)


def _figures(fw: str, by_step: dict[tuple[str | None, str | None], Run]) -> FrameworkFigures:
    values: dict[str, float | None] = {}
    for row in ROWS:
        run = by_step.get((row.step, fw))
        value = run.data.metrics.get(row.metric) if run else None
        values[row.label] = None if value is None else value * row.scale
    evaluation = by_step[("evaluate", fw)]
    blessed = evaluation.data.tags.get("twinflow.blessed")
    per_class = {k.removeprefix("f1_"): v for k, v in evaluation.data.metrics.items()
                 if k.startswith("f1_")}
    return FrameworkFigures(fw, values, None if blessed is None else blessed == "true",
                            per_class)


def table(comparison: Comparison) -> pd.DataFrame:
    """Rows = figures, columns = frameworks (what the report and the CLI show)."""
    data: dict[str, list[object]] = {"figure": [r.label for r in ROWS]}
    data["figure"] += ["passed the blessing gate", "export formats"]
    for f in comparison.frameworks:
        data[f.framework] = [*(f.values[r.label] for r in ROWS),
                             {True: "yes", False: "no", None: "n/a"}[f.blessed],
                             EXPORT_FORMATS[f.framework]]
    classes = sorted(set().union(*(f.per_class_f1 for f in comparison.frameworks)))
    for c in classes:
        data["figure"].append(f"F1 class {c}")
        for f in comparison.frameworks:
            data[f.framework].append(f.per_class_f1.get(c))
    return pd.DataFrame(data)


def recommend(comparison: Comparison, prefer: Priority) -> str:
    """One line: the framework that wins on ``prefer``, and the margin that decided it."""
    a, b = comparison.frameworks[0], comparison.frameworks[1]
    score, unit, higher = _criterion(prefer)
    sa, sb = score(a), score(b)
    if sa is None or sb is None:
        return f"prefer {prefer.value}: cannot decide, a figure is missing"
    if sa == sb:
        return f"prefer {prefer.value}: tie ({sa:.4g} {unit} each)"
    win, lose = (a, b) if (sa > sb) == higher else (b, a)
    sw, sl = (sa, sb) if win is a else (sb, sa)
    margin = abs(sw - sl) * (100 if prefer is Priority.ACCURACY else 1)
    margin_unit = "points" if prefer is Priority.ACCURACY else unit
    return (f"prefer {prefer.value}: {win.framework} ({sw:.4g} {unit} vs {sl:.4g} for "
            f"{lose.framework}, a margin of {margin:.3g} {margin_unit})")


Score = Callable[[FrameworkFigures], float | None]


def _criterion(prefer: Priority) -> tuple[Score, str, bool]:
    """(score function, unit, higher is better) for a priority."""
    if prefer is Priority.ACCURACY:
        return (lambda f: f.values["test accuracy"]), "accuracy", True
    if prefer is Priority.LATENCY:
        return (lambda f: _best(f, "fp32 latency p50, batch 1 (ms)",
                                "int8 latency p50, batch 1 (ms)")), "ms p50", False
    return (lambda f: _best(f, "fp32 model size (KiB)", "int8 model size (KiB)")), "KiB", False


def _best(f: FrameworkFigures, *labels: str) -> float | None:
    values = [v for v in (f.values[label] for label in labels) if v is not None]
    return min(values) if values else None
