"""`twinflow runs ...`: the pipeline runs of a store: list them, show one, repair."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.options import TrackingOpt

# `twinflow runs` alone lists: the group's callback runs without a subcommand too.
runs_app = typer.Typer(no_args_is_help=False, rich_markup_mode=None,
                       help="Pipeline runs in the MLflow store (alone: the recent ones).")


@runs_app.callback(invoke_without_command=True)
def list_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs.")] = 20,
    experiment: Annotated[str, typer.Option(
        help="Experiment (default: $TWINFLOW_EXPERIMENT, else twinflow).")] = "",
    tracking_uri: TrackingOpt = "",
) -> None:
    """List the recent pipeline runs, newest first: status, framework, data, test metric,
    registered version, start time and duration."""
    if ctx.invoked_subcommand is not None:
        return
    import os

    from mlflow.exceptions import MlflowException

    from components.errors import TwinflowError
    from components.settings import get_settings
    from components.tracking import configure, fail_abandoned_runs
    from pipelines.runs_list import recent_runs, render_runs

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or get_settings().resolved_tracking_uri()
    experiment = experiment or get_settings().experiment
    try:
        configure()
        fail_abandoned_runs(experiment)  # a SIGKILLed run is not listed as RUNNING
        rows = recent_runs(experiment, limit)
    except (TwinflowError, MlflowException) as err:
        typer.echo(f"twinflow: error: {err}", err=True)
        raise typer.Exit(code=1) from None
    render_runs(rows, experiment)


@runs_app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(
        help="Parent run of a pipeline run (default: the latest).")] = "",
    tracking_uri: TrackingOpt = "",
) -> None:
    """Print one pipeline run's summary: steps, results, registered versions (as
    `twinflow show`)."""
    from pipelines.cli import show  # the same command; imported late: cli imports this

    show(run_id, tracking_uri)


@runs_app.command("repair")
def repair_cmd(
    tracking_uri: TrackingOpt = "",
    experiment: str = "twinflow",
    stale_hours: Annotated[float, typer.Option(
        min=0, help="Also fail runs of other hosts or a cluster RUNNING for longer than "
                    "this (0: only runs whose local process is gone).")] = 0.0,
) -> None:
    """Close what killed or crashed processes left open: pipeline runs whose process is
    gone, step runs under an ended pipeline run, registry locks of dead pushes."""
    import os

    from components.settings import get_settings
    from components.tracking import configure
    from pipelines.repair import repair

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or get_settings().resolved_tracking_uri()
    configure()
    done = repair(experiment, stale_hours)
    for line in done.lines:
        typer.echo(line)
    typer.echo(f"{len(done.lines)} repaired" if done.lines else "nothing to repair")
