"""KFP wrapper of the compare step (runs when both frameworks were trained)."""

from kfp.dsl import HTML, Output

from components.images import step_component


def compare(parent_run_id: str, prefer: str, report: Output[HTML]) -> str:
    """Compare the two frameworks of this run; returns the recommendation line."""
    from pathlib import Path

    from components.compare.core import collect
    from components.compare.report import log_report
    from components.config import Priority
    from components.errors import step_errors
    from components.tags import Step
    from components.tracking import step_run

    with step_errors(Step.COMPARE), step_run(parent_run_id, Step.COMPARE):
        comparison = collect(parent_run_id)
        line, page = log_report(comparison, Priority(prefer))
        Path(report.path).write_text(page, encoding="utf-8")
        return line
    raise AssertionError("unreachable")


compare_op = step_component(compare, "base")
