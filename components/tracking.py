"""MLflow tracking shared by every step: one parent run per pipeline run, one
nested run per step, so the MLflow UI shows the pipeline as a tree.

The parent run is created by the pipeline's first task and looked up by the
pipeline job id (tag ``RUN_KEY_TAG``, see components.tags) by the exit task,
which KFP does not let depend on other tasks.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import filelock
import mlflow
import requests
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)
from mlflow.tracking import MlflowClient

from components.errors import TrackingError, error_line, lost_connection
from components.processes import Interrupted, gone, orphaned
from components.settings import get_settings
from components.tags import (
    ERROR_TAG,
    ERROR_TAG_CHARS,
    FRAMEWORK_TAG,
    KIND_TAG,
    OWNER_TAG,
    PIPELINE_KIND,
    PIPELINE_ROOT_TAG,
    REGISTERED_MODEL_TAG,
    RUN_KEY_TAG,
    STEP_TAG,
    Step,
)

log = logging.getLogger(__name__)
# MLflow's experiment kind (the UI's "GenAI apps & agents" / "Machine learning" choice),
# the tag and value its UI writes (mlflow/server/js: setExperimentTag
# "mlflow.experimentKind", ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# MLflow 3.17's UI ignores that tag (the feature flag that makes the sidebar's GenAI /
# Model training switch decide is on): a page opens on model training only with this
# query, else on the browser's last choice, GenAI's overview at first (see ui_url).
UI_TRAINING_QUERY = "workflowType=machine_learning"
REQUEST_TIMEOUT = 30  # seconds without an answer before a tracking request is retried
STORE_LOCK_SECONDS = 300  # a first creation with all migrations takes a few seconds


def configure() -> str:
    """Point MLflow at the configured store after checking it can be reached."""
    uri = get_settings().resolved_tracking_uri()
    bound_retries()
    ensure_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def bound_retries(seconds: int | None = None) -> int:
    """Retry a failed tracking request for at most about ``seconds`` (default: the
    ``TWINFLOW_TRACKING_RETRY_SECONDS`` setting) rather than MLflow's 7 retries with a
    backoff factor of 2 (about 4 minutes, per request: a lost server took 12.5 minutes to
    fail a run, issue 17). urllib3 sleeps 0, 2, 4, ... seconds before the retries with
    backoff factor 1, so r retries sleep 2^r - 2 seconds (plus MLflow's jitter of up to
    1 s each). Each attempt waits at most ``REQUEST_TIMEOUT`` for the server to answer
    (MLflow's 120 s would make a host that drops packets take 12 minutes a request).
    Environment variables, so that the step processes inherit them; values the user
    set are kept. The retries."""
    budget = seconds or get_settings().tracking_retry_seconds
    retries = max(1, int(math.log2(budget + 2)))
    os.environ.setdefault(MLFLOW_HTTP_REQUEST_MAX_RETRIES.name, str(retries))
    os.environ.setdefault(MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.name, "1")
    os.environ.setdefault(MLFLOW_HTTP_REQUEST_TIMEOUT.name, str(REQUEST_TIMEOUT))
    return int(os.environ[MLFLOW_HTTP_REQUEST_MAX_RETRIES.name])


def ensure_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, instead of MLflow's minutes of retries."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as err:
            raise TrackingError(f"MLflow tracking server {uri} is unreachable: "
                                f"{type(err).__name__}") from None
    elif parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(f"cannot create the MLflow store directory {db.parent}: "
                                f"{err.strerror}") from None
        _create_store_once(uri, db)


@functools.cache
def _create_store_once(uri: str, db: Path) -> None:
    """Create (or migrate) an SQLite store's tables under a file lock beside it.

    MLflow's tracking and registry stores create their tables on first use without a
    lock, so two first runs at once race in alembic's migration and leave a store no
    later run can open (issue 17). The stores built here are MLflow's cached ones, so
    the rest of this process uses them as they are.
    """
    lock = filelock.FileLock(f"{db}.lock", timeout=STORE_LOCK_SECONDS)
    try:
        with lock:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
    except filelock.Timeout:
        raise TrackingError(f"the MLflow store {db} stayed locked for {STORE_LOCK_SECONDS} s "
                            f"by another process creating it ({lock.lock_file})") from None


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database; servers choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created (with a local artifact root) if missing,
    marked as a model training experiment (``EXPERIMENT_KIND_TAG``; an older store's
    experiment gets the tag once, a kind the user chose in the UI is kept)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in exp.tags:
            try:  # cosmetic: a concurrent first write of the same tag may lose
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
            except mlflow.exceptions.MlflowException as err:
                log.debug("could not tag experiment %s: %s", name, err)
        return str(exp.experiment_id)
    location = artifact_location(mlflow.get_tracking_uri())
    try:
        return str(client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}))
    except mlflow.exceptions.MlflowException:  # created concurrently
        exp = client.get_experiment_by_name(name)
        assert exp is not None
        return str(exp.experiment_id)


def ui_url(base: str, experiment: str, run_id: str = "") -> str:
    """The MLflow UI (at ``base``) page of experiment id ``experiment``'s runs, or of
    one run, on the model training view (``UI_TRAINING_QUERY``)."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment}/{page}?{UI_TRAINING_QUERY}"


def find_pipeline_run(run_key: str, experiment: str) -> str | None:
    """The parent run created for pipeline job ``run_key``, if any."""
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = MlflowClient().search_runs(
        [exp.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _newest_runs(experiment: str, query: str, limit: int) -> list[Run]:
    """Runs of ``experiment`` matching ``query``, newest first ([] without the experiment)."""
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(MlflowClient().search_runs([exp.experiment_id], filter_string=query,
                                           max_results=limit,
                                           order_by=["attributes.start_time DESC"]))


def latest_pipeline_run(experiment: str, framework: str = "") -> str | None:
    """The newest parent run of ``experiment`` (optionally of one framework choice)."""
    query = f"tags.`{KIND_TAG}` = '{PIPELINE_KIND}'"
    if framework:
        query += f" and params.framework = '{framework}'"
    runs = _newest_runs(experiment, query, 1)
    return runs[0].info.run_id if runs else None


def latest_registered_model(experiment: str, framework: str = "") -> str | None:
    """The registered model that the newest pipeline run to register one registered
    (``framework``'s, if given); None if no run registered any."""
    query = f"tags.`{STEP_TAG}` = '{Step.PUSH}' and attributes.status = 'FINISHED'"
    if framework:
        query += f" and tags.`{FRAMEWORK_TAG}` = '{framework}'"
    names = [r.data.tags.get(REGISTERED_MODEL_TAG) for r in _newest_runs(experiment, query, 20)]
    return next((n for n in names if n), None)


def start_pipeline_run(run_key: str, experiment: str, run_name: str,
                       params: dict[str, str]) -> str:
    """Create (once per ``run_key``) the parent run; it stays RUNNING until finished."""
    existing = find_pipeline_run(run_key, experiment)
    if existing:
        return existing
    client = MlflowClient()
    owner = get_settings().owner
    run = client.create_run(experiment_id(experiment), run_name=run_name,
                            tags={RUN_KEY_TAG: run_key, KIND_TAG: PIPELINE_KIND,
                                  **({OWNER_TAG: owner} if owner else {})})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return str(run.info.run_id)


def finish_pipeline_run(run_key: str, experiment: str, succeeded: bool, message: str = "",
                        status: int | None = None, step_error: bool = False) -> None:
    """Close the parent run and any step run a crashed task left RUNNING (FAILED, or
    ``status``, a RunStatus value, e.g. KILLED after an interrupt). With ``step_error``
    the parent's error tag is the first failed step's own line, when one has it
    (``message`` is then KFP's words, e.g. 'Task exit-handler-1 failed.')."""
    run_id = find_pipeline_run(run_key, experiment)
    if run_id is None:
        log.warning("no MLflow run for pipeline job %s; nothing to finish", run_key)
        return
    client = MlflowClient()
    exp_id = client.get_run(run_id).info.experiment_id
    children = client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}' and "
                                "attributes.status = 'RUNNING'")
    deeper = client.search_runs(  # e.g. a search's trials, under the tune step's run
        [exp_id], filter_string=f"tags.`{PIPELINE_ROOT_TAG}` = '{run_id}' and "
                                "attributes.status = 'RUNNING'")
    ended = status or RunStatus.FAILED
    for child in [*deeper, *children]:
        client.set_terminated(child.info.run_id, RunStatus.to_string(ended))
    if not succeeded and step_error:
        message = first_step_error(exp_id, run_id) or message
    if message:
        client.set_tag(run_id, ERROR_TAG, message[:ERROR_TAG_CHARS])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if succeeded else ended))


