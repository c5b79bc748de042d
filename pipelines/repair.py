"""`twinflow runs repair`: close what crashed processes left open in an MLflow store.

Every twinflow command already fails the pipeline runs of its own experiment whose
local process is gone (components.tracking.fail_abandoned_runs); this does it on
demand and also closes what no command touches: step runs left RUNNING under a
pipeline run that has ended, runs of other hosts or of a cluster that have been
RUNNING for longer than ``stale_hours``, and registry locks (components.push.crown)
of pushes that died.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from components.push.crown import abandoned_lock
from components.tags import ERROR_TAG, KIND_TAG, LOCK_MODEL_SUFFIX, PIPELINE_KIND, RUN_KEY_TAG
from components.tracking import fail_abandoned_runs, finish_pipeline_run

log = logging.getLogger(__name__)
RUNNING = RunStatus.to_string(RunStatus.RUNNING)
FAILED = RunStatus.to_string(RunStatus.FAILED)


@dataclass
class Repairs:
    """What was closed, each as one line for the user."""

    lines: list[str] = field(default_factory=list)


def repair(experiment: str, stale_hours: float = 0.0) -> Repairs:
    """Close abandoned pipeline runs, orphaned step runs and dead pushes' locks."""
    done = Repairs()
    for key in fail_abandoned_runs(experiment):
        done.lines.append(f"pipeline run {key}: its process is gone; marked FAILED")
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is not None:
        if stale_hours > 0:
            _fail_stale(experiment, _running(exp.experiment_id), stale_hours, done)
        # A trial's parent is the tune step's run: closing that one orphans the trial.
        while _close_orphans(_running(exp.experiment_id), done):
            pass
    _drop_dead_locks(done)
    return done


def _running(experiment_id: str) -> list[Run]:
    return MlflowClient().search_runs([experiment_id],
                                      filter_string=f"attributes.status = '{RUNNING}'",
                                      max_results=5000)


def _fail_stale(experiment: str, running: list[Run], hours: float, done: Repairs) -> None:
    """Pipeline runs RUNNING for longer than ``hours``, whoever ran them."""
    cutoff = (time.time() - hours * 3600) * 1000
    for run in running:
        if run.data.tags.get(KIND_TAG) == PIPELINE_KIND and run.info.start_time < cutoff:
            key = run.data.tags.get(RUN_KEY_TAG, run.info.run_id)
            finish_pipeline_run(key, experiment, False,
                                f"stale: RUNNING for over {hours:g} h; failed by runs repair")
            done.lines.append(f"pipeline run {key}: RUNNING for over {hours:g} h; marked "
                              "FAILED")


def _close_orphans(running: list[Run], done: Repairs) -> int:
    """Step runs RUNNING under a run that has ended (FAILED, with why); how many."""
    client = MlflowClient()
    parents: dict[str, str] = {}
    closed = 0
    for run in running:
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            continue
        if parent not in parents:
            parents[parent] = client.get_run(parent).info.status
        if parents[parent] != RUNNING:
            client.set_tag(run.info.run_id, ERROR_TAG,
                           f"orphaned: run {parent} above it ended "
                           f"{parents[parent]}; closed by runs repair")
            client.set_terminated(run.info.run_id, FAILED)
            done.lines.append(f"run {run.info.run_name} ({run.info.run_id}): the run it "
                              f"belongs to ended {parents[parent]}; marked FAILED")
            closed += 1
    return closed


def _drop_dead_locks(done: Repairs) -> None:
    client = MlflowClient()
    for held in client.search_registered_models(f"name LIKE '%{LOCK_MODEL_SUFFIX}'"):
        why = abandoned_lock(held)
        if why:
            client.delete_registered_model(held.name)
            done.lines.append(f"registry lock {held.name}: {why}; removed")
