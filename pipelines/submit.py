"""Compile the pipeline and submit it to a Kubeflow Pipelines endpoint.

The steps find MLflow through the environment: the tracking URI is written into
every executor's container env in the compiled IR (what KFP's
``set_env_variable`` produces), so the same pipeline definition serves any
cluster.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from components.errors import TwinflowError
from components.settings import STEP_TIMEOUT_ENV
from components.tune.storage import store_for
from pipelines.compile import compile_pipeline
from pipelines.params import PipelineParams

log = logging.getLogger(__name__)
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
# The Secret of manifests/overlays/cluster (MLflow basic-auth) the steps log in with.
CREDENTIALS_SECRET = "mlflow-client-credentials"
CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
DEADLINE_GRACE = 60  # seconds a timed-out step has to report and close its runs


class SubmitError(TwinflowError):
    """The KFP endpoint is missing, unreachable, refuses us, or the run failed."""


@dataclass(frozen=True)
class SubmitResult:
    """The submitted run and, with ``wait``, its final state."""

    run_id: str
    state: str
    url: str

    @property
    def succeeded(self) -> bool:
        """Only a finished, successful run counts."""
        return self.state == "SUCCEEDED"


def with_env(ir: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Add ``env`` to every executor container of a compiled pipeline."""
    for executor in ir["deploymentSpec"]["executors"].values():
        container = executor["container"]
        existing = [e for e in container.get("env", []) if e["name"] not in env]
        container["env"] = existing + [{"name": k, "value": v} for k, v in sorted(env.items())]
    return ir


def platform_spec(ir: dict[str, Any], secret: str, step_timeout: int = 0,
                  keys: tuple[str, ...] = CREDENTIAL_KEYS) -> dict[str, Any] | None:
    """The KFP platform spec of every executor: ``keys`` of Secret ``secret`` as env,
    and with ``step_timeout`` a pod deadline; None when neither applies.

    Built with kfp-kubernetes' own schema (what ``kubernetes.use_secret_as_env`` and
    ``kubernetes.set_timeout`` write). The Secret is ``optional`` so that a cluster
    without MLflow auth (the kind overlay) runs the same package. The deadline leaves
    the step :data:`DEADLINE_GRACE` seconds to fail by itself first, naming the limit
    (components.errors), before Kubernetes kills its pod.
    """
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb
    from kfp.kubernetes.common import parse_k8s_parameter_input

    config = pb.KubernetesExecutorConfig()
    if secret:
        entry = pb.SecretAsEnv(secret_name=secret, optional=True, key_to_env=[
            pb.SecretAsEnv.SecretKeyToEnvMap(secret_key=k, env_var=k) for k in keys])
        entry.secret_name_parameter.CopyFrom(parse_k8s_parameter_input(secret, task=None))
        config.secret_as_env.append(entry)
    if step_timeout:
        config.active_deadline_seconds = step_timeout + DEADLINE_GRACE
    if not secret and not step_timeout:
        return None
    executors = {name: json_format.MessageToDict(config)
                 for name in ir["deploymentSpec"]["executors"]}
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}


@dataclass(frozen=True)
class Target:
    """Where and how a compiled pipeline is submitted."""

    tracking_uri: str
    host: str | None = None
    experiment: str = "twinflow"
    token: str | None = None
    wait: bool = False
    timeout: float = 3600
    poll: float = 5
    namespace: str = "twinflow"
    credentials_secret: str = CREDENTIALS_SECRET
    step_timeout: int = 0  # seconds each step may run (0: no limit)


