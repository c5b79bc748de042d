"""The `twinflow` command line: run, compile, ui."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from components.config import Framework, Precision, Priority
from components.errors import TwinflowError, describe_validation_error
from components.settings import get_settings
from pipelines.params import PipelineParams
from pipelines.serve_cmd import serve as serve_cmd

if TYPE_CHECKING:
    from pipelines.cluster import Step

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="One ML pipeline for PyTorch and TensorFlow on KFP, tracked in MLflow.")
err_console = Console(stderr=True, soft_wrap=True)

FrameworkOpt = Annotated[Framework, typer.Option("--framework", "-f", help="Training framework.")]
TrackingOpt = Annotated[str, typer.Option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: SQLite store in .twinflow/).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"twinflow: error: {message}", err=True)
    return typer.Exit(code=1)


def _params(**values: object) -> PipelineParams:
    try:
        return PipelineParams(**values)
    except ValidationError as err:
        raise _fail(describe_validation_error(err, "option")) from None


@app.command()
def run(
    framework: FrameworkOpt = Framework.TORCH,
    data: Annotated[str, typer.Option(help="CSV/Parquet file or sklearn:NAME.")] = "sklearn:digits",
    label: Annotated[str, typer.Option(help="Label column of --data.")] = "",
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 0.001,
    seed: int = 42,
    workers: Annotated[int, typer.Option(
        help="Training processes on this machine; 0 = per visible GPU.")] = 1,
    precision: Annotated[Precision, typer.Option(help="fp32, or mixed bf16 / fp16.")
                         ] = Precision.FP32,
    resume: Annotated[bool, typer.Option(help="Continue training from the last checkpoint.")
                      ] = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    ingest_options: Annotated[str, typer.Option(
        help='Ingest settings as JSON, e.g. {"bad_rows": "skip", "split_method": "hash", '
             '"key_column": "id", "csv": {"delimiter": ";"}, "runner": "FlinkRunner", '
             '"pipeline_options": {"flink_master": "host:8081"}}')] = "{}",
    transform_options: Annotated[str, typer.Option(
        help='Transform settings as JSON, e.g. {"numeric": {"scale": "minmax"}, '
             '"features": {"age": {"scale": "bucketize", "buckets": 5}, '
             '"city": {"encoding": "index", "max_vocab": 100}}}')] = "{}",
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = "",
    min_accuracy: float = 0.5,
    tolerance: Annotated[float, typer.Option(
        help="Blessed if accuracy >= champion's - tolerance.")] = 0.0,
    min_f1_macro: Annotated[float, typer.Option(help="Macro-F1 floor; 0 = none.")] = 0.0,
    min_improvement: Annotated[float, typer.Option(
        help="Blessed only if accuracy >= champion's + this.")] = 0.0,
    slice_feature: Annotated[str, typer.Option(
        help="Column of --data to slice test metrics by.")] = "",
    roc_class: Annotated[str, typer.Option(
        help="Class of the KFP ROC curve (default: the last).")] = "",
    max_accuracy_drop: Annotated[float, typer.Option(
        help="Compression gate: largest accuracy drop a variant may have (0.005 = 0.5 points).")
                                 ] = 0.005,
    pruning_sparsity: Annotated[float, typer.Option(help="Sparsity of the pruned variant.")
                                ] = 0.5,
    predictor: Annotated[str, typer.Option(
        help="InferenceService predictor: custom (the serving image) or builtin.")] = "custom",
    canary_percent: Annotated[int, typer.Option(
        help="Traffic share of the new revision; 100 = no canary.")] = 100,
    prefer: Annotated[Priority, typer.Option(
        help="With --framework both: what the recommendation optimises.")] = Priority.ACCURACY,
    experiment: str = "twinflow",
    tracking_uri: TrackingOpt = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Step logs to a file.")] = False,
) -> None:
    """Run the whole pipeline locally through KFP's local runner."""
    from pipelines.local import run_local
    from pipelines.summary import collect, render

    params = _params(framework=framework, source=data, label=label, epochs=epochs,
                     batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                     workers=workers, precision=precision, resume=resume,
                     checkpoint_root=str(_checkpoint_root(experiment, data)),
                     val_fraction=val_fraction, test_fraction=test_fraction,
                     ingest_options=ingest_options, transform_options=transform_options,
                     model_name=model_name, min_accuracy=min_accuracy, tolerance=tolerance,
                     min_f1_macro=min_f1_macro, min_improvement=min_improvement,
                     slice_feature=slice_feature, roc_class=roc_class,
                     max_accuracy_drop=max_accuracy_drop, pruning_sparsity=pruning_sparsity,
                     predictor=predictor, canary_percent=canary_percent,
                     prefer=prefer, experiment=experiment)
    uri = tracking_uri or get_settings().resolved_tracking_uri()
    try:
        result = run_local(params, uri, quiet=quiet)
    except TwinflowError as err:
        raise _fail(str(err)) from None
    os.environ["MLFLOW_TRACKING_URI"] = uri
    summary = collect(result.run_key, experiment)
    if summary is not None:
        render(summary, result.seconds, _ui_command(tracking_uri))
    if result.log_file:
        err_console.print(f"step logs: {result.log_file}")
    if not result.succeeded:
        raise _fail(result.errors[0] if result.errors else
                    "the pipeline failed; see the step logs above")


