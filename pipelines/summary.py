"""What a finished pipeline run left in MLflow, as the CLI's summary table."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from components.config import PushConfig
from components.frameworks import framework_names
from components.push.crown import champion_version
from components.tags import (
    BLESSED_TAG,
    CROWN_REASON_TAG,
    CROWNED_TAG,
    ERROR_TAG,
    FRAMEWORK_TAG,
    MODEL_CARD_TAG,
    MODEL_VERSION_TAG,
    RECOMMENDATION_TAG,
    REGISTERED_MODEL_TAG,
    STEP_TAG,
    TASK_TAG,
    TUNE_BEST_TRIAL_TAG,
    TUNE_VALUE_TAG,
    VERDICT_TAG,
    Step,
)
from components.tasks import get_task
from components.tracking import find_pipeline_run


@dataclass(frozen=True)
class StepRow:
    """One step's run: name, status and duration."""

    name: str
    status: str
    seconds: float | None


CHAMPION_ALIAS: str = PushConfig.model_fields["champion_alias"].default


@dataclass(frozen=True)
class FrameworkResult:
    """Headline results of one framework branch."""

    framework: str
    headline: dict[str, float]  # the task's headline test metrics (accuracy, or RMSE ...)
    blessed: bool | None
    verdict: str
    model: str | None
    card: str = ""  # the registered version's model card (artifact URI)
    tuned: str = ""  # the search's winner, when the run searched first


@dataclass(frozen=True)
class RunSummary:
    """Parent run, its steps in order, and per-framework results."""

    run_id: str
    status: str
    steps: list[StepRow]
    results: list[FrameworkResult]
    recommendation: str = ""
    error: str = ""  # a failed run's first step error (ERROR_TAG), as the CLI's last line


def chosen_run(run_id: str, tracking_uri: str) -> str:
    """``run_id``, or the latest pipeline run of the store at ``tracking_uri`` (default:
    the configured one); TwinflowError when there is none. The commands that show a run
    (show, tune show) pick it this way, after failing the runs whose local process is
    gone (so a SIGKILLed run does not show as RUNNING)."""
    import os

    from components.errors import TwinflowError
    from components.settings import get_settings
    from components.tracking import configure, fail_abandoned_runs, latest_pipeline_run

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or get_settings().resolved_tracking_uri()
    configure()
    fail_abandoned_runs(get_settings().experiment)
    run_id = run_id or latest_pipeline_run(get_settings().experiment) or ""
    if not run_id:
        raise TwinflowError(f"no pipeline run in experiment '{get_settings().experiment}'")
    return run_id


def collect(run_key: str, experiment: str) -> RunSummary | None:
    """Read the parent run of ``run_key`` and its step runs from MLflow."""
    run_id = find_pipeline_run(run_key, experiment)
    return None if run_id is None else collect_run(run_id)


def collect_run(run_id: str) -> RunSummary:
    """Read the parent run ``run_id`` and its step runs from MLflow."""
    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                                  order_by=["attributes.start_time ASC"])
    steps = [StepRow(c.info.run_name or "?", c.info.status, _seconds(c)) for c in children]
    return RunSummary(run_id, parent.info.status, steps, _results(children),
                      parent.data.tags.get(RECOMMENDATION_TAG, ""),
                      parent.data.tags.get(ERROR_TAG, ""))


def _seconds(run: Run) -> float | None:
    if run.info.end_time is None:
        return None
    return (run.info.end_time - run.info.start_time) / 1000


def framework_results(children: list[Run]) -> list[FrameworkResult]:
    """Per-framework results from a pipeline run's step runs (its evaluate and push
    runs suffice); `twinflow runs` reads many runs' steps in one search, not one each."""
    return _results(children)