def submit(params: PipelineParams, tracking_uri: str, host: str | None = None,
           experiment: str = "twinflow", token: str | None = None, wait: bool = False,
           timeout: float = 3600, poll: float = 5, namespace: str = "twinflow",
           credentials_secret: str = CREDENTIALS_SECRET, step_timeout: int = 0
           ) -> SubmitResult:
    """Compile the training pipeline with the steps' environment baked in, submit,
    optionally wait (see :func:`submit_package`)."""
    check_tune_storage(params)
    target = Target(tracking_uri, host, experiment, token, wait, timeout, poll, namespace,
                    credentials_secret, step_timeout)
    return submit_package(lambda path: compile_pipeline(path, params), {},
                          f"twinflow-{params.framework}", target)


def check_tune_storage(params: PipelineParams) -> None:
    """On a cluster every trial pod must reach the study: a search spread over several
    tasks needs a server database (``--tune-storage postgresql://...``), not a file in one
    pod (SubmitError before anything is compiled)."""
    shared = bool(params.tune_storage) and store_for(params.tune_storage).shared
    if params.tune_space and params.tune_tasks > 1 and not shared:
        raise SubmitError(f"--tune-tasks {params.tune_tasks}: the trial pods need one study "
                          "storage they all reach; pass --tune-storage with a database URL "
                          "(e.g. postgresql://user:pass@host/optuna), or --tune-tasks 1")


def submit_package(compile_to: Callable[[Path], Path], arguments: dict[str, Any],
                   run_name: str, target: Target) -> SubmitResult:
    """Compile with ``compile_to``, bake the steps' environment in, submit, maybe wait.

    The steps get the tracking URI, MLflow credentials from ``credentials_secret``
    (when that Secret exists in the pods' namespace; '' for none), and train
    steps launch their distributed jobs as cluster jobs in ``namespace`` (where
    the manifests' RBAC allows it).
    """
    host = (target.host or os.environ.get(ENDPOINT_ENV, "")).rstrip("/")
    if not host:
        raise SubmitError(f"no KFP endpoint: pass --host or set {ENDPOINT_ENV}")
    token = target.token or os.environ.get(TOKEN_ENV) or None
    _check_endpoint(host, token)
    import kfp

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_to(Path(tmp) / "pipeline.yaml")
        env = {"MLFLOW_TRACKING_URI": target.tracking_uri,
               "TWINFLOW_TRAIN_BACKEND": "kubernetes", "TWINFLOW_NAMESPACE": target.namespace}
        if target.step_timeout:
            env[STEP_TIMEOUT_ENV] = str(target.step_timeout)
        ir = with_env(yaml.safe_load(package.read_text()), env)
        platform = platform_spec(ir, target.credentials_secret, target.step_timeout)
        docs = [ir, platform] if platform else [ir]
        package.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        client = kfp.Client(host=host, existing_token=token)
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=target.experiment,
            run_name=run_name)
    url = f"{host}/#/runs/details/{run.run_id}"
    log.info("submitted run %s: %s", run.run_id, url)
    state = (_follow(client, run.run_id, target.timeout, target.poll) if target.wait
             else "SUBMITTED")
    return SubmitResult(run.run_id, state, url)


def _check_endpoint(host: str, token: str | None) -> None:
    """Fail in seconds, naming the host, instead of kfp's minute of retries."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(f"{host}/apis/v2beta1/healthz", headers=headers, timeout=5)
    except requests.RequestException as err:
        raise SubmitError(f"KFP endpoint {host} is unreachable: {type(err).__name__}") from None
    if response.status_code in (401, 403):
        raise SubmitError(f"KFP endpoint {host} refused the credentials "
                          f"(HTTP {response.status_code}); check the bearer token")
    if not response.ok:
        raise SubmitError(f"KFP endpoint {host} answered HTTP {response.status_code}")


def _follow(client: Any, run_id: str, timeout: float, poll: float) -> str:
    """Poll the run until it reaches a terminal state or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        state = str(client.get_run(run_id).state or "")
        if state != last:
            log.info("run %s: %s", run_id, state)
            last = state
        if state in TERMINAL:
            return state
        time.sleep(poll)
    raise SubmitError(f"run {run_id} did not finish within {timeout:.0f} s (last state {last})")
