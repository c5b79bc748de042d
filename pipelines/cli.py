"""The `twinflow` command line: run, compile, ui."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from components.config import Priority
from components.errors import TwinflowError, describe_validation_error
from components.settings import STEP_TIMEOUT_ENV, get_settings
from pipelines.images_cmd import images_app
from pipelines.options import TrackingOpt, all_but, with_params
from pipelines.params import PipelineParams, with_model_code, with_tune_space
from pipelines.predict_cmd import predict as predict_cmd
from pipelines.run_file import CONFIG_OPTION, PRINT_CONFIG_OPTION
from pipelines.runners import RunnerName
from pipelines.runs_cmd import runs_app
from pipelines.serve_cmd import serve as serve_cmd
from pipelines.tune_cmd import tune_app

if TYPE_CHECKING:
    from pipelines.cluster import Step

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="One ML pipeline for PyTorch and TensorFlow on KFP, tracked in MLflow.")
err_console = Console(stderr=True, soft_wrap=True)

# Options of pipeline parameters come from PipelineParams (pipelines/options.py);
# here only which fields each command exposes and the names that differ from them.
FLAGS = {"framework": ("--framework", "-f"), "source": ("--data",), "model_ref": ("--model",),
         "tune_space": ("--tune",), "tune_trials": ("--trials",)}
RUN_FIELDS = all_but("checkpoint_root", "gpus_per_worker", "cluster_options", "namespace",
                     "run_key", "model_code")
COMPILE_FIELDS = ("framework", "source", "label", "model_ref", "model_options", "epochs",
                  "workers", "gpus_per_worker", "cluster_options", "tune_space", "tune_trials",
                  "tune_tasks", "tune_storage")
TUNE_FIELDS = ("tune_space", "tune_trials", "tune_parallel", "tune_tasks", "tune_storage")
SUBMIT_FIELDS = ("framework", "experiment", "source", "label", "model_ref", "model_options",
                 "epochs", "workers", *TUNE_FIELDS)

StepTimeoutOpt = Annotated[int, typer.Option(
    "--step-timeout", envvar=STEP_TIMEOUT_ENV, min=0,
    help="Seconds each step may run before it fails naming the limit (0: none).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"twinflow: error: {message}", err=True)
    return typer.Exit(code=1)


def _params(**values: object) -> PipelineParams:
    try:
        return with_tune_space(with_model_code(PipelineParams(**values)))
    except ValidationError as err:
        raise _fail(describe_validation_error(err, "option")) from None
    except TwinflowError as err:
        raise _fail(str(err)) from None


def _read_run_file(ctx: typer.Context, path: Path | None) -> Path | None:
    """Eager (before the other options): the run file's values become their defaults,
    so that flags still win and every value is parsed and checked as a flag's is."""
    from pipelines.run_file import read_run_file

    if path is not None:
        try:
            ctx.default_map = {**(ctx.default_map or {}), **read_run_file(path, ctx)}
        except TwinflowError as err:
            raise _fail(str(err)) from None
    return path


RunFileOpt = Annotated[Path | None, typer.Option(
    CONFIG_OPTION, "-c", is_eager=True, callback=_read_run_file, dir_okay=False,
    help="YAML run file of these options by their long names ('epochs: 5', 'data: x.csv'); "
         "the command line and environment variables override it.")]
PrintConfigOpt = Annotated[bool, typer.Option(
    PRINT_CONFIG_OPTION, help="Print the effective configuration as a run file; run nothing.")]


@app.command()
@with_params(RUN_FIELDS, FLAGS)
def run(
    ctx: typer.Context,
    config: RunFileOpt = None,
    print_config: PrintConfigOpt = False,
    tracking_uri: TrackingOpt = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Step logs to a file.")] = False,
    step_timeout: StepTimeoutOpt = 0,
    runner: Annotated[RunnerName, typer.Option(
        help="Where the steps run: subprocess (this environment) or docker (each step in "
             "its image; twinflow images build first).")] = RunnerName.SUBPROCESS,
    **values: Any,
) -> None:
    """Run the whole pipeline locally through KFP's local runner."""
    from components.processes import Interrupted
    from components.tracking import ensure_reachable
    from pipelines.local import RunOptions, run_local
    from pipelines.run_file import config_yaml, log_run_config
    from pipelines.summary import collect, render

    params = _params(**values)
    if print_config:
        typer.echo(config_yaml(ctx), nl=False)
        return
    root = _checkpoint_root(params.experiment, params.source)
    params = params.model_copy(update={"checkpoint_root": str(root)})
    uri = tracking_uri or get_settings().resolved_tracking_uri()
    try:
        result = run_local(params, RunOptions(uri, quiet, step_timeout, runner))
    except TwinflowError as err:
        raise _fail(str(err)) from None
    except Interrupted as stop:
        typer.echo(f"twinflow: interrupted ({stop.signal_name}): stopped pipeline run "
                   f"{stop.run_key}, its MLflow runs marked KILLED; run the same command "
                   "with --resume to continue training from its last checkpoint", err=True)
        raise typer.Exit(code=stop.exit_code) from None
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:  # a server lost during the run: its step's line, not minutes more of retries
        ensure_reachable(uri)
    except TwinflowError as err:
        raise _fail(result.errors[0] if result.errors else str(err)) from None
    warning = log_run_config(result.run_key, params.experiment,
                             config_yaml(ctx, redact=True))
    if warning:
        typer.echo(warning, err=True)
    summary = collect(result.run_key, params.experiment)
    if summary is not None:
        render(summary, result.seconds, _ui_command(tracking_uri))
    if result.log_file:
        err_console.print(f"step logs: {result.log_file}")
    if not result.succeeded:  # the line the parent run is tagged with, if it has one
        raise _fail(summary.error if summary and summary.error else
                    result.errors[0] if result.errors else
                    "the pipeline failed; see the step logs above")


