"""Status of a SnapshotStore: pure functions of (current status, what reconciling found, now).

The operator reconciles a store into its GC CronJob; `outcome` says how that went (configured, or why
not), `store_status` turns it into the complete new status (observedGeneration, cronJob, kstatus
conditions), and `store_events` compares two statuses and says what to announce: one Event whenever
Ready's status or reason changes. `status.lastGC` belongs to the GC run and is carried over untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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


def store_conflict(message: str, namespace: str, name: str) -> StoreOutcome:
    """Its GC CronJob exists, suspended, until the older store is gone."""
    return StoreOutcome(ok=False, reason="StoreConflict", message=message,
                        cronjob={"namespace": namespace, "name": name})


def overlapping_store(store: Mapping[str, Any], others: Iterable[Mapping[str, Any]]) -> str | None:
    """Pure: why `store` must not run, if an older SnapshotStore (by creationTimestamp, then name) has the
    same or a nested URL on the same endpoint — each store's GC would delete the other's snapshots. None
    when it is the oldest of its group, so exactly one store of a group works."""
    meta, spec = store.get("metadata") or {}, store.get("spec") or {}
    url = str(spec.get("url") or "").rstrip("/") + "/"
    key = (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))
    for other in others:
        ometa, ospec = other.get("metadata") or {}, other.get("spec") or {}
        if ometa.get("name") == meta.get("name") or ospec.get("endpoint") != spec.get("endpoint"):
            continue
        ourl = str(ospec.get("url") or "").rstrip("/") + "/"
        okey = (str(ometa.get("creationTimestamp") or ""), str(ometa.get("name") or ""))
        if (url.startswith(ourl) or ourl.startswith(url)) and okey < key:
            how = "the same URL as" if url == ourl else "a URL nested with that of"
            return (f"url {spec.get('url')} has {how} SnapshotStore {ometa.get('name')!r} ({ospec.get('url')}): "
                    "their GCs would delete each other's snapshots. This store pushes nothing and its GC is "
                    "suspended; delete it, or give it a URL of its own")
    return None


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
