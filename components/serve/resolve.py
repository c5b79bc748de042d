"""Find the exports directory of a registered model version in the MLflow registry.

Push logs the exports directory to the registered version's run under
``exports/``; serving ``NAME@alias`` (or ``NAME/VERSION``) downloads it once
into a cache under ``TWINFLOW_HOME`` keyed by version and run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import ConfigError, DataError
from components.export.manifest import EXPORTS_ARTIFACT_PATH, MANIFEST_FILE
from components.settings import get_settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)
DEFAULT_ALIAS = "champion"


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME[@alias]`` or ``NAME/VERSION`` -> (name, alias, version); alias: champion."""
    if "/" in ref:
        name, _, version = ref.rpartition("/")
        if not name or not version.isdigit():
            raise ConfigError(f"--model {ref!r}: expected NAME[@alias] or NAME/VERSION")
        return name, None, version
    name, _, alias = ref.partition("@")
    if not name:
        raise ConfigError(f"--model {ref!r}: expected NAME[@alias] or NAME/VERSION")
    return name, alias or DEFAULT_ALIAS, None


def find_version(ref: str) -> tuple[str, ModelVersion]:
    """The registered version ``ref`` names: (model name, version); a clear error if none."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from components.tracking import configure

    configure()
    name, alias, version = parse_model_ref(ref)
    client = MlflowClient()
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version or ""))
    except MlflowException as err:
        raise DataError(f"--model {ref!r}: not in the registry at {mlflow.get_tracking_uri()} "
                        f"({err.message})") from None
    return name, found


def download_exports(ref: str, cache: Path | None = None) -> tuple[str, Path]:
    """Download the exports of ``ref``; return (registered model name, local directory)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, found = find_version(ref)
    if not found.run_id:
        raise DataError(f"{name} version {found.version} has no run to take exports from")
    root = (cache or get_settings().home / "serving") / name / f"v{found.version}-{found.run_id}"
    target = root / EXPORTS_ARTIFACT_PATH
    if not (target / MANIFEST_FILE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        try:
            mlflow.artifacts.download_artifacts(run_id=found.run_id,
                                                artifact_path=EXPORTS_ARTIFACT_PATH,
                                                dst_path=str(root))
        except (MlflowException, OSError) as err:
            raise DataError(f"{name} version {found.version} (run {found.run_id}) has no "
                            f"'{EXPORTS_ARTIFACT_PATH}/' artifacts to serve: {err}") from None
    log.info("serving %s version %s from %s", name, found.version, target)
    return name, target