def _checkpoint_root(experiment: str, data: str) -> Path:
    """Checkpoints outlive a run (so --resume finds them): one folder per data set."""
    from components.data.sources import source_name

    return (get_settings().home / "checkpoints" / experiment / source_name(data)).resolve()


def _latest_run_url(uri: str, base: str) -> str:
    """The UI address of the newest pipeline run in the store, if any."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from components.tracking import latest_pipeline_run, ui_url

    mlflow.set_tracking_uri(uri)
    run_id = latest_pipeline_run(get_settings().experiment)
    if run_id is None:
        return ""
    exp = MlflowClient().get_run(run_id).info.experiment_id
    return ui_url(base, exp, run_id)


def _ui_command(tracking_uri: str) -> str:
    return "twinflow ui" + (f" --tracking-uri {tracking_uri}" if tracking_uri else "")


@app.command("compile")
@with_params(COMPILE_FIELDS, FLAGS)
def compile_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="IR YAML path.")] = Path(
        "pipeline.yaml"),
    **values: Any,
) -> None:
    """Compile the pipeline to KFP IR YAML (parameters become its defaults)."""
    from components.config import ClusterOptions
    from pipelines.compile import compile_pipeline

    params = _params(**values)
    try:
        ClusterOptions.model_validate_json(params.cluster_options)
    except ValidationError as err:
        raise _fail(describe_validation_error(err, "--cluster-options")) from None
    path = compile_pipeline(output, params)
    Console().print(f"wrote {path}")


@app.command()
@with_params(SUBMIT_FIELDS, FLAGS)
def submit(
    host: Annotated[str, typer.Option(envvar="KF_PIPELINES_ENDPOINT",
                                      help="KFP endpoint (default: $KF_PIPELINES_ENDPOINT).")
                    ] = "",
    token: Annotated[str, typer.Option(envvar="KF_PIPELINES_TOKEN",
                                       help="Bearer token (default: $KF_PIPELINES_TOKEN).")
                     ] = "",
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", help="MLflow URI as the cluster's steps reach it.")
    ] = "http://mlflow.twinflow.svc.cluster.local:5000",
    wait: Annotated[bool, typer.Option(help="Follow the run to its end.")] = False,
    timeout: float = 3600,
    namespace: Annotated[str, typer.Option(help="Namespace of training jobs.")] = "twinflow",
    credentials_secret: Annotated[str, typer.Option(
        help="Secret with MLFLOW_TRACKING_USERNAME/PASSWORD for the steps ('' for none).")
    ] = "mlflow-client-credentials",
    step_timeout: StepTimeoutOpt = 0,
    **values: Any,
) -> None:
    """Compile and submit the pipeline to a Kubeflow Pipelines endpoint."""
    from pipelines.submit import submit as submit_run

    params = _params(**values)
    try:
        result = submit_run(params, tracking_uri, host or None, params.experiment,
                            token or None, wait=wait, timeout=timeout, namespace=namespace,
                            credentials_secret=credentials_secret, step_timeout=step_timeout)
    except TwinflowError as err:
        raise _fail(str(err)) from None
    Console(soft_wrap=True).print(f"run {result.run_id}: {result.state} ({result.url})")
    if wait and not result.succeeded:
        raise _fail(f"run {result.run_id} ended {result.state}")


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(
        help="Parent run of a pipeline run (default: the latest).")] = "",
    tracking_uri: TrackingOpt = "",
) -> None:
    """Print a pipeline run's summary again: steps, results, registered versions and
    their model cards."""
    from mlflow.exceptions import MlflowException

    from pipelines.summary import chosen_run, collect_run, render

    try:
        summary = collect_run(chosen_run(run_id, tracking_uri))
    except (TwinflowError, MlflowException) as err:
        raise _fail(str(err)) from None
    render(summary, None, _ui_command(tracking_uri))


@app.command()
def compare(
    run_id: Annotated[str, typer.Argument(
        help="Parent run of a --framework both run (default: the latest).")] = "",
    prefer: Annotated[Priority, typer.Option(help="What the recommendation optimises.")
                      ] = Priority.ACCURACY,
    html: Annotated[Path | None, typer.Option(help="Also write the HTML report here.")] = None,
    experiment: str = "twinflow",
    tracking_uri: TrackingOpt = "",
) -> None:
    """Print the side-by-side comparison of a run that trained both frameworks."""
    from mlflow.exceptions import MlflowException

    from components.compare.core import collect, recommend, table
    from components.compare.report import charts, to_html
    from components.tracking import configure, latest_pipeline_run

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or get_settings().resolved_tracking_uri()
    try:
        configure()
        run_id = run_id or latest_pipeline_run(experiment, framework="both") or ""
        if not run_id:
            raise TwinflowError(f"no --framework both run in experiment '{experiment}'")
        comparison = collect(run_id)
    except (TwinflowError, MlflowException) as err:
        raise _fail(str(err)) from None
    frame = table(comparison)
    out = Console(soft_wrap=True)
    rich_table = Table(title=f"run {run_id}")
    for column in frame.columns:
        rich_table.add_column(str(column))
    for row in frame.itertuples(index=False):
        rich_table.add_row(*("n/a" if v is None else f"{v:.4g}" if isinstance(v, float)
                             else str(v) for v in row))
    out.print(rich_table)
    out.print(recommend(comparison, prefer))
    from pipelines.summary import collect_run

    for result in collect_run(run_id).results:  # pushed after the compare step ran
        if result.card:
            out.print(f"{result.framework} model card: {result.card}")
    if html is not None:
        html.write_text(to_html(comparison, charts(comparison), prefer), encoding="utf-8")
        out.print(f"wrote {html}")


@app.command()
def rollback(
    model: Annotated[str, typer.Option("--model", help="Registered model name.")],
    tracking_uri: TrackingOpt = "",
) -> None:
    """Move `champion` back to the previous champion (a second rollback undoes it)."""
    from mlflow.exceptions import MlflowException

    from components.push.core import rollback as swap
    from components.tracking import configure

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri or get_settings().resolved_tracking_uri()
    try:
        configure()
        champion, previous = swap(model)
    except (TwinflowError, MlflowException) as err:
        raise _fail(str(err)) from None
    Console().print(f"{model}: champion is now version {champion} "
                    f"(previous-champion: version {previous})")


cluster_app = typer.Typer(help="A local kind cluster with KFP, Trainer and MLflow.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    kserve: Annotated[bool, typer.Option(help="Also install KServe.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the commands, run nothing.")] = False,
) -> None:
    """Create the kind cluster, load the images, install KFP, Trainer and MLflow."""
    from pipelines.cluster import up_plan, urls

    _run_plan(up_plan(kserve), dry_run)
    if not dry_run:
        for name, url in urls().items():
            Console(soft_wrap=True).print(f"{name}: {url}")


@cluster_app.command("down")
def cluster_down(
    dry_run: Annotated[bool, typer.Option(help="Print the commands, run nothing.")] = False,
) -> None:
    """Delete the kind cluster."""
    from pipelines.cluster import down_plan

    _run_plan(down_plan(), dry_run)


def _run_plan(plan: list[Step], dry_run: bool) -> None:
    from pipelines.cluster import run

    if dry_run:
        for step in plan:
            typer.echo(f"# {step.why}\n{shlex.join(step.argv)}")
        return
    try:
        run(plan)
    except TwinflowError as err:
        raise _fail(str(err)) from None


@app.command()
def ui(
    tracking_uri: TrackingOpt = "",
    port: int = 5000,
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the pipeline's tracking store."""
    uri = tracking_uri or get_settings().resolved_tracking_uri()
    if uri.startswith(("http://", "https://")):
        Console().print(f"the tracking store is a server: open {uri}")
        return
    Console().print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C to stop")
    latest = _latest_run_url(uri, f"http://{host}:{port}")
    if latest:
        Console(soft_wrap=True).print(f"latest pipeline run: {latest}")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    raise typer.Exit(subprocess.call(cmd, env=env))


app.command("serve")(serve_cmd)
app.command("predict")(predict_cmd)
app.add_typer(tune_app, name="tune")
app.add_typer(runs_app, name="runs")
app.add_typer(images_app, name="images")

if __name__ == "__main__":
    app()
