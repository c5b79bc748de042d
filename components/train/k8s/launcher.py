"""Create a training job with the Kubernetes client, follow it, clean up.

The train step calls :func:`run_distributed_job` and blocks: it creates the
object, streams the chief pod's log into this step's log (so the KFP UI shows
training progress), maps the job's conditions to success or failure
(:func:`conditions.outcome`) and deletes what it created, whatever happens,
including a SIGTERM from a cancelled run. Waits are bounded.

UNTESTED against a cluster (none can run on this machine); the pure parts it
relies on (the objects, the condition mapping, the API coordinates) are tested.
The pod labels used to find the chief are the operators' documented ones:

- v1 (training-operator): ``training.kubeflow.org/job-name`` plus
  ``training.kubeflow.org/job-role=master``, which the operator puts on the
  PyTorchJob Master and on the TFJob Chief, or worker 0 when there is no Chief.
- v2 (TrainJob -> JobSet of the same name): ``jobset.sigs.k8s.io/jobset-name``,
  ``jobset.sigs.k8s.io/replicatedjob-name=node`` and the Indexed Job's
  ``batch.kubernetes.io/job-completion-index=0`` (node rank 0), as the Kubeflow
  SDK selects them; the last label needs Kubernetes >= 1.28.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from components.train.k8s.conditions import Outcome, State, outcome
from components.train.k8s.manifests import CONTAINER, TRAINER_REPLICATED_JOB, build
from components.train.k8s.spec import DistributedJobConfig, JobKind
from components.train.launch import TrainingError

log = logging.getLogger(__name__)

# (group, version, plural) of each kind, as its CRD serves it.
API = {JobKind.TRAINJOB: ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
       JobKind.PYTORCHJOB: ("kubeflow.org", "v1", "pytorchjobs"),
       JobKind.TFJOB: ("kubeflow.org", "v1", "tfjobs")}
_LOG_PHASES = ("Running", "Succeeded", "Failed")
_SETTLE_S = 30.0  # how long to let the chief's log drain once the job has ended


class JobTimeoutError(TrainingError, TimeoutError):
    """The job did not reach a terminal condition in time (it is deleted)."""


def chief_selector(cfg: DistributedJobConfig) -> str:
    """Label selector of the chief pod (rank 0), as each operator labels its pods."""
    if cfg.job_kind is JobKind.TRAINJOB:
        return (f"jobset.sigs.k8s.io/jobset-name={cfg.name},"
                f"jobset.sigs.k8s.io/replicatedjob-name={TRAINER_REPLICATED_JOB},"
                "batch.kubernetes.io/job-completion-index=0")
    return f"training.kubeflow.org/job-name={cfg.name},training.kubeflow.org/job-role=master"


def run_distributed_job(cfg: DistributedJobConfig, api_client: Any = None,
                        timeout_s: float = 24 * 3600, poll_s: float = 5.0) -> Outcome:
    """Run ``cfg`` to completion and return its (successful) outcome.

    Raises :class:`TrainingError` when the job fails or cannot be created, and
    :class:`JobTimeoutError` when it has not finished after ``timeout_s`` (time
    spent Pending, e.g. waiting for GPUs, counts). ``api_client``: a configured
    ``kubernetes.client.ApiClient``; None loads the in-cluster config (the step's
    service account) or else the local kubeconfig.
    """
    from kubernetes import client

    api_client = api_client if api_client is not None else _load_client()
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    what = f"{cfg.job_kind.value} {cfg.namespace}/{cfg.name}"
    streamer = _LogStreamer(core, cfg)
    owned = False
    try:
        with _sigterm_raises(what):
            _create(custom, cfg, what)
            owned = True
            result = _wait(custom, cfg, streamer, what, timeout_s, poll_s)
        log.info("%s succeeded", what)
        return result
    finally:
        if owned:
            _delete(custom, cfg, what)


run_job = run_distributed_job  # the name components.train.cluster calls


def _load_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@contextmanager
def _sigterm_raises(what: str) -> Iterator[None]:
    """Turn SIGTERM (KFP cancelling the step, pod eviction) into an exception so
    that the ``finally`` deleting the job runs; GPUs left running cost money.
    Signal handlers can only be installed from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise TrainingError(f"{what}: interrupted by signal {signum}; deleting the job")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _api_error(err: Any) -> str:
    """The API server's own message from an ApiException, else its reason."""
    import json

    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(err, "reason", err))