def _checkpoint_root(experiment: str, data: str) -> Path:
    """Checkpoints outlive a run (so --resume finds them): one folder per data set."""
    from components.data.sources import source_name

    return (get_settings().home / "checkpoints" / experiment / source_name(data)).resolve()


def _latest_run_url(uri: str, base: str) -> str:
    """The UI address of the newest pipeline run in the store, if any."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from components.tracking import latest_pipeline_run

    mlflow.set_tracking_uri(uri)
    run_id = latest_pipeline_run(get_settings().experiment)
    if run_id is None:
        return ""
    exp = MlflowClient().get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{exp}/runs/{run_id}"


def _ui_command(tracking_uri: str) -> str:
    return "twinflow ui" + (f" --tracking-uri {tracking_uri}" if tracking_uri else "")


@app.command("compile")
def compile_cmd(
    framework: FrameworkOpt = Framework.TORCH,
    output: Annotated[Path, typer.Option("--output", "-o", help="IR YAML path.")] = Path(
        "pipeline.yaml"),
    data: str = "sklearn:digits",
    label: str = "",
    epochs: int = 10,
    workers: int = 1,
    gpus_per_worker: int = 0,
    cluster_options: Annotated[str, typer.Option(
        help='Training job placement as JSON, e.g. {"cpu": "4", "memory": "8Gi", '
             '"node_selector": {"pool": "gpu"}, "job_kind": "pytorchjob"}')] = "{}",
) -> None:
    """Compile the pipeline to KFP IR YAML (parameters become its defaults)."""
    from components.config import ClusterOptions
    from pipelines.compile import compile_pipeline

    try:
        ClusterOptions.model_validate_json(cluster_options)
    except ValidationError as err:
        raise _fail(describe_validation_error(err, "--cluster-options")) from None
    params = _params(framework=framework, source=data, label=label, epochs=epochs,
                     workers=workers, gpus_per_worker=gpus_per_worker,
                     cluster_options=cluster_options)
    path = compile_pipeline(output, params)
    Console().print(f"wrote {path}")


@app.command()
def submit(
    framework: FrameworkOpt = Framework.TORCH,
    host: Annotated[str, typer.Option(envvar="KF_PIPELINES_ENDPOINT",
                                      help="KFP endpoint (default: $KF_PIPELINES_ENDPOINT).")
                    ] = "",
    experiment: str = "twinflow",
    token: Annotated[str, typer.Option(envvar="KF_PIPELINES_TOKEN",
                                       help="Bearer token (default: $KF_PIPELINES_TOKEN).")
                     ] = "",
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", help="MLflow URI as the cluster's steps reach it.")
    ] = "http://mlflow.twinflow.svc.cluster.local:5000",
    data: str = "sklearn:digits",
    label: str = "",
    epochs: int = 10,
    workers: int = 1,
    wait: Annotated[bool, typer.Option(help="Follow the run to its end.")] = False,
    timeout: float = 3600,
    namespace: Annotated[str, typer.Option(help="Namespace of training jobs.")] = "twinflow",
    credentials_secret: Annotated[str, typer.Option(
        help="Secret with MLFLOW_TRACKING_USERNAME/PASSWORD for the steps ('' for none).")
    ] = "mlflow-client-credentials",
) -> None:
    """Compile and submit the pipeline to a Kubeflow Pipelines endpoint."""
    from pipelines.submit import submit as submit_run

    params = _params(framework=framework, source=data, label=label, epochs=epochs,
                     workers=workers, experiment=experiment)
    try:
        result = submit_run(params, tracking_uri, host or None, experiment, token or None,
                            wait=wait, timeout=timeout, namespace=namespace,
                            credentials_secret=credentials_secret)
    except TwinflowError as err:
        raise _fail(str(err)) from None
    Console(soft_wrap=True).print(f"run {result.run_id}: {result.state} ({result.url})")
    if wait and not result.succeeded:
        raise _fail(f"run {result.run_id} ended {result.state}")


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

if __name__ == "__main__":
    app()
