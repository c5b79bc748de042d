"""Create a training job with the Kubernetes client, follow it, clean up.

Creates the object, streams the chief's log lines into this step's log, maps
the job's conditions to success or failure (``conditions.outcome``) and deletes
what it created, whatever happens. Not exercised against a cluster here (none
can run on this machine); the pure parts it relies on are tested.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from components.train.k8s.conditions import Outcome, State, outcome
from components.train.k8s.manifests import build
from components.train.k8s.spec import DistributedJobConfig, JobKind
from components.train.launch import TrainingError

log = logging.getLogger(__name__)
API = {JobKind.TRAINJOB: ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
       JobKind.PYTORCHJOB: ("kubeflow.org", "v1", "pytorchjobs"),
       JobKind.TFJOB: ("kubeflow.org", "v1", "tfjobs")}


def chief_selector(cfg: DistributedJobConfig) -> str:
    """Label selector of the chief pod, as each operator labels its pods."""
    if cfg.job_kind is JobKind.TRAINJOB:  # JobSet pods of the `node` replicated job
        return (f"jobset.sigs.k8s.io/jobset-name={cfg.name},"
                "jobset.sigs.k8s.io/replicatedjob-name=node,"
                "batch.kubernetes.io/job-completion-index=0")
    replica = "master" if cfg.job_kind is JobKind.PYTORCHJOB else "worker"
    return (f"training.kubeflow.org/job-name={cfg.name},"
            f"training.kubeflow.org/replica-type={replica},"
            "training.kubeflow.org/replica-index=0")


def run_job(cfg: DistributedJobConfig, api_client: Any = None, timeout_s: float = 24 * 3600,
            poll_s: float = 5.0) -> Outcome:
    """Run ``cfg`` to completion; raise :class:`TrainingError` on failure or timeout."""
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    group, version, plural = API[cfg.job_kind]
    custom.create_namespaced_custom_object(group, version, cfg.namespace, plural, build(cfg))
    log.info("created %s %s/%s", cfg.job_kind.value, cfg.namespace, cfg.name)
    streamer = _LogStreamer(core, cfg)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            job = custom.get_namespaced_custom_object(group, version, cfg.namespace, plural,
                                                      cfg.name)
            streamer.start_when_ready()
            result = outcome(job)
            if result.state is State.FAILED:
                raise TrainingError(f"{cfg.job_kind.value} {cfg.name} failed: {result.message}")
            if result.state is State.SUCCEEDED:
                return result
            if time.monotonic() > deadline:
                raise TrainingError(f"{cfg.job_kind.value} {cfg.name} did not finish within "
                                    f"{timeout_s:.0f} s")
            time.sleep(poll_s)
    finally:
        _delete(custom, cfg, group, version, plural)


def _delete(custom: Any, cfg: DistributedJobConfig, group: str, version: str,
            plural: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(group, version, cfg.namespace, plural, cfg.name,
                                               propagation_policy="Background")
        log.info("deleted %s %s/%s", cfg.job_kind.value, cfg.namespace, cfg.name)
    except ApiException as err:
        if err.status != 404:
            log.warning("could not delete %s %s: %s", cfg.job_kind.value, cfg.name, err.reason)


class _LogStreamer:
    """Follows the chief pod's log in a thread once the pod runs."""

    def __init__(self, core: Any, cfg: DistributedJobConfig) -> None:
        self.core, self.cfg = core, cfg
        self.thread: threading.Thread | None = None

    def start_when_ready(self) -> None:
        if self.thread is not None:
            return
        pods = self.core.list_namespaced_pod(self.cfg.namespace,
                                             label_selector=chief_selector(self.cfg)).items
        running = [p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")]
        if running:
            name = running[0].metadata.name
            self.thread = threading.Thread(target=self._follow, args=(name,), daemon=True)
            self.thread.start()

    def _follow(self, pod: str) -> None:
        stream = self.core.read_namespaced_pod_log(pod, self.cfg.namespace, follow=True,
                                                   _preload_content=False)
        for line in stream:
            log.info("[%s] %s", pod, line.decode(errors="replace").rstrip())