def _results(children: list[Run]) -> list[FrameworkResult]:
    by_step = {(c.data.tags.get(STEP_TAG), c.data.tags.get(FRAMEWORK_TAG)): c for c in children}
    results = []
    for fw in framework_names():
        evaluation = by_step.get((Step.EVALUATE, fw))
        if evaluation is None:
            continue
        push = by_step.get((Step.PUSH, fw))
        # A step that failed after tagging its verdict (e.g. on a full disk) judged nothing.
        judged = evaluation.info.status == RunStatus.to_string(RunStatus.FINISHED)
        blessed = evaluation.data.tags.get(BLESSED_TAG) if judged else None
        verdict = (evaluation.data.tags.get(VERDICT_TAG, "") if judged
                   else f"evaluate {evaluation.info.status}")
        model = _registered(push) if push is not None else None
        task = get_task(evaluation.data.tags.get(TASK_TAG, "") or "multiclass")
        metrics = evaluation.data.metrics
        results.append(FrameworkResult(
            fw, {k: metrics[k] for k in task.headline if k in metrics},
            None if blessed is None else blessed == "true", verdict, model,
            push.data.tags.get(MODEL_CARD_TAG, "") if push is not None else "",
            _tuned(by_step.get((Step.TUNE, fw)))))
    return results


def _registered(push: Run) -> str | None:
    """The version a push registered and, truthfully, whether it is the champion: it
    may have lost to a version a concurrent run crowned, or been replaced since."""
    tags = push.data.tags
    if MODEL_VERSION_TAG not in tags:
        return None
    name, version = tags[REGISTERED_MODEL_TAG], tags[MODEL_VERSION_TAG]
    if tags.get(CROWNED_TAG, "true") != "true":
        return f"{name} v{version} registered, not champion ({tags.get(CROWN_REASON_TAG, '')})"
    now = champion_version(name, CHAMPION_ALIAS)
    if now == version:
        return f"{name} v{version} @{CHAMPION_ALIAS}"
    return f"{name} v{version} (was {CHAMPION_ALIAS}; now v{now})"


def _tuned(tune: Run | None) -> str:
    """One line on the search: which trial won, with what, out of how many."""
    if tune is None or TUNE_BEST_TRIAL_TAG not in tune.data.tags:
        return ""
    m = tune.data.metrics
    counts = ", ".join(f"{int(m[k])} {k.removeprefix('trials_')}" for k in
                       ("trials_complete", "trials_pruned", "trials_fail") if m.get(k))
    params = ", ".join(f"{k.removeprefix('best.')}={short_value(v)}"
                       for k, v in sorted(tune.data.params.items()) if k.startswith("best."))
    return (f"trial {tune.data.tags[TUNE_BEST_TRIAL_TAG]} won ({counts}): "
            f"{tune.data.tags.get(TUNE_VALUE_TAG, '')}; {params}")


def short_value(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def render(summary: RunSummary, wall_seconds: float | None, ui_command: str,
           console: Console | None = None) -> None:
    """Print the step table, the results and how to open the UI."""
    console = console or Console()
    table = Table(title=f"twinflow run {summary.run_id} ({summary.status})")
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for step in summary.steps:
        secs = "-" if step.seconds is None else f"{step.seconds:.1f}"
        table.add_row(step.name, step.status, secs)
    console.print(table)
    for r in summary.results:
        figures = ", ".join(f"{k.removeprefix('test_').replace('_', ' ')} {v:.4f}"
                            for k, v in r.headline.items()) or "no test metrics"
        verdict = {True: "blessed", False: "not blessed", None: "not judged"}[r.blessed]
        registered = r.model or "not registered"
        console.print(f"[bold]{r.framework}[/]: test {figures}; {verdict} ({r.verdict}); "
                      f"{registered}")
        if r.tuned:
            console.print(f"  tuned: {r.tuned} (twinflow tune show {summary.run_id})")
        if r.card:
            console.print(f"  model card: {r.card}")
    if summary.recommendation:
        console.print(f"[bold]comparison[/]: {summary.recommendation} "
                      f"(full report: twinflow compare {summary.run_id})")
    wall = f"pipeline wall time {wall_seconds:.1f}s. " if wall_seconds is not None else ""
    console.print(f"{wall}Open the MLflow UI: {ui_command}")
