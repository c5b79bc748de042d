"""Start and finish the MLflow parent run of one pipeline run.

Starting also validates the pipeline parameters that no single step owns (the
framework choice), so that a compiled pipeline submitted with a bad value fails
in its first task with a clear message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from components.config import check_choice
from components.errors import ConfigError
from components.tracking import configure, finish_pipeline_run, start_pipeline_run

log = logging.getLogger(__name__)


def start(run_key: str, experiment: str, params: dict[str, str]) -> str:
    """Validate run-wide parameters and open the parent run; return its id."""
    framework = params.get("framework", "")
    try:
        check_choice(framework)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    configure()
    name = f"{params.get('dataset', 'pipeline')}-{framework}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    run_id = start_pipeline_run(run_key, experiment, name, params)
    log.info("MLflow parent run %s (%s)", run_id, name)
    return run_id


def finish(run_key: str, experiment: str, state: str, error: str = "") -> None:
    """Mark the parent run FINISHED or FAILED from KFP's final pipeline state."""
    configure()
    succeeded = state.upper() in ("SUCCEEDED", "SUCCESS")
    finish_pipeline_run(run_key, experiment, succeeded, "" if succeeded else error,
                        step_error=True)
    log.info("pipeline %s: %s", run_key, state)
