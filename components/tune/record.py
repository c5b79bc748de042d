"""Trial runs written to MLflow from one background thread, off the trainer's path.

A trial on a small data set trains in about a second; its nested run (create, params,
epoch metrics, state tag, end) costs about 80 ms of tracking requests, which a
sequential study would add to every trial (bench/RESULTS.md, issue 20). So the
trial's process hands each write to :class:`TrialRecorder`'s single worker thread, in
order, and goes on training; the writes keep the times they were made at, so the UI
shows the true start, end and epoch times. The first write that fails stops the rest
and is raised in the trial process at its next write or at :meth:`TrialRecorder.close`,
so a lost tracking server still fails the step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context import registry as context_registry
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

log = logging.getLogger(__name__)


def _now() -> int:
    return int(time.time() * 1000)


def _metrics(epochs: list[tuple[dict[str, float], int]]) -> list[Metric]:
    now = _now()
    return [Metric(k, float(v), now, step) for values, step in epochs for k, v in values.items()]


@dataclass
class TrialRun:
    """One trial's run, as the worker thread knows it (its id once created)."""

    name: str
    run_id: str = ""


class TrialRecorder:
    """Writes nested runs under ``parent`` in ``experiment``, in order, in one thread."""

    def __init__(self, experiment: str, parent: str | None, tags: dict[str, str]) -> None:
        self._client = MlflowClient()
        self._experiment = experiment
        # The source, user and git tags mlflow.start_run would set, resolved once.
        self._tags = context_registry.resolve_tags(
            {**tags, **({MLFLOW_PARENT_RUN_ID: parent} if parent else {})})
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trial-runs")
        self._error: BaseException | None = None

    def background(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on the worker thread, after what was handed over before."""
        self._raise()

        def job() -> None:
            if self._error is not None:
                return  # a write failed: the rest would fail too, and the step fails
            try:
                work()
            except BaseException as err:  # surfaced in the trial process
                self._error = err

        self._pool.submit(job)

    def start(self, name: str, tags: dict[str, str], params: dict[str, Any]) -> TrialRun:
        """Create the trial's run with its tags and parameters."""
        run, start = TrialRun(name), _now()

        def create() -> None:
            created = self._client.create_run(self._experiment, start_time=start,
                                              tags={**self._tags, **tags}, run_name=name)
            run.run_id = created.info.run_id
            self._client.log_batch(run.run_id, params=[Param(k, str(v))
                                                       for k, v in params.items()])

        self.background(create)
        return run

    def epochs(self, run: TrialRun, epochs: list[tuple[dict[str, float], int]]) -> None:
        """Log epochs' metrics (each with its epoch as the step) in one request."""
        metrics = _metrics(epochs)
        if metrics:
            self.background(lambda: self._client.log_batch(run.run_id, metrics=metrics))

    def end(self, run: TrialRun, tags: dict[str, str], status: int = RunStatus.FINISHED,
            epochs: list[tuple[dict[str, float], int]] | None = None) -> None:
        """Log the last ``epochs`` and ``tags`` in one request, then end the run with
        ``status`` (a RunStatus value) at the time of this call."""
        end, metrics, ended = _now(), _metrics(epochs or []), RunStatus.to_string(status)

        def finish() -> None:
            if metrics or tags:
                self._client.log_batch(run.run_id, metrics=metrics,
                                       tags=[RunTag(k, v) for k, v in tags.items()])
            self._client.set_terminated(run.run_id, ended, end_time=end)

        self.background(finish)

    def close(self) -> None:
        """Wait for every write; raise the first that failed."""
        self._pool.shutdown(wait=True)
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