def first_step_error(experiment_id: str, run_id: str) -> str:
    """The error line of the step of ``run_id`` that failed first; '' if none has one."""
    failed = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}' and "
                                       f"tags.`{ERROR_TAG}` != ''",
        order_by=["attributes.end_time ASC"], max_results=1)
    return failed[0].data.tags[ERROR_TAG] if failed else ""


def fail_abandoned_runs(experiment: str) -> list[str]:
    """FAIL the RUNNING pipeline runs whose local `twinflow run` process is gone (it was
    SIGKILLed, or its machine rebooted); their run keys. Runs of other hosts, or of a
    cluster (no owner), are left alone."""
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        return []
    running = MlflowClient().search_runs(
        [exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{PIPELINE_KIND}' and "
                                           f"attributes.status = 'RUNNING'", max_results=200)
    keys = []
    for run in running:
        owner = run.data.tags.get(OWNER_TAG, "")
        if owner and gone(owner):
            key = run.data.tags[RUN_KEY_TAG]
            finish_pipeline_run(key, experiment, False, f"abandoned: the twinflow process "
                                f"that ran it ({owner}) ended without closing it (killed?)")
            log.warning("pipeline run %s was left RUNNING by a process that is gone; "
                        "marked FAILED", key)
            keys.append(key)
    return keys


@contextmanager
def step_run(parent_run_id: str, step: str, framework: str = "") -> Iterator[str]:
    """A nested MLflow run for one step: FAILED if the body raises, KILLED if Ctrl-C or
    SIGTERM stopped it (every step runs inside components.errors.step_errors, which
    raises SIGTERM as a KeyboardInterrupt)."""
    configure()
    exp = MlflowClient().get_run(parent_run_id).info.experiment_id
    tags = {STEP_TAG: step, **({FRAMEWORK_TAG: framework} if framework else {})}
    name = f"{step}-{framework}" if framework else step
    with mlflow.start_run(experiment_id=exp, run_name=name, parent_run_id=parent_run_id,
                          tags=tags) as run:
        try:
            yield run.info.run_id
        except KeyboardInterrupt:
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise
        except Exception as err:
            if orphaned(get_settings().owner):  # its `twinflow run` died: a write failed
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
                raise Interrupted("SIGTERM") from None
            _tag_error(run.info.run_id, error_line(name, err), err)
            raise


def _tag_error(run_id: str, line: str, err: Exception) -> None:
    """Record why a step failed on its run, where the parent run's finish finds it
    (KFP only tells that a task failed); best effort: the store may be what failed."""
    if lost_connection(err):
        return  # the write would only fail again, after minutes of retries
    try:
        MlflowClient().set_tag(run_id, ERROR_TAG, line[:ERROR_TAG_CHARS])
    except Exception as tag_err:  # the step's own error is the one to report
        log.warning("could not record the error on run %s: %s", run_id, tag_err)


def log_metrics_batch(metrics: dict[str, float], step: int = 0, run_id: str | None = None) -> None:
    """Log many metrics in one request (one call per point is ~100x slower over HTTP)."""
    active = run_id or mlflow.active_run().info.run_id  # type: ignore[union-attr]
    now = int(time.time() * 1000)
    MlflowClient().log_batch(active, metrics=[Metric(k, float(v), now, step)
                                              for k, v in metrics.items()])
