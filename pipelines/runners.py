"""Where a local run's tasks execute: one class per KFP local runner.

The pipeline and everything around it (the step environment, error lines,
interrupts, the summary) are the same for both; what differs is how a task is
started, which store URI the steps are given, and what an interrupt must stop
besides the processes below the CLI. Those are the attributes and methods here.
"""

from __future__ import annotations

import contextlib
import enum
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.warm import warm_python


class RunnerName(enum.StrEnum):
    """`twinflow run --runner`."""

    SUBPROCESS = "subprocess"
    DOCKER = "docker"


class SubprocessTasks:
    """Tasks as processes in this environment (kfp's SubprocessRunner), started from
    warm interpreters that have the step's framework imported already."""

    name = RunnerName.SUBPROCESS

    def check(self, frameworks: list[str]) -> None:
        """Nothing to check before a run: this environment is running it."""

    @contextlib.contextmanager
    def store(self, uri: str, home: Path) -> Iterator[str]:
        """The tracking URI the steps use: the run's own."""
        yield uri

    @contextlib.contextmanager
    def session(self, frameworks: list[str], env: dict[str, str], key: str,
                paths: list[Path]) -> Iterator[Any]:
        """The kfp runner, while the warm interpreters for ``frameworks`` live."""
        import kfp.local

        with warm_python(frameworks) as python, _runner_python(python):
            yield kfp.local.SubprocessRunner(use_venv=False)

    def stop(self, key: str) -> int:
        """Nothing beyond the processes below the CLI (stopped by the caller)."""
        return 0


class DockerTasks:
    """Tasks as containers of the step images (kfp's DockerRunner); see
    :mod:`pipelines.docker_run` for what they are given."""

    name = RunnerName.DOCKER

    def check(self, frameworks: list[str]) -> None:
        """The engine runs and the images of ``frameworks``' steps are built (before
        anything is started or recorded)."""
        from components.frameworks import get_adapter
        from pipelines.docker_run import check_images, docker_client

        kinds = ["base", *dict.fromkeys(get_adapter(f).image for f in frameworks)]
        check_images(docker_client(), kinds)

    @contextlib.contextmanager
    def store(self, uri: str, home: Path) -> Iterator[str]:
        """A file store is served to the containers by an mlflow server of the run."""
        from pipelines.docker_run import tracking_server

        if uri.startswith(("http://", "https://")):
            yield uri
            return
        with tracking_server(uri, home) as served:
            yield served

    @contextlib.contextmanager
    def session(self, frameworks: list[str], env: dict[str, str], key: str,
                paths: list[Path]) -> Iterator[Any]:
        from pipelines.docker_run import docker_runner

        yield docker_runner(env, key, paths)

    def stop(self, key: str) -> int:
        from pipelines.docker_run import stop_containers

        return stop_containers(key)


RUNNERS: dict[RunnerName, type[SubprocessTasks] | type[DockerTasks]] = {
    RunnerName.SUBPROCESS: SubprocessTasks, RunnerName.DOCKER: DockerTasks}


@contextlib.contextmanager
def _runner_python(python: str | None) -> Iterator[None]:
    """Make the SubprocessRunner start tasks with ``python`` (it takes ``sys.executable``)."""
    if python is None:
        yield
        return
    real, sys.executable = sys.executable, python
    try:
        yield
    finally:
        sys.executable = real
