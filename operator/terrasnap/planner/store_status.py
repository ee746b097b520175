"""Status of a SnapshotStore: pure functions of (current status, what reconciling found, now).

The operator reconciles a store into its GC CronJob; `outcome` says how that went (configured, or why
not), `store_status` turns it into the complete new status (observedGeneration, cronJob, kstatus
conditions), and `store_events` compares two statuses and says what to announce: one Event whenever
Ready's status or reason changes. `status.lastGC` belongs to the GC run and is carried over untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from terrasnap.api import conditions as cond
from terrasnap.api.constants import READY
from terrasnap.planner.status import Event

Status = dict[str, Any]


@dataclass(frozen=True)
class StoreOutcome:
    ok: bool
    reason: str
    message: str
    cronjob: Mapping[str, str] | None = None  # {"namespace", "name"} of the GC CronJob, once it exists


def configured(namespace: str, name: str, schedule: str, suspended: bool) -> StoreOutcome:
    return StoreOutcome(
        ok=True,
        reason="Configured",
        message=f"GC CronJob {namespace}/{name} scheduled {schedule!r}{' (suspended)' if suspended else ''}",
        cronjob={"namespace": namespace, "name": name},
    )


def invalid_spec(message: str) -> StoreOutcome:
    return StoreOutcome(ok=False, reason="InvalidSpec", message=message)


def credentials_not_found(namespace: str | None, name: str, key: str) -> StoreOutcome:
    where = f"{namespace}/{name}" if namespace else name
    return StoreOutcome(
        ok=False,
        reason="CredentialsNotFound",
        message=f"credentials Secret {where} has no key {key!r} (or does not exist)",
    )


def store_status(
    status: Mapping[str, Any] | None, generation: int, outcome: StoreOutcome, now: str
) -> Status:
    """The complete new status: Ready from the outcome, Stalled while it failed, other fields kept."""
    old = dict(status or {})
    new: Status = json.loads(json.dumps(old))
    new["observedGeneration"] = generation
    if outcome.cronjob is not None:
        new["cronJob"] = dict(outcome.cronjob)
    reason = cond.Reason(outcome.reason, outcome.message)
    new["conditions"] = cond.kstatus(
        old.get("conditions"),
        generation=generation,
        when=now,
        ready=outcome.ok,
        ready_reason=reason,
        stalled=None if outcome.ok else reason,
    )
    return new


def store_events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Event]:
    """One Event when Ready's status or reason changed (a new message alone is no news)."""
    before = cond.get_condition((old or {}).get("conditions"), READY) or {}
    after = cond.get_condition(new.get("conditions"), READY) or {}
    if not after or (before.get("status"), before.get("reason")) == (
        after.get("status"),
        after.get("reason"),
    ):
        return []
    type_ = "Normal" if after.get("status") == "True" else "Warning"
    return [Event(type_, str(after.get("reason", "")), str(after.get("message", "")))]