def _create(custom: Any, cfg: DistributedJobConfig, what: str) -> None:
    from kubernetes.client.exceptions import ApiException

    group, version, plural = API[cfg.job_kind]
    try:
        custom.create_namespaced_custom_object(group, version, cfg.namespace, plural, build(cfg))
    except ApiException as err:
        hint = {404: f"is the operator installed (no {plural}.{group}/{version} API)?",
                403: "the step's service account may not create it (see manifests/base/rbac)",
                409: f"it already exists; delete it (kubectl -n {cfg.namespace} delete "
                     f"{plural} {cfg.name}) or rerun"}.get(err.status, "")
        raise TrainingError(f"cannot create {what}: {err.status} {_api_error(err)}"
                            f"{'; ' + hint if hint else ''}") from err
    log.info("created %s (%d worker(s), %d GPU(s) each)", what, cfg.workers,
             cfg.gpus_per_worker)


def _wait(custom: Any, cfg: DistributedJobConfig, streamer: _LogStreamer, what: str,
          timeout_s: float, poll_s: float) -> Outcome:
    """Poll the job until a terminal condition or the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Outcome | None = None
    while True:
        job = _get(custom, cfg, what)
        current = outcome(job) if job is not None else last
        if current is None:  # not read successfully yet
            current = Outcome(State.RUNNING)
        elif current != last:
            log.info("%s: %s%s", what, current.state.value,
                     f" ({current.message})" if current.message else "")
            last = current
        if current.state is not State.RUNNING:
            streamer.settle(_SETTLE_S)
            if current.state is State.FAILED:
                raise TrainingError(f"{what} failed: {current.message or 'no reason given'}")
            return current
        streamer.poll()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise JobTimeoutError(f"{what} did not finish within {timeout_s:.0f} s "
                                  f"(last condition: {current.message or 'none yet'}); "
                                  "deleting it")
        time.sleep(min(poll_s, remaining))


def _get(custom: Any, cfg: DistributedJobConfig, what: str) -> dict[str, Any] | None:
    """The job object, or None after a transient API error (retried next poll)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    group, version, plural = API[cfg.job_kind]
    try:
        job: dict[str, Any] = custom.get_namespaced_custom_object(
            group, version, cfg.namespace, plural, cfg.name)
        return job
    except ApiException as err:
        if err.status == 404:
            raise TrainingError(f"{what} disappeared while running (deleted by someone "
                                "else?)") from err
        if err.status in (401, 403):
            raise TrainingError(f"cannot read {what}: {err.status} {_api_error(err)}") from err
        log.warning("reading %s failed (%s %s); retrying", what, err.status, err.reason)
    except HTTPError as err:
        log.warning("reading %s failed (%s); retrying", what, err)
    return None


def _delete(custom: Any, cfg: DistributedJobConfig, what: str) -> None:
    """Best effort: a failed delete is logged, never raised over the real error."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    group, version, plural = API[cfg.job_kind]
    try:
        custom.delete_namespaced_custom_object(group, version, cfg.namespace, plural, cfg.name,
                                               propagation_policy="Background")
        log.info("deleted %s", what)
    except ApiException as err:
        if err.status != 404:
            log.warning("could not delete %s (%s %s); delete it by hand", what, err.status,
                        err.reason)
    except HTTPError as err:
        log.warning("could not delete %s (%s); delete it by hand", what, err)


class _LogStreamer:
    """Follows the chief pod's log in a daemon thread once the pod has started.

    A pod that is replaced (e.g. JobSet recreating a failed node) is followed
    anew; a pod already followed is not read twice.
    """

    def __init__(self, core: Any, cfg: DistributedJobConfig) -> None:
        self.core, self.cfg = core, cfg
        self.thread: threading.Thread | None = None
        self.followed: set[str] = set()

    def poll(self) -> None:
        """Start following the chief if it has started and is not followed yet."""
        if self.thread is not None and self.thread.is_alive():
            return
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            pods = self.core.list_namespaced_pod(
                self.cfg.namespace, label_selector=chief_selector(self.cfg)).items
        except (ApiException, HTTPError) as err:
            log.debug("listing the chief pod of %s failed: %s", self.cfg.name, err)
            return
        for pod in pods:
            name = pod.metadata.name
            if pod.status and pod.status.phase in _LOG_PHASES and name not in self.followed:
                self.followed.add(name)
                self.thread = threading.Thread(target=self._follow, args=(name,),
                                               name=f"log-{name}", daemon=True)
                self.thread.start()
                return

    def settle(self, timeout_s: float) -> None:
        """The job has ended: pick up a chief that finished between polls, then let
        its log drain (the stream ends when the container has exited)."""
        self.poll()
        if self.thread is not None:
            self.thread.join(timeout_s)

    def _follow(self, pod: str) -> None:
        container = CONTAINER[self.cfg.job_kind]
        stream = None
        try:
            stream = self.core.read_namespaced_pod_log(
                pod, self.cfg.namespace, container=container, follow=True,
                _preload_content=False)
            for line in stream:
                log.info("[%s] %s", pod, line.decode(errors="replace").rstrip())
        except Exception as err:  # a broken log stream must not fail the training
            log.warning("log stream of %s ended early: %s", pod, err)
        finally:
            if stream is not None:
                stream.release_conn()
