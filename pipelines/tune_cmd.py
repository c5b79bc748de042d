"""`twinflow tune show`: a run's search as MLflow recorded it (trials, winner, plots).

Read from MLflow rather than from the Optuna storage: the tracking store is what every
user of the run can reach, and each trial's run holds its parameters and curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from components.errors import TwinflowError
from components.tags import (
    FRAMEWORK_TAG,
    STEP_TAG,
    TUNE_BEST_TRIAL_TAG,
    TUNE_STATE_TAG,
    TUNE_STUDY_TAG,
    TUNE_TRIAL_TAG,
    TUNE_VALUE_TAG,
    Step,
)
from pipelines.options import with_params
from pipelines.summary import short_value

tune_app = typer.Typer(no_args_is_help=True, help="Inspect hyper-parameter searches, or "
                                                   "write one as a Katib Experiment.")
KATIB_FIELDS = ("framework", "epochs", "batch_size", "learning_rate", "seed", "model_ref",
                "model_options")


@tune_app.command("katib")
@with_params(KATIB_FIELDS, {"framework": ("--framework", "-f"), "model_ref": ("--model",)})
def katib(
    search: Annotated[Path, typer.Argument(help="The search.yaml.")],
    data_path: Annotated[str, typer.Option(
        help="The transformed data as the trial pods see it (a directory in the pod or an "
             "MLflow artifact URI of a transform step's output).")],
    task: Annotated[str, typer.Option(help="The data's task (binary, multiclass, "
                                           "regression): picks the objective.")],
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI the trial pods reach.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Experiment YAML path.")
                      ] = Path("experiment.yaml"),
    name: Annotated[str, typer.Option(help="The Experiment's name.")] = "twinflow-search",
    namespace: str = "twinflow",
    parallel: Annotated[int, typer.Option(help="Trials at once.")] = 1,
    **values: Any,
) -> None:
    """Write the search as a Katib Experiment (kubectl apply -f it on a cluster that
    runs Katib): the same space, objective and budget, the trials on twinflow's image."""
    from pydantic import ValidationError

    from components.config import train_config_from
    from components.errors import describe_validation_error
    from components.tune.space import load_space
    from pipelines.katib import katib_experiment, write_experiment
    from pipelines.params import PipelineParams, with_model_code

    try:
        params = with_model_code(PipelineParams(**values))
        base = train_config_from(params.model_dump())
        experiment = katib_experiment(load_space(search), base, data_path, name, namespace,
                                      parallel, tracking_uri, task=task)
    except ValidationError as err:
        raise _fail(describe_validation_error(err, "option")) from None
    except TwinflowError as err:
        raise _fail(str(err)) from None
    Console(soft_wrap=True).print(f"wrote {write_experiment(experiment, output)}")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"twinflow: error: {message}", err=True)
    return typer.Exit(code=1)


@tune_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(
        help="A pipeline run (its searches) or a tune step's run; default: the latest "
             "pipeline run.")] = "",
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.")] = "",
) -> None:
    """Print each search of a run: every trial's state, objective and parameters, the
    winner, and the study's plots."""
    from mlflow.exceptions import MlflowException

    from pipelines.summary import chosen_run

    try:
        run_id = chosen_run(run_id, tracking_uri)
        tunes = tune_runs(run_id)
        if not tunes:
            raise TwinflowError(f"run {run_id} searched nothing (no tune step; run with "
                                "--tune search.yaml)")
        console = Console(soft_wrap=True)
        for tune in tunes:
            render(tune, console)
    except (TwinflowError, MlflowException) as err:
        raise _fail(str(err)) from None


def tune_runs(run_id: str) -> list[Run]:
    """The tune step runs of pipeline run ``run_id``, or that run if it is one."""
    client = MlflowClient()
    run = client.get_run(run_id)
    if run.data.tags.get(STEP_TAG) == Step.TUNE:
        return [run]
    return client.search_runs(
        [run.info.experiment_id], order_by=["attributes.start_time ASC"],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and "
                      f"tags.`{STEP_TAG}` = '{Step.TUNE}'")


def render(tune: Run, console: Console) -> None:
    """One search: its trials (the winner marked) and its plots."""
    client = MlflowClient()
    trials = client.search_runs([tune.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{tune.info.run_id}'")
    trials.sort(key=lambda r: int(r.data.tags.get(TUNE_TRIAL_TAG, "0")))
    tags = tune.data.tags
    metric = tags.get(TUNE_VALUE_TAG, "=").split("=")[0]
    best = tags.get(TUNE_BEST_TRIAL_TAG, "")
    table = Table(title=f"search {tags.get(TUNE_STUDY_TAG, '?')} "
                        f"({tags.get(FRAMEWORK_TAG, '')}, run {tune.info.run_id}, "
                        f"{tune.info.status})")
    names = sorted({k for t in trials for k in t.data.params})
    for column in ("trial", "state", metric or "objective", "epochs", *names):
        table.add_column(column)
    for t in trials:
        number = t.data.tags.get(TUNE_TRIAL_TAG, "?")
        state = t.data.tags.get(TUNE_STATE_TAG, t.info.status.lower())
        history = client.get_metric_history(t.info.run_id, metric) if metric else []
        last = f"{history[-1].value:.4f}" if history else "-"
        mark = " *" if number == best else ""
        table.add_row(f"{number}{mark}", state, last, str(len(history)),
                      *[short_value(t.data.params.get(n, "")) for n in names])
    console.print(table)
    if best:
        console.print(f"winner: trial {best} ({tags.get(TUNE_VALUE_TAG, '')})")
    plots = [a.path for folder in client.list_artifacts(tune.info.run_id)
             for a in client.list_artifacts(tune.info.run_id, folder.path)] \
        if trials else []
    for path in plots:
        console.print(f"  plot: runs:/{tune.info.run_id}/{path}")
