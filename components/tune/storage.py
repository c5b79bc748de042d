"""Where a study lives: durable storage that parallel trial processes (or pods) share.

The default is an SQLite file beside an SQLite MLflow store (so one folder holds the
whole local history), else in twinflow's home; a cluster passes an RDB URL that every
pod reaches, such as the tracking server's PostgreSQL. Every trial heartbeats: a trial
whose process died (SIGKILL, a lost pod) is marked FAILED once its heartbeat is
older than the grace period, instead of staying RUNNING for ever.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from components.settings import get_settings

STUDY_FILE = "optuna.db"
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60  # six missed heartbeats: the trial's process is gone
SQLITE_LOCK_TIMEOUT = 60.0  # parallel processes queue on SQLite's write lock


def default_storage(tracking_uri: str) -> str:
    """An SQLite study file beside an SQLite MLflow store, else in twinflow's home."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    else:
        folder = get_settings().home
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / STUDY_FILE).resolve()}"


def resolve_storage(url: str) -> str:
    """``url``, or the default beside the configured MLflow store when empty."""
    return url or default_storage(get_settings().resolved_tracking_uri())


def open_storage(url: str, grace_seconds: int | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` with trial heartbeats (stale trials become FAILED)."""
    engine = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}} if url.startswith("sqlite") \
        else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                          heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=grace_seconds or GRACE_SECONDS)
