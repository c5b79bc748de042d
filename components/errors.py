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
    """Run a step body; bad input becomes one error line and exit code 1."""
    configure_logging()
    try:
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


def lost_connection(err: BaseException) -> bool:
    """``err`` (or what caused it) is a request that could not connect even after
    MLflow's retries: the tracking server went away, as opposed to a bad request."""
    import requests

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, requests.ConnectionError) or "Max retries exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
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
