"""User-facing errors and the one place that turns them into a clean step failure.

A step fails in one of two ways: a bug (a traceback is the right output) or bad
input (the user needs one line that names what is wrong and where). The second
kind is raised as :class:`TwinflowError`; :func:`step_errors` prints it as one
line, records it for the CLI and exits non-zero so that KFP marks the task failed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pydantic import ValidationError

if TYPE_CHECKING:
    from components.settings import Settings

log = logging.getLogger("twinflow")


class TwinflowError(Exception):
    """Bad input or environment: the message is shown to the user as is."""


class DataError(TwinflowError):
    """The data is missing, malformed or unusable for training."""


class TrackingError(TwinflowError):
    """The MLflow tracking store cannot be reached or used."""


class ConfigError(TwinflowError):
    """A configuration value is invalid."""


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One line naming each invalid field, e.g. ``train config: epochs: ...``."""
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "value"
        parts.append(f"{field}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid {where}: " + "; ".join(parts)


def report_error(message: str) -> None:
    """Log the error line and append it to ``TWINFLOW_ERROR_FILE`` if set.

    The CLI reads that file after a failed local run so that it can print the
    step's own message instead of KFP's generic 'task failed'.
    """
    from components.settings import get_settings

    log.error("twinflow: error: %s", message)
    path = get_settings().error_file
    if path is not None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(message.replace("\n", " ") + "\n")


class StepTimeout(TwinflowError):
    """The step ran longer than its time limit (``TWINFLOW_STEP_TIMEOUT``)."""


@contextmanager
def step_errors(step: str) -> Iterator[None]:
    """Run a step body; bad input becomes one error line and exit code 1.

    SIGTERM is raised as an interrupt (components.processes.interrupts), so a step
    stopped by it cleans up (stops its workers, ends its runs KILLED) as after Ctrl-C.
    A bug keeps its traceback but still reports one line naming the exception, so
    the CLI's last line and the parent run's error tag hold the real cause, never
    KFP's 'task failed'. The step's time limit, if set, is enforced here too.
    """
    from components.processes import interrupts, watch_owner
    from components.settings import get_settings

    configure_logging()
    watch_owner(get_settings().owner)  # a local run's task stops if `twinflow run` dies
    try:
        with interrupts(), _time_limit(step):
            yield
    except Exception as err:
        report_error(error_line(step, err))
        if expected(err):
            raise SystemExit(1) from None
        raise


def expected(err: BaseException) -> bool:
    """``err`` is the user's or the environment's problem, told in one line (no traceback)."""
    return (isinstance(err, TwinflowError | ValidationError) or lost_connection(err)
            or disk_full(err))


def error_line(step: str, err: BaseException) -> str:
    """The one line that names why ``step`` failed with ``err``."""
    if isinstance(err, TwinflowError):
        return f"{step}: {err}"
    if isinstance(err, ValidationError):
        return f"{step}: {describe_validation_error(err, 'config')}"
    if lost_connection(err):
        from components.settings import get_settings

        return (f"{step}: MLflow tracking server {get_settings().resolved_tracking_uri()} "
                "is unreachable (gave up retrying); the run is marked FAILED by the next "
                "twinflow run or show once the server is back")
    if disk_full(err):
        return f"{step}: disk full ({_first_line(err)}); {_fullest_disk(err)}"
    line = f"{step}: {type(err).__name__}: {_first_line(err)} (traceback in the step log)"
    low = _fullest_disk(err, below=LOW_DISK_BYTES)
    return f"{line}; {low}" if low else line


#: Free bytes under which a failure's line mentions the disk (a truncated file's error).
LOW_DISK_BYTES = 64 * 2**20
#: SQLite's and Python's words for a full disk.
DISK_FULL_WORDS = ("database or disk is full", "No space left on device")


def disk_full(err: BaseException) -> bool:
    """``err`` (or its cause) is a write that found no space left on a device."""
    for cause in _chain(err):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return True
        if any(word in str(cause) for word in DISK_FULL_WORDS):
            return True
    return False


def _fullest_disk(err: BaseException, below: int | None = None) -> str:
    """Which of the paths a step writes to has least space left, as words; '' when
    ``below`` is given and every path has more free bytes than that."""
    from components.settings import get_settings

    paths = [Path(c.filename) for c in _chain(err)
             if isinstance(c, OSError) and isinstance(c.filename, str)]
    paths += [*_written_paths(get_settings()), Path(tempfile.gettempdir())]
    free: dict[Path, int] = {}
    for path in paths:
        with contextlib.suppress(OSError):  # a path not made yet, or on a lost mount
            free.setdefault(path, shutil.disk_usage(path).free)
    if not free:
        return ""
    path, left = min(free.items(), key=lambda item: item[1])
    if below is not None and left >= below:
        return ""
    return f"the file system of {path.resolve()} has {left / 2**20:.1f} MB free"


def _written_paths(settings: Settings) -> list[Path]:
    """Where a local step writes: the store's artifact root, the pipeline root, home."""
    from components.settings import LOCAL_PIPELINE_ROOT
    from components.tracking import artifact_location

    home = settings.home
    paths = [home / LOCAL_PIPELINE_ROOT, home]
    location = artifact_location(settings.resolved_tracking_uri())
    if location and location.startswith("file:"):
        paths.insert(0, Path(urlparse(location).path))
    return paths


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and its causes, each once."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:500] if text else type(err).__name__


@contextmanager
def _time_limit(step: str) -> Iterator[None]:
    """Raise :class:`StepTimeout` once the step has run ``TWINFLOW_STEP_TIMEOUT`` seconds
    (SIGALRM; main thread only, where KFP runs a component)."""
    from components.settings import STEP_TIMEOUT_ENV, get_settings

    seconds = get_settings().step_timeout
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise StepTimeout(f"exceeded its time limit of {seconds} s (twinflow run "
                          f"--step-timeout, env {STEP_TIMEOUT_ENV})")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


#: urllib3's words for a request that never reached a server (in MLflow's message).
CONNECT_FAILURES = ("NewConnectionError", "ConnectTimeoutError", "Connection refused",
                    "RemoteDisconnected", "ConnectionResetError")


def lost_connection(err: BaseException) -> bool:
    """``err`` comes from a request to the MLflow tracking *server* that could not
    connect, even after MLflow's retries (the server went away), as opposed to a bad
    request, a server answering errors, or another service (Kubernetes) being down."""
    import requests

    from components.settings import get_settings

    uri = get_settings().resolved_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return False
    address = uri.split("://", 1)[1].split("/", 1)[0]
    for cause in _chain(err):
        text = str(cause)
        if isinstance(cause, requests.ConnectionError) and address in text:
            return True
        if "Max retries exceeded" in text and address in text and any(
                marker in text for marker in CONNECT_FAILURES):
            return True  # MLflow's wrapper of the requests error, with its message
    return False


def configure_logging(level: int = logging.INFO) -> None:
    """Plain one-line log records on stdout, once per process."""
    root = logging.getLogger()
    if not any(getattr(h, "_twinflow", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._twinflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("alembic", "mlflow.store.db.utils", "urllib3", "matplotlib", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
