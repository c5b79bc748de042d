"""From a job's ``status.conditions`` to the step's outcome, as a pure function.

Kept apart from the launcher so the mapping, the part most likely to be subtly
wrong, is tested without a cluster. Condition types, per CRD version in use:

- TrainJob (Trainer v2.3.0): ``Complete``, ``Failed`` (e.g. reason
  ``DeadlineExceeded``), ``Suspended``. There is no Running condition; a job
  without a terminal condition is still running (or not yet scheduled).
- PyTorchJob / TFJob (training-operator v1): ``Created``, ``Running``,
  ``Restarting``, ``Succeeded``, ``Failed``; the operator flips the previous one
  to status "False" rather than removing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SUCCESS_TYPES = frozenset({"Complete", "Succeeded"})
FAILURE_TYPES = frozenset({"Failed"})


class State(StrEnum):
    """Where a training job stands."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """The state plus a human-readable detail: for a failure the operator's
    ``reason: message``; while running, the latest true condition (e.g.
    ``Restarting``) so the launcher can log transitions."""

    state: State
    message: str = ""


def _active(job: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """Conditions whose status is "True", oldest first (list order breaks ties)."""
    status = job.get("status") if isinstance(job, Mapping) else None
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return []
    active = [(i, c) for i, c in enumerate(conditions)
              if isinstance(c, Mapping) and str(c.get("status", "")).lower() == "true"]
    active.sort(key=lambda ic: (str(ic[1].get("lastTransitionTime") or ""), ic[0]))
    return [c for _, c in active]


def _detail(condition: Mapping[str, Any]) -> str:
    parts = [str(condition.get(k) or "").strip() for k in ("reason", "message")]
    return ": ".join(p for p in parts if p) or str(condition.get("type", ""))


def outcome(job: Mapping[str, Any] | None) -> Outcome:
    """Map a job object (as returned by the API, any kind above) to an outcome.

    Only conditions with status "True" count, in any order; a missing or
    malformed status means still running. If a failure and a success are both
    true (not expected from either operator), the failure wins: a model from a
    job the operator also calls failed is not to be trusted.
    """
    active = _active(job)
    failed = [c for c in active if c.get("type") in FAILURE_TYPES]
    if failed:
        return Outcome(State.FAILED, _detail(failed[-1]))
    if any(c.get("type") in SUCCESS_TYPES for c in active):
        return Outcome(State.SUCCEEDED)
    return Outcome(State.RUNNING, str(active[-1].get("type", "")) if active else "")
