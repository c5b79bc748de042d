"""The three tune steps of the tuned pipeline, as plain functions over paths and JSON.

``tune-study`` opens the step's MLflow run (left RUNNING across the steps: the trials
nest under it) and plans the batches; ``tune-trials`` runs one batch, one KFP task per
batch under ``dsl.ParallelFor``; ``tune-best`` logs the study's plots and winner on the
run, closes it, and hands the winner to train as :class:`Tuned` JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from components.config import TrainConfig
from components.tags import FRAMEWORK_TAG, STEP_TAG, Step
from components.tracking import configure
from components.tune.batch import batch_study, plan_batches, run_batch
from components.tune.core import finish_study, prepare_study
from components.tune.result import TuneBatch, Tuned
from components.tune.space import parse_space
from components.tune.storage import resolve_storage

log = logging.getLogger(__name__)


def start_tune(parent_run_id: str, base: TrainConfig, space_json: str, data_dir: Path,
               storage: str, trials: int, parallel: int, tasks: int) -> list[TuneBatch]:
    """Check the space, open the tune run under the pipeline run, create (or continue)
    the study; the batches for the trial tasks. ``trials`` > 0 overrides the space's."""
    configure()
    space = parse_space(space_json, "tune_space")
    if trials > 0:
        space = space.model_copy(update={"trials": trials})
    study = prepare_study(space, base, data_dir, resolve_storage(storage))
    client = MlflowClient()
    experiment = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(experiment, run_name=f"{Step.TUNE}-{base.framework}", tags={
        MLFLOW_PARENT_RUN_ID: parent_run_id, STEP_TAG: Step.TUNE,
        FRAMEWORK_TAG: base.framework})
    client.log_param(run.info.run_id, "study", study.name)
    return plan_batches(study, run.info.run_id, parallel, tasks)


def run_tune_batch(batch: TuneBatch, data_dir: Path) -> None:
    """One trial task: its batch's trials, in its batch's processes."""
    configure()
    run_batch(batch, data_dir)


def finish_tune(batches: list[TuneBatch], data_dir: Path) -> Tuned:
    """The study's plots and winner on the tune run, which ends FINISHED (FAILED and
    re-raised when no trial completed)."""
    configure()
    first = batches[0]
    study = batch_study(first, data_dir)
    with mlflow.start_run(run_id=first.tune_run_id) as run:
        try:
            best = finish_study(study)
        except Exception:
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            raise
        tuned = Tuned(study=study.name, trial=best.best_trial, metric=study.metric,
                      value=best.best_value, params=best.best_params,
                      tune_run_id=run.info.run_id)
        mlflow.log_params({f"best.{k}": v for k, v in best.best_params.items()})
        mlflow.log_metric(f"best_{study.metric}", best.best_value)
        mlflow.set_tags(tuned.version_tags())
    log.info("study %s: trial %d won with %s=%.4f", study.name, tuned.trial, tuned.metric,
             tuned.value)
    return tuned
