"""Run the pipeline definition through KFP's local runner (no cluster).

This is the same pipeline that `twinflow compile` writes as IR YAML; the only
local part is the runner: ``kfp.local`` with a SubprocessRunner in the current
environment, the MLflow store handed to every step through the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.entities import RunStatus

from components.config import frameworks_of
from components.processes import Interrupted, interrupts, owner, stop_descendants
from components.settings import LOCAL_PIPELINE_ROOT, OWNER_ENV, STEP_TIMEOUT_ENV, get_settings
from components.tracking import (
    bound_retries,
    ensure_reachable,
    fail_abandoned_runs,
    finish_pipeline_run,
)
from pipelines.params import PipelineParams
from pipelines.runners import RUNNERS, DockerTasks, RunnerName, SubprocessTasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalRun:
    """Outcome of one local pipeline run."""

    run_key: str
    succeeded: bool
    seconds: float
    errors: list[str]
    log_file: Path | None


@dataclass(frozen=True)
class RunOptions:
    """How a local run runs: where it tracks, where its tasks execute, their limits."""

    tracking_uri: str = ""  # '' for the configured store
    quiet: bool = False  # step logs to a file instead of the terminal
    step_timeout: int = 0  # seconds each step may run (0: no limit)
    runner: RunnerName = RunnerName.SUBPROCESS
    # Files outside the home and the working directory that the steps read or write
    # (a container sees only what is mounted).
    paths: tuple[Path, ...] = ()


def run_local(params: PipelineParams, options: RunOptions | None = None) -> LocalRun:
    """Execute the pipeline locally; step errors are collected, not raised."""
    from pipelines.pipeline import pipeline_for

    key = params.run_key or f"local-{uuid.uuid4().hex[:12]}"
    params = params.model_copy(update={"run_key": key})
    pipeline = pipeline_for(params)
    options = options or RunOptions()
    source = Path(params.source)
    if source.exists():
        options = replace(options, paths=(*options.paths, source.resolve().parent))
    return run_pipeline(lambda: pipeline(**params.as_arguments()),
                        list(frameworks_of(params.framework)), key, params.experiment,
                        options)


def run_pipeline(call: Callable[[], object], frameworks: list[str], key: str, experiment: str,
                 options: RunOptions) -> LocalRun:
    """Run ``call`` (a KFP pipeline function called with its arguments) through the local
    runner ``options.runner``; errors collected, not raised."""
    settings = get_settings()
    uri = options.tracking_uri or settings.resolved_tracking_uri()
    bound_retries()
    ensure_reachable(uri)
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    tasks = RUNNERS[options.runner]()
    tasks.check(frameworks)
    log_file = home / "logs" / f"{key}.log" if options.quiet else None
    with tasks.store(uri, home) as step_uri, \
            _step_environment(step_uri, experiment, options.step_timeout, home) as (
                error_file, env), _output_to(log_file):
        fail_abandoned_runs(experiment)
        start = time.perf_counter()
        paths = [home, Path.cwd(), *options.paths]
        try:
            # The tasks are stopped first, from the signal handler: unwinding KFP's
            # runner closes the pipes they write to, and a training worker that hits a
            # closed pipe would fail the step instead of stopping it.
            with interrupts(signal.SIGINT, signal.SIGTERM,
                            first=lambda: _stop_tasks(tasks, key)), \
                    tasks.session(frameworks, env, key, paths) as runner:
                succeeded = _execute(call, runner, home)
        except KeyboardInterrupt as stop:
            signal_name = stop.signal_name if isinstance(stop, Interrupted) else "SIGINT"
            _stopped(tasks, key, experiment, signal_name)
            raise Interrupted(signal_name, key) from None
        seconds = time.perf_counter() - start
        errors = [ln for ln in error_file.read_text(encoding="utf-8").splitlines() if ln]
    return LocalRun(key, succeeded and not errors, seconds, errors, log_file)


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored: the cleanup after the first one is not cut short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_tasks(tasks: SubprocessTasks | DockerTasks, key: str) -> None:
    """Stop every task, warm interpreter and worker below this process, and the run's
    containers."""
    with _ignoring_interrupts():
        log.info("interrupted: stopped %d processes", stop_descendants() + tasks.stop(key))


def _stopped(tasks: SubprocessTasks | DockerTasks, key: str, experiment: str,
             signal_name: str) -> None:
    """After an interrupt: stop what is still running (nothing, if the handler did),
    then mark the run's MLflow runs KILLED."""
    with _ignoring_interrupts():
        stop_descendants()
        tasks.stop(key)
        try:
            finish_pipeline_run(key, experiment, False, f"interrupted by {signal_name}",
                                status=RunStatus.KILLED)
        except Exception as err:  # e.g. the tracking server is gone too: still one line
            log.warning("could not mark run %s KILLED: %s", key, err)


def _execute(call: Callable[[], object], runner: object, home: Path) -> bool:
    import kfp.local

    kfp.local.init(runner=runner, pipeline_root=str(home / LOCAL_PIPELINE_ROOT),
                   raise_on_error=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # image-name heuristics of the subprocess runner
            call()
    except RuntimeError as err:
        log.debug("local pipeline failed: %s", err)
        return False
    return True


@contextlib.contextmanager
def _step_environment(uri: str, experiment: str, step_timeout: int,
                      home: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """Environment the steps get (subprocesses inherit it, containers are given it): the
    store, an error file (under ``home``, which every runner's tasks can write), the
    time limit. Yields the error file and the variables."""
    with tempfile.TemporaryDirectory(prefix="errors-", dir=home) as tmp:
        error_file = Path(tmp) / "errors.txt"
        error_file.touch()
        env = {"MLFLOW_TRACKING_URI": uri, "TWINFLOW_EXPERIMENT": experiment,
               "TWINFLOW_ERROR_FILE": str(error_file), OWNER_ENV: owner(),
               "TWINFLOW_HOME": str(home),
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        if step_timeout:
            env[STEP_TIMEOUT_ENV] = str(step_timeout)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            yield error_file, env
        finally:
            os.environ.clear()
            os.environ.update(saved)


@contextlib.contextmanager
def _output_to(log_file: Path | None) -> Iterator[None]:
    """With ``--quiet``, the runner's and steps' output goes to a log file."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        handler = logging.StreamHandler(fh)
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)
