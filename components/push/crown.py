"""Moving the `champion` alias when several runs push at once.

Evaluate judges a candidate against the champion of that moment; a concurrent run
may crown another version before this one pushes. Without care the last push wins,
even a worse one, and both runs' summaries claim the title. So the alias moves under
a mutex shared by every process that reaches the same MLflow registry (a SQLite file
or a server over PostgreSQL, local or on a cluster): creating a registered model is
atomic in every MLflow store (its name is the key), so the lock *is* one, named
``<model><LOCK_MODEL_SUFFIX>`` and deleted after. Under it the push re-reads the
champion; if another run crowned one since this candidate was judged, the gate's own
rule (:func:`components.evaluate.gate.rejudge`) is applied to both versions' recorded
test metrics (measured on the same split when the data set is the same), which is
what evaluate would have decided had the two runs gone one after the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from components.config import EvaluateConfig, PushConfig
from components.errors import TwinflowError
from components.evaluate.champion import metric_tags
from components.evaluate.gate import Baseline, rejudge
from components.processes import gone, owner
from components.tags import (
    FRAMEWORK_TAG,
    JUDGED_AGAINST_TAG,
    LOCK_MODEL_SUFFIX,
    OWNER_TAG,
    STEP_TAG,
    TASK_TAG,
    Step,
)
from components.tasks import Task, get_task

log = logging.getLogger(__name__)
LOCK_WAIT_SECONDS = 300  # a push waits this long for another push's lock
LOCK_STALE_SECONDS = 600  # a lock older than this was left by a process that died
CROWNED_MEANWHILE = "its recorded test metrics (crowned while this candidate was evaluated)"


@dataclass(frozen=True)
class Judged:
    """How evaluate judged the candidate: against which version, by which rule."""

    against: str  # the champion version then ("" for none)
    config: EvaluateConfig
    task: Task


@dataclass(frozen=True)
class Crowning:
    """Whether this push made its version the champion, and why (for the summary)."""

    crowned: bool
    reason: str


class _Busy(Exception):
    """Another push holds the lock."""


def judged_for(pipeline_run: str, framework: str) -> Judged | None:
    """What the evaluate step of ``pipeline_run`` decided against; None outside a pipeline."""
    if not pipeline_run:
        return None
    client = MlflowClient()
    exp = client.get_run(pipeline_run).info.experiment_id
    found = client.search_runs(
        [exp], filter_string=f"tags.mlflow.parentRunId = '{pipeline_run}' and "
                             f"tags.`{STEP_TAG}` = '{Step.EVALUATE}' and "
                             f"tags.`{FRAMEWORK_TAG}` = '{framework}'", max_results=1)
    if not found or JUDGED_AGAINST_TAG not in found[0].data.tags:
        return None
    run = found[0]
    rules = {k: v for k, v in run.data.params.items()
             if k in ("tolerance", "min_improvement", "gate_metric")}
    return Judged(run.data.tags[JUDGED_AGAINST_TAG],
                  EvaluateConfig(framework=framework, **rules),
                  get_task(run.data.tags.get(TASK_TAG, "") or "multiclass"))


def crown(config: PushConfig, name: str, version: str, judged: Judged | None) -> Crowning:
    """Make ``version`` the champion unless a better one was crowned after it was judged."""
    with registry_lock(name):
        current = champion_version(name, config.champion_alias)
        if current == version:
            return Crowning(True, "already the champion")
        if judged is not None and current is not None and current != judged.against:
            client = MlflowClient()
            mine = metric_tags(client.get_model_version(name, version))
            theirs = Baseline(current, metric_tags(client.get_model_version(name, current)),
                              CROWNED_MEANWHILE)
            verdict = rejudge(mine, judged.config, name, theirs, judged.task)
            if not verdict.blessed:
                log.info("%s v%s stays champion: v%s %s", name, current, version,
                         verdict.reason)
                return Crowning(False, verdict.reason)
            reason = verdict.reason
        else:
            reason = f"replaces v{current}" if current else "first champion"
        move_champion(config, name, version)
    return Crowning(True, reason)


def champion_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points at; None if it points nowhere (or no such model)."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def move_champion(config: PushConfig, name: str, version: str) -> None:
    """Point `champion` at ``version``; the replaced champion keeps `previous-champion`."""
    client = MlflowClient()
    old = champion_version(name, config.champion_alias)
    if old is not None:
        client.set_registered_model_alias(name, config.previous_alias, old)
    client.set_registered_model_alias(name, config.champion_alias, version)


@contextmanager
def registry_lock(name: str) -> Iterator[None]:
    """Hold the registry-wide mutex of model ``name`` (see the module docstring)."""
    lock, me = f"{name}{LOCK_MODEL_SUFFIX}", owner()
    client = MlflowClient()
    try:
        for attempt in Retrying(retry=retry_if_exception_type(_Busy), reraise=True,
                                wait=wait_random_exponential(multiplier=0.05, max=2),
                                stop=stop_after_delay(LOCK_WAIT_SECONDS)):
            with attempt:
                _acquire(client, lock, me)
    except _Busy as busy:
        raise TwinflowError(f"model '{name}': another push has held the registry lock "
                            f"'{lock}' for over {LOCK_WAIT_SECONDS} s ({busy}); if no "
                            "twinflow push is running, delete that registered model") from None
    try:
        yield
    finally:
        with suppress(MlflowException):
            client.delete_registered_model(lock)


def _acquire(client: MlflowClient, lock: str, me: str) -> None:
    """Create the lock model, or raise _Busy (after clearing a dead holder's lock)."""
    try:
        client.create_registered_model(lock, tags={OWNER_TAG: me} if me else None, description=(
            "twinflow: held while a push moves the champion alias; deleted after"))
        return
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    try:
        held = client.get_registered_model(lock)
    except MlflowException:
        raise _Busy("released just now") from None  # retry at once-ish
    holder = held.tags.get(OWNER_TAG, "")
    why = abandoned_lock(held)
    if why:
        log.warning("taking over the registry lock %s: %s", lock, why)
        with suppress(MlflowException):
            client.delete_registered_model(lock)
    raise _Busy(f"held by {holder or 'an unknown process'}")


def abandoned_lock(held: RegisteredModel) -> str:
    """Why the lock model ``held`` was left by a push that died ('' if it may be live):
    its holder on this host is gone, or it is older than any push takes."""
    holder = held.tags.get(OWNER_TAG, "")
    age = time.time() - held.creation_timestamp / 1000
    if holder and gone(holder):
        return f"its holder {holder} is gone"
    if age > LOCK_STALE_SECONDS:
        return f"held for {age:.0f} s by {holder or 'an unknown process'}"
    return ""
