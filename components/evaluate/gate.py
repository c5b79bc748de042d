"""The blessing gate: absolute floors, then the comparison with the champion.

Written as plain comparisons rather than with ``mlflow.validate_evaluation_results``
and ``MetricThreshold``: MLflow's relative threshold (``min_absolute_change``)
must be positive, i.e. "beat the baseline by at least", so it cannot say
"at most ``tolerance`` worse than the champion", and its failure message does
not tell which champion number (re-evaluated or recorded) was used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from components.config import EvaluateConfig
from components.tasks import ACCURACY, GateMetric, Task, get_task

MULTICLASS = get_task("multiclass")


@dataclass(frozen=True)
class Baseline:
    """The champion's figures the candidate is compared with, and where they come from."""

    version: str
    metrics: dict[str, float]  # test_* metrics (re-evaluated, or its recorded tags)
    source: str  # "re-evaluated on the same test split" or why the recorded tag was used


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate may be pushed, and why."""

    blessed: bool
    reason: str
    champion_value: float | None = None  # the champion's gate metric
    champion_version: str | None = None
    champion_source: str = ""
    gate_metric: str = ACCURACY.name

    def to_json(self, metrics: dict[str, float], config: EvaluateConfig) -> str:
        """The verdict with the numbers and thresholds it was based on (verdict.json)."""
        thresholds = config.model_dump(include={"min_accuracy", "min_f1_macro", "min_r2",
                                                "tolerance", "min_improvement",
                                                "gate_metric"})
        headline = {k: v for k, v in metrics.items() if k in _HEADLINE}
        return json.dumps({**asdict(self), "metrics": headline, "thresholds": thresholds},
                          indent=2)


_HEADLINE = ("test_accuracy", "test_f1_macro", "test_roc_auc", "test_rmse", "test_mae",
             "test_r2")


def judge(metrics: dict[str, float], config: EvaluateConfig, model_name: str,
          champion: Baseline | None, task: Task = MULTICLASS) -> Verdict:
    """Apply the task's absolute floors, then the champion comparison on the gate metric
    (in its own direction: lower RMSE is better); all failures are named."""
    gate = task.gate_metric(config.gate_metric)
    value = metrics[gate.name]
    failures = [f"{_short(metric)} {metrics[metric]:.4f} below the minimum {floor}"
                for metric, floor in _floors(task, config) if metrics[metric] < floor]
    if champion is None:
        if failures:
            return Verdict(False, "; ".join(failures), gate_metric=gate.name)
        return Verdict(True, f"{_short(gate.name)} {value:.4f}; no champion of "
                             f"'{model_name}' yet", gate_metric=gate.name)
    theirs = champion.metrics.get(gate.name)
    if theirs is None:
        failures.append(f"champion v{champion.version} has no {gate.name} "
                        f"({champion.source}) to compare with")
        return Verdict(False, "; ".join(failures), None, champion.version, champion.source,
                       gate.name)
    passed, relative = _relative(value, theirs, gate, config, champion)
    reason = "; ".join([*failures, f"{_short(gate.name)} {value:.4f} {relative}"])
    return Verdict(not failures and passed, reason, theirs, champion.version,
                   champion.source, gate.name)


def rejudge(metrics: dict[str, float], config: EvaluateConfig, model_name: str,
            champion: Baseline, task: Task = MULTICLASS) -> Verdict:
    """The champion comparison alone, for a champion crowned after the candidate was
    judged (the floors held then and do not depend on the champion)."""
    gate = task.gate_metric(config.gate_metric)
    value, theirs = metrics.get(gate.name), champion.metrics.get(gate.name)
    if value is None or theirs is None:
        return Verdict(False, f"no recorded {gate.name} of '{model_name}' v{champion.version} "
                              "and the candidate to compare", theirs, champion.version,
                       champion.source, gate.name)
    passed, relative = _relative(value, theirs, gate, config, champion)
    return Verdict(passed, f"{_short(gate.name)} {value:.4f} {relative}", theirs,
                   champion.version, champion.source, gate.name)


def _floors(task: Task, config: EvaluateConfig) -> list[tuple[str, float]]:
    """(metric, minimum) pairs of the task's floors (EvaluateConfig fields)."""
    return [(metric, float(getattr(config, field))) for metric, field in task.floors]


def _short(metric: str) -> str:
    return metric.removeprefix("test_").replace("_", " ")


def _relative(value: float, theirs: float, gate: GateMetric, config: EvaluateConfig,
              champion: Baseline) -> tuple[bool, str]:
    """Whether ``value`` clears the champion's bar, and a line naming the bar's source."""
    if config.min_improvement > 0:
        margin, rule = -config.min_improvement, f"min_improvement {config.min_improvement}"
    else:
        margin, rule = config.tolerance, f"tolerance {config.tolerance}"
    passed = gate.better(value, theirs) >= -margin - 1e-12
    direction = "higher" if gate.higher_is_better else "lower"
    word = "clears" if passed else "misses"
    return passed, (f"{word} champion v{champion.version} {_short(gate.name)} {theirs:.4f} "
                    f"({direction} is better; {rule}; {champion.source})")
