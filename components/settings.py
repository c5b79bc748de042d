"""Typed environment variables, read in one place.

Steps run in separate processes (locally) or containers (on a cluster); the
environment is how the driver hands them the tracking store and shared options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The `twinflow run` process a local run's steps belong to (components.processes.owner).
OWNER_ENV: Final = "TWINFLOW_OWNER"
#: The local runner's pipeline root (KFP artifacts of each task), under ``home``.
LOCAL_PIPELINE_ROOT: Final = "pipeline_root"
#: Seconds a step may run before it fails (0: no limit); `twinflow run --step-timeout`.
STEP_TIMEOUT_ENV: Final = "TWINFLOW_STEP_TIMEOUT"


class Settings(BaseSettings):
    """All environment variables twinflow reads."""

    model_config = SettingsConfigDict(extra="ignore")

    home: Path = Field(
        default=Path(".twinflow"),
        validation_alias="TWINFLOW_HOME",
        description="Directory of the embedded MLflow store and local pipeline root.",
    )
    tracking_uri: str = Field(
        default="",
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking URI; empty means the SQLite store under `home`.",
    )
    experiment: str = Field(default="twinflow", validation_alias="TWINFLOW_EXPERIMENT")
    error_file: Path | None = Field(
        default=None,
        validation_alias="TWINFLOW_ERROR_FILE",
        description="Where a failing step appends its one-line error for the CLI.",
    )
    tracking_retry_seconds: int = Field(
        default=60, ge=1, le=3600, validation_alias="TWINFLOW_TRACKING_RETRY_SECONDS",
        description="How long a request to an MLflow tracking server is retried (with "
                    "backoff) before the step fails; MLflow's own default is about 4 min.")
    step_timeout: int = Field(
        default=0, ge=0, validation_alias=STEP_TIMEOUT_ENV,
        description="Seconds a step may run before it fails naming the limit; 0 for none. "
                    "On a cluster the pods get the same limit (activeDeadlineSeconds).")
    owner: str = Field(
        default="", validation_alias=OWNER_ENV,
        description="host:pid:start of the `twinflow run` process a local run belongs to "
                    "(components.processes): its parent run is failed once it is gone.")
    train_backend: str = Field(
        default="local", validation_alias="TWINFLOW_TRAIN_BACKEND",
        description="`kubernetes`: multi-worker or GPU training runs as a cluster job.")
    namespace: str = Field(default="default", validation_alias="TWINFLOW_NAMESPACE")
    image_registry: str = Field(default="twinflow", validation_alias="TWINFLOW_IMAGE_REGISTRY")
    image_tag: str = Field(default="0.1.0", validation_alias="TWINFLOW_IMAGE_TAG")

    def resolved_tracking_uri(self) -> str:
        """The tracking URI to use: the explicit one or the embedded SQLite store."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"



def get_settings() -> Settings:
    """Settings from the current environment (cheap; not cached so tests can set env)."""
    return Settings()
