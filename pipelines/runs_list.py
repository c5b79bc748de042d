"""`twinflow runs`: the recent pipeline runs of a store, one line each.

Three searches whatever the number of runs (the parent runs, then every evaluate
and every push step run started since the oldest of them), not one per run: the
list is read over HTTP from a tracking server too. The per-framework results are
the summary's own (:func:`pipelines.summary.framework_results`), so the list and
`twinflow show` cannot disagree on a run's metric or registered version.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from mlflow.entities import Run, RunStatus
from mlflow.store.tracking import SEARCH_MAX_RESULTS_DEFAULT
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from components.tags import KIND_TAG, PIPELINE_KIND, STEP_TAG, Step
from pipelines.summary import FrameworkResult, framework_results, short_value

# Parameters of the parent run, as the pipeline's start-run task logs them
# (components/lifecycle/component.py): the framework choice and the data set's name.
FRAMEWORK_PARAM: Final = "framework"
DATASET_PARAM: Final = "dataset"
PARENT_TAG: Final = "mlflow.parentRunId"  # MLflow's own tag of a nested run
RUNNING: Final = RunStatus.to_string(RunStatus.RUNNING)


@dataclass(frozen=True)
class RunRow:
    """One pipeline run as the list shows it."""

    run_id: str
    status: str
    framework: str
    dataset: str
    metric: str  # the task's first headline test metric, per framework
    model: str  # the registered version(s), '' if none
    started: datetime
    seconds: float | None  # None while it runs


def recent_runs(experiment: str, limit: int) -> list[RunRow]:
    """The ``limit`` newest pipeline runs of ``experiment``, newest first ([] if the
    experiment does not exist)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None or limit <= 0:
        return []
    parents = client.search_runs([exp.experiment_id],
                                 filter_string=f"tags.`{KIND_TAG}` = '{PIPELINE_KIND}'",
                                 max_results=limit, order_by=["attributes.start_time DESC"])
    if not parents:
        return []
    since = min(p.info.start_time for p in parents)
    children: dict[str, list[Run]] = defaultdict(list)
    for step in (Step.EVALUATE, Step.PUSH):
        # The steps start after their parent: those since the oldest listed parent are the
        # listed runs' (and perhaps an older run's still running, which are ignored).
        for run in client.search_runs(
                [exp.experiment_id], max_results=SEARCH_MAX_RESULTS_DEFAULT,
                filter_string=f"tags.`{STEP_TAG}` = '{step}' and "
                              f"attributes.start_time >= {since}"):
            children[run.data.tags.get(PARENT_TAG, "")].append(run)
    return [_row(p, framework_results(children[p.info.run_id])) for p in parents]


def _row(parent: Run, results: list[FrameworkResult]) -> RunRow:
    info, params = parent.info, parent.data.params
    end = info.end_time if info.status != RUNNING else None
    return RunRow(info.run_id, info.status, params.get(FRAMEWORK_PARAM, ""),
                  params.get(DATASET_PARAM, ""), _metric(results),
                  ", ".join(r.model for r in results if r.model),
                  datetime.fromtimestamp(info.start_time / 1000),
                  None if end is None else (end - info.start_time) / 1000)


def _metric(results: list[FrameworkResult]) -> str:
    """``accuracy 0.9741``; with both frameworks ``accuracy torch 0.9741, tensorflow ...``."""
    firsts = [(r.framework, *next(iter(r.headline.items()))) for r in results if r.headline]
    if not firsts:
        return ""
    name = firsts[0][1].removeprefix("test_")
    if len(firsts) == 1:
        return f"{name} {short_value(str(firsts[0][2]))}"
    return name + " " + ", ".join(f"{fw} {short_value(str(v))}" for fw, _, v in firsts)


def _duration(row: RunRow) -> str:
    seconds = row.seconds if row.seconds is not None else time.time() - row.started.timestamp()
    minutes, secs = divmod(round(seconds), 60)
    text = f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"
    return text if row.seconds is not None else f"{text} so far"


def render_runs(rows: list[RunRow], experiment: str, console: Console | None = None) -> None:
    """The runs as a table, and how to see one of them."""
    console = console or Console()
    if not rows:
        console.print(f"no pipeline runs in experiment '{experiment}'")
        return
    table = Table(title=f"pipeline runs in experiment '{experiment}', newest first")
    for column in ("run", "started", "status", "framework", "data", "test metric", "model",
                   "duration"):
        table.add_column(column, no_wrap=column in ("run", "started"),
                         justify="right" if column == "duration" else "left")
    for row in rows:
        table.add_row(row.run_id, f"{row.started:%Y-%m-%d %H:%M}", row.status, row.framework,
                      row.dataset, row.metric or "-", row.model or "-", _duration(row))
    console.print(table)
    console.print("one run's steps and results: twinflow runs show RUN_ID")
