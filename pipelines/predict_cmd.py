"""`twinflow predict`: batch scoring with a registered model, as a local KFP pipeline run."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from components.config import PredictConfig
from components.errors import TwinflowError, describe_validation_error
from components.frameworks import framework_names
from components.settings import get_settings


def _fail(message: str) -> typer.Exit:
    typer.echo(f"twinflow: error: {message}", err=True)
    return typer.Exit(code=1)


def predict(
    model: Annotated[str, typer.Option(
        help="Registered model NAME[@alias] (alias default: champion) or NAME/VERSION.")],
    data: Annotated[str, typer.Option(help="Rows to score: a file or folder in any ingest "
                                           "format (CSV, Parquet, JSON lines, ...).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")
                      ] = Path("predictions.parquet"),
    keep: Annotated[list[str] | None, typer.Option(
        help="Input column to write beside the answers (repeat; default: the row number).")
                    ] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per scored batch.")] = 65_536,
    data_format: Annotated[str, typer.Option("--format", help="auto, csv, parquet, jsonl, ...")
                           ] = "auto",
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (default: SQLite store in .twinflow/).")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Step logs to a file.")] = False,
    host: Annotated[str, typer.Option(
        help="Submit to this Kubeflow Pipelines endpoint instead of running locally (--data "
             "and --output are then paths in the step's pod).")] = "",
    wait: Annotated[bool, typer.Option(help="With --host: wait for the run to finish.")
                    ] = False,
) -> None:
    """Score a file with a registered model (rows validated against its training schema);
    the output appears complete or not at all."""
    from components.predict.run import model_framework
    from components.processes import Interrupted
    from pipelines.local import RunOptions, run_pipeline
    from pipelines.predict import predict_pipeline

    local = not host
    try:
        config = PredictConfig(model=model, data=str(Path(data).resolve()) if local else data,
                               keep=keep or [], batch_rows=batch_rows, format=data_format)
    except ValidationError as err:
        raise _fail(describe_validation_error(err, "option")) from None
    uri = tracking_uri or get_settings().resolved_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        framework = model_framework(model)
    except TwinflowError as err:
        raise _fail(str(err)) from None
    if framework not in framework_names():
        raise _fail(f"--model {model!r}: version has no framework tag twinflow knows "
                    f"({framework!r})")
    if not local:
        _submit(config, framework, str(output), uri, host, wait)
        return
    target = output.resolve()
    pipeline = predict_pipeline(framework)
    try:
        result = run_pipeline(
            lambda: pipeline(model=config.model, data=config.data, output=str(target),
                             keep=config.keep, batch_rows=config.batch_rows,
                             data_format=config.format),
            [framework], f"predict-{uuid.uuid4().hex[:12]}", get_settings().experiment,
            RunOptions(tracking_uri=uri, quiet=quiet))
    except Interrupted as stop:
        typer.echo(f"twinflow: interrupted ({stop.signal_name}): stopped scoring run "
                   f"{stop.run_key}, its MLflow runs marked KILLED; nothing was written to "
                   f"{target}", err=True)
        raise typer.Exit(code=stop.exit_code) from None
    if not result.succeeded:
        raise _fail(result.errors[0] if result.errors else "batch scoring failed; see the log")
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(target).metadata.num_rows
    typer.echo(f"wrote {rows:,} predictions to {target} in {result.seconds:.1f}s")


def _submit(config: PredictConfig, framework: str, output: str, tracking_uri: str, host: str,
            wait: bool) -> None:
    """Compile the scoring pipeline of ``framework`` and submit it with these arguments."""
    from pipelines.predict import compile_predict
    from pipelines.submit import Target, submit_package

    arguments = {"model": config.model, "data": config.data, "output": output,
                 "keep": config.keep, "batch_rows": config.batch_rows,
                 "data_format": config.format}
    try:
        result = submit_package(lambda path: compile_predict(path, framework), arguments,
                                f"twinflow-predict-{config.model}",
                                Target(tracking_uri, host=host, wait=wait))
    except TwinflowError as err:
        raise _fail(str(err)) from None
    typer.echo(f"submitted {result.url} ({result.state})")
    if wait and not result.succeeded:
        raise _fail(f"run {result.run_id} ended {result.state}")
