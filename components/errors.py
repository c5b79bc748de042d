"""User-facing errors and the one place that turns them into a clean step failure.

A step fails in one of two ways: a bug (a traceback is the right output) or bad
input (the user needs one line that names what is wrong and where). The second
kind is raised as :class:`TwinflowError`; :func:`step_errors` prints it as one
line, records it for the CLI and exits non-zero so that KFP marks the task failed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

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


@contextmanager
def step_errors(step: str) -> Iterator[None]:
    """Run a step body; bad input becomes one error line and exit code 1. SIGTERM is
    raised as an interrupt (components.processes.interrupts), so a step stopped by it
    cleans up (stops its workers, ends its runs KILLED) as after Ctrl-C."""
    from components.processes import interrupts

    configure_logging()
    try:
        with interrupts():
            yield
    except TwinflowError as err:
        report_error(f"{step}: {err}")
        raise SystemExit(1) from None
    except ValidationError as err:
        report_error(f"{step}: {describe_validation_error(err, 'config')}")
        raise SystemExit(1) from None
    except Exception as err:
        if not lost_connection(err):
            raise
        from components.settings import get_settings

        report_error(f"{step}: MLflow tracking server {get_settings().resolved_tracking_uri()} "
                     "is unreachable (gave up retrying); the run is marked FAILED by the next "
                     "twinflow run or show once the server is back")
        raise SystemExit(1) from None


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
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause)
        if isinstance(cause, requests.ConnectionError) and address in text:
            return True
        if "Max retries exceeded" in text and address in text and any(
                marker in text for marker in CONNECT_FAILURES):
            return True  # MLflow's wrapper of the requests error, with its message
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
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
