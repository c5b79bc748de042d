"""Where a study lives: durable storage that parallel trial processes (or pods) share.

Two kinds, one class each, the quirks being attributes of the class:

- :class:`JournalStore`, a plain file path: Optuna's journal file (append-only, one
  fsync per write, file-locked for the processes of one machine). The default, beside
  an SQLite MLflow store, else in twinflow's home. About 10x cheaper per trial than
  SQLite through SQLAlchemy (bench/RESULTS.md, issue 20), which matters when a trial
  trains for a second. A trial records its owner (host, pid, process start time); a
  later :meth:`Store.fail_dead` marks FAILED the RUNNING trials whose owner on this
  host is gone (SIGKILL), so they are not left RUNNING for ever.
- :class:`DatabaseStore`, an RDB URL (``sqlite:///...``, ``postgresql://...``): what a
  cluster passes so that every pod reaches the study, such as the tracking server's
  PostgreSQL. Every trial heartbeats; Optuna marks FAILED a trial whose heartbeat is
  older than the grace period (its process died, or its pod was lost).
"""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from components.processes import gone, owner
from components.settings import get_settings

log = logging.getLogger(__name__)
STUDY_FILE = "optuna-journal.log"  # the name optuna-dashboard's docs use
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60  # six missed heartbeats: the trial's process is gone
SQLITE_LOCK_TIMEOUT = 60.0  # parallel processes queue on SQLite's write lock
OWNER_ATTR = "twinflow_owner"  # host:pid:start time of the process running a trial


class Store(ABC):
    """A study storage by its URL: how to open it, and what it can promise."""

    #: Reachable from many machines (pods): a search may be spread over KFP tasks.
    shared: ClassVar[bool] = False

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    def open(self) -> BaseStorage:
        """The Optuna storage (a new connection or file handle)."""

    @abstractmethod
    def claim(self, trial: optuna.Trial) -> None:
        """Record that this process runs ``trial`` (for :meth:`fail_dead`)."""

    @abstractmethod
    def fail_dead(self, study: optuna.Study, storage: BaseStorage) -> None:
        """Mark FAILED the RUNNING trials of ``study`` (opened on ``storage``) whose
        process is known to be gone."""


class JournalStore(Store):
    """Optuna's journal file; trials carry their owner process for :meth:`fail_dead`."""

    def open(self) -> BaseStorage:
        Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(self.url))

    def claim(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(OWNER_ATTR, owner())

    def fail_dead(self, study: optuna.Study, storage: BaseStorage) -> None:
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        dead = [t for t in running if gone(str(t.user_attrs.get(OWNER_ATTR, "")))]
        if not dead:
            return
        study_id = storage.get_study_id_from_name(study.study_name)
        for trial in dead:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            try:
                storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process failed it first
            log.warning("study %s: trial %d was left RUNNING by a process that is gone "
                        "(%s); marked FAILED", study.study_name, trial.number,
                        trial.user_attrs[OWNER_ATTR])


class DatabaseStore(Store):
    """A server database's URL; trials heartbeat and Optuna fails the stale ones."""

    shared = True
    engine: ClassVar[dict[str, Any]] = {"pool_pre_ping": True}

    def __init__(self, url: str, grace_seconds: int | None = None) -> None:
        super().__init__(url)
        self.grace_seconds = grace_seconds

    def open(self) -> BaseStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(self.url, engine_kwargs=self.engine,
                              heartbeat_interval=HEARTBEAT_SECONDS,
                              grace_period=self.grace_seconds or GRACE_SECONDS)

    def claim(self, trial: optuna.Trial) -> None:
        """Nothing to record: the trial's heartbeat says its process is alive."""

    def fail_dead(self, study: optuna.Study, storage: BaseStorage) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


class SqliteStore(DatabaseStore):
    """An SQLite file through SQLAlchemy: one machine's, parallel writers queue."""

    shared = False
    engine: ClassVar[dict[str, Any]] = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}}


def store_for(url: str, grace_seconds: int | None = None) -> Store:
    """The store of ``url``: a URL with a scheme is a database, anything else a file."""
    if url.startswith("sqlite:"):
        return SqliteStore(url, grace_seconds)
    if "://" in url:
        return DatabaseStore(url, grace_seconds)
    return JournalStore(str(Path(url).expanduser().resolve()))


def open_storage(url: str, grace_seconds: int | None = None) -> BaseStorage:
    """The Optuna storage at ``url`` (see :func:`store_for`)."""
    return store_for(url, grace_seconds).open()


def default_storage(tracking_uri: str) -> str:
    """The journal file beside an SQLite MLflow store, else in twinflow's home."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    else:
        folder = get_settings().home
    return str((folder / STUDY_FILE).resolve())


def resolve_storage(url: str) -> str:
    """``url``, or the default beside the configured MLflow store when empty."""
    return url or default_storage(get_settings().resolved_tracking_uri())
