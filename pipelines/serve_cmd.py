"""`twinflow serve`: the KServe model server on this machine (127.0.0.1 only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from components.errors import TwinflowError
from components.frameworks import framework_names
from components.serve.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_ROWS,
    MAX_REQUEST_BYTES_ENV,
    MAX_REQUEST_BYTES_FLAG,
    MAX_ROWS_ENV,
    MAX_ROWS_FLAG,
)
from components.settings import get_settings


def serve(
    model: Annotated[str, typer.Option(
        help="Registered model NAME[@alias] (alias default: champion) or NAME/VERSION; "
             "default: the champion of the model that the latest pipeline run "
             "registered (of --framework, if given).")] = "",
    model_dir: Annotated[Path | None, typer.Option(
        "--model-dir", help="Serve a local exports directory instead of the registry.")] = None,
    framework: Annotated[str, typer.Option(
        "--framework", "-f", help="Without --model: the latest model of this framework "
                                  f"({', '.join(framework_names())}).")] = "",
    export: Annotated[str, typer.Option(
        help="Entry of export.json to serve (default: the raw-input entry, which takes raw "
             "rows, if the exports have one; else the preferred, compressed entry).")] = "",
    name: Annotated[str, typer.Option(help="Model name in the URLs (default: registered name).")
                    ] = "",
    port: int = 8080,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    max_request_bytes: Annotated[int, typer.Option(
        MAX_REQUEST_BYTES_FLAG, envvar=MAX_REQUEST_BYTES_ENV,
        help="Largest request body in bytes; a larger one is answered 413.")
    ] = DEFAULT_MAX_REQUEST_BYTES,
    max_rows: Annotated[int, typer.Option(
        MAX_ROWS_FLAG, envvar=MAX_ROWS_ENV,
        help="Most rows per request; more are answered 413.")] = DEFAULT_MAX_ROWS,
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (default: SQLite store in .twinflow/).")] = "",
) -> None:
    """Serve a model with KServe (V1 and V2 REST APIs) on 127.0.0.1 until Ctrl+C."""
    from components.serve.server import ServeOptions
    from components.serve.server import serve as run_server

    if model_dir is not None and model:
        typer.echo("twinflow: error: give --model or --model-dir, not both", err=True)
        raise typer.Exit(code=1)
    if model_dir is None and not model and framework and framework not in framework_names():
        typer.echo(f"twinflow: error: --framework {framework}: pick one of "
                   f"{', '.join(framework_names())}, or --model", err=True)
        raise typer.Exit(code=1)
    if model_dir is None:
        os.environ["MLFLOW_TRACKING_URI"] = (tracking_uri
                                             or get_settings().resolved_tracking_uri())
        model = model or _latest_model(framework)
    options = ServeOptions(model_dir=model_dir, model=None if model_dir else model,
                           export=export or None, name=name or None, port=port,
                           workers=workers, max_request_bytes=max_request_bytes,
                           max_rows=max_rows)
    try:
        run_server(options)
    except TwinflowError as err:
        typer.echo(f"twinflow: error: {err}", err=True)
        raise typer.Exit(code=1) from None


def _latest_model(framework: str) -> str:
    """The registered model of the newest pipeline run that registered one."""
    from components.tracking import configure, latest_registered_model

    try:
        configure()
        found = latest_registered_model(get_settings().experiment, framework)
    except TwinflowError as err:
        typer.echo(f"twinflow: error: {err}", err=True)
        raise typer.Exit(code=1) from None
    if found is None:
        which = f"{framework} " if framework else ""
        typer.echo(f"twinflow: error: no pipeline run has registered a {which}model in "
                   f"{get_settings().resolved_tracking_uri()} yet: run `twinflow run` or give "
                   "--model NAME", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"serving {found}@champion (registered by the latest pipeline run)", err=True)
    return found
