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


@dataclass(frozen=True)
class Baseline:
    """The champion's figures the candidate is compared with, and where they come from."""

    version: str
    accuracy: float
    f1_macro: float | None
    source: str  # "re-evaluated on the same test split" or why the recorded tag was used


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate may be pushed, and why."""

    blessed: bool
    reason: str
    champion_accuracy: float | None = None
    champion_version: str | None = None
    champion_source: str = ""

    def to_json(self, metrics: dict[str, float], config: EvaluateConfig) -> str:
        """The verdict with the numbers and thresholds it was based on (verdict.json)."""
        thresholds = config.model_dump(include={"min_accuracy", "min_f1_macro", "tolerance",
                                                "min_improvement"})
        headline = {k: metrics[k] for k in ("test_accuracy", "test_f1_macro") if k in metrics}
        return json.dumps({**asdict(self), "metrics": headline, "thresholds": thresholds},
                          indent=2)


def judge(metrics: dict[str, float], config: EvaluateConfig, model_name: str,
          champion: Baseline | None) -> Verdict:
    """Apply the absolute floors, then the champion comparison; all failures are named."""
    accuracy, f1 = metrics["test_accuracy"], metrics["test_f1_macro"]
    failures = []
    if accuracy < config.min_accuracy:
        failures.append(f"accuracy {accuracy:.4f} below the minimum {config.min_accuracy}")
    if f1 < config.min_f1_macro:
        failures.append(f"macro F1 {f1:.4f} below the minimum {config.min_f1_macro}")
    if champion is None:
        if failures:
            return Verdict(False, "; ".join(failures))
        return Verdict(True, f"accuracy {accuracy:.4f}; no champion of '{model_name}' yet")
    relative = _relative(accuracy, config, champion)
    passed = relative.startswith(">=")
    reason = "; ".join([*failures, f"accuracy {accuracy:.4f} {relative}"])
    return Verdict(not failures and passed, reason, champion.accuracy, champion.version,
                   champion.source)


def _relative(accuracy: float, config: EvaluateConfig, champion: Baseline) -> str:
    """'>= champion ...' or '< champion ...', naming the champion's number and source."""
    if config.min_improvement > 0:
        bar, rule = (champion.accuracy + config.min_improvement,
                     f"+ min_improvement {config.min_improvement}")
    else:
        bar, rule = champion.accuracy - config.tolerance, f"- tolerance {config.tolerance}"
    sign = ">=" if accuracy >= bar - 1e-12 else "<"
    return (f"{sign} champion v{champion.version} accuracy {champion.accuracy:.4f} {rule} "
            f"({champion.source})")
