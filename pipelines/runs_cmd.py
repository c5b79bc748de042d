"""`twinflow runs ...`: the pipeline runs of a store (repair; listing is issue 16)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.options import TrackingOpt

runs_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Pipeline runs in the MLflow store.")


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
