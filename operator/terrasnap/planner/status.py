"""Status transitions of a DatasetSnapshot: pure functions of (current status, what was observed, now).

The operator calls `planned` after it ensured a Job, `observed` on every event of that Job (with the
termination message of its last pod), and `invalid` when the spec or the store cannot be acted on. Each
returns a complete new status; `events` compares two statuses and says what to announce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from terrasnap.api import conditions as cond
from terrasnap.api.conditions import Reason
from terrasnap.api.constants import (
    FAILED,
    HISTORY_LIMIT,
    LABEL_GENERATION,
    PENDING,
    RUNNING,
    SUCCEEDED,
)
from terrasnap.api.contract import SUMMARY_KEYS

Status = dict[str, Any]
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """Remove credentials embedded in URLs (`https://user:token@host` → `https://***@host`)."""
    return _USERINFO.sub(r"\1***@", text or "")


# --- what the operator observes ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """The parts of a batch/v1 Job the status depends on."""

    name: str
    generation: int | None
    state: str  # pending | running | succeeded | failed
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    failed_pods: int = 0

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> JobView:
        meta = job.get("metadata") or {}
        status = job.get("status") or {}
        labels = meta.get("labels") or {}
        try:
            generation: int | None = int(labels[LABEL_GENERATION])
        except (KeyError, TypeError, ValueError):
            generation = None
        by_type = {c.get("type"): c for c in status.get("conditions") or () if c.get("status") == "True"}
        reason = message = None
        if "Complete" in by_type:
            state = "succeeded"
        elif "Failed" in by_type:
            state = "failed"
            reason, message = by_type["Failed"].get("reason"), by_type["Failed"].get("message")
        elif _running(status):
            state = "running"
        else:
            state = "pending"
        return cls(
            name=meta.get("name", ""),
            generation=generation,
            state=state,
            reason=reason,
            message=message,
            started_at=status.get("startTime"),
            completed_at=status.get("completionTime")
            or (by_type.get("Failed") or {}).get("lastTransitionTime"),
            failed_pods=int(status.get("failed") or 0),
        )


def _running(status: Mapping[str, Any]) -> bool:
    """A pod of the Job runs. `active` also counts pods that wait to be scheduled; `ready` (Kubernetes
    >= 1.24) counts only running ones, so it decides when present."""
    if status.get("ready") is not None:
        return int(status["ready"]) > 0
    return int(status.get("active") or 0) > 0


@dataclass(frozen=True)
class EngineResult:
    """The engine's result JSON (docs/contracts.md), as read from the pod's termination message."""

    ok: bool
    snapshot_id: str | None = None
    manifest: Mapping[str, str] = field(default_factory=dict)
    commit: str | None = None
    summary: Mapping[str, int] = field(default_factory=dict)
    reason: str | None = None
    message: str | None = None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_result(text: str | None) -> EngineResult | None:
    """Parse a termination message; None if there is none or it is not the engine's JSON."""
    if not text or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, Mapping) or not isinstance(data.get("ok"), bool):
        return None
    raw_summary = _object(data.get("summary"))
    summary: dict[str, int] = {}
    for key in SUMMARY_KEYS:
        value = raw_summary.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            summary[key] = value
    source = _object(data.get("source"))
    commit = source.get("commit") if isinstance(source.get("commit"), str) else None
    if data["ok"]:
        snapshot_id = data.get("snapshotID")
        manifest = {
            target: data[key]
            for target, key in (
                ("uri", "manifest"),
                ("metadata", "metadata"),
                ("lock", "lock"),
                ("stac", "stac"),
            )
            if isinstance(data.get(key), str)
        }
        if not isinstance(snapshot_id, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", snapshot_id):
            return EngineResult(
                ok=False, reason="InvalidResult", message="engine result has no valid snapshotID"
            )
        if "uri" not in manifest:
            return EngineResult(ok=False, reason="InvalidResult", message="engine result has no manifest URI")
        return EngineResult(
            ok=True, snapshot_id=snapshot_id, manifest=manifest, commit=commit, summary=summary
        )
    error = _object(data.get("error"))
    return EngineResult(
        ok=False,
        commit=commit,
        summary=summary,
        reason=str(error.get("reason") or "EngineFailed"),
        message=str(error.get("message") or "the engine reported a failure without a message"),
    )


# --- transitions -----------------------------------------------------------------------------------------


def _base(status: Mapping[str, Any] | None, generation: int) -> Status:
    new = json.loads(json.dumps(dict(status or {})))  # deep copy of plain JSON
    new["observedGeneration"] = generation
    return new


def planned(status: Mapping[str, Any] | None, generation: int, job_name: str, now: str) -> Status:
    """A Job was ensured for `generation`. If the status already describes that Job, nothing changes."""
    current = dict(status or {})
    if (
        current.get("observedGeneration") == generation
        and current.get("job") == job_name
        and current.get("phase")
    ):
        return _base(current, generation)
    new = _base(current, generation)
    new["phase"] = PENDING
    new["job"] = job_name
    new.pop("startedAt", None)
    new.pop("completedAt", None)
    new["conditions"] = cond.kstatus(
        current.get("conditions"),
        generation=generation,
        when=now,
        ready="Unknown",
        ready_reason=Reason("Progressing", f"Job {job_name} planned for generation {generation}"),
        reconciling=Reason("JobPending", f"Job {job_name} is waiting for its pod"),
    )
    return new


def observed(
    status: Mapping[str, Any] | None,
    generation: int,
    job: JobView,
    result: EngineResult | None,
    now: str,
) -> Status:
    """The Job of `generation` changed. Jobs of other generations (superseded) change nothing."""
    current = dict(status or {})
    if job.generation is not None and job.generation != generation:
        return json.loads(json.dumps(current))
    new = _base(current, generation)
    new["job"] = job.name
    if job.started_at:
        new["startedAt"] = job.started_at
    if job.state in ("pending", "running"):
        # A Job that already lost a pod is retrying: it stays Running between attempts.
        retrying = job.failed_pods > 0
        phase = RUNNING if job.state == "running" or retrying else PENDING
        new["phase"] = phase
        new.pop("completedAt", None)
        what = (
            "running"
            if job.state == "running"
            else "waiting for its next pod"
            if retrying
            else "waiting for its pod"
        )
        if retrying:
            what += f" (after {job.failed_pods} failed attempt{'s' if job.failed_pods > 1 else ''})"
        reason = "JobRetrying" if retrying else "JobRunning" if phase == RUNNING else "JobPending"
        new["conditions"] = cond.kstatus(
            current.get("conditions"),
            generation=generation,
            when=now,
            ready="Unknown",
            ready_reason=Reason("Progressing", f"Job {job.name} is {what}"),
            reconciling=Reason(reason, f"Job {job.name} is {what}"),
        )
        return new
    new["completedAt"] = job.completed_at or now
    if job.state == "succeeded" and result is not None and result.ok:
        return _succeeded(new, current, generation, job, result, now)
    if job.state == "succeeded":
        reason = (result.reason if result else None) or "InvalidResult"
        message = (result.message if result else None) or (
            f"Job {job.name} completed but its pod left no engine result in the termination message"
        )
    elif result is not None and not result.ok:
        reason, message = result.reason or "EngineFailed", result.message or ""
    else:
        reason = job.reason or "JobFailed"
        message = job.message or f"Job {job.name} failed"
    return _failed(new, current, generation, job, result, reason, message, now)


def _succeeded(
    new: Status, current: Mapping[str, Any], generation: int, job: JobView, result: EngineResult, now: str
) -> Status:
    assert result.snapshot_id is not None
    new["phase"] = SUCCEEDED
    new["snapshotID"] = result.snapshot_id
    new["shortID"] = result.snapshot_id.removeprefix("sha256:")[:12]
    new["manifest"] = dict(result.manifest)
    new["summary"] = {k: int(result.summary.get(k, 0)) for k in SUMMARY_KEYS}
    new["source"] = {"commit": result.commit}
    entry = {
        "snapshotID": result.snapshot_id,
        "manifest": result.manifest["uri"],
        "generation": generation,
        "commit": result.commit,
        "completedAt": new["completedAt"],
    }
    new["history"] = add_history(current.get("history"), entry)
    summary = new["summary"]
    message = (
        f"snapshot {new['shortID']} published: {summary['files']} files, {summary['features']} features, "
        f"{summary['rasters']} rasters; manifest {result.manifest['uri']}"
    )
    new["conditions"] = cond.kstatus(
        current.get("conditions"), generation=generation, when=now, ready=True,
        ready_reason=Reason("Snapshotted", message),
    )  # fmt: skip
    return new


def _failed(
    new: Status,
    current: Mapping[str, Any],
    generation: int,
    job: JobView,
    result: EngineResult | None,
    reason: str,
    message: str,
    now: str,
) -> Status:
    new["phase"] = FAILED
    if result is not None and result.summary:
        new["summary"] = {k: int(result.summary.get(k, 0)) for k in SUMMARY_KEYS}
    message = redact(message)
    new["conditions"] = cond.kstatus(
        current.get("conditions"),
        generation=generation,
        when=now,
        ready=False,
        ready_reason=Reason(reason, message),
        stalled=Reason(
            reason,
            f"Job {job.name} failed; change the spec or the terrasnap.io/retry annotation to run again: {message}",
        ),
    )
    return new


def invalid(status: Mapping[str, Any] | None, generation: int, reason: str, message: str, now: str) -> Status:
    """The spec or its store cannot be acted on: Ready=False and Stalled until the spec (or store) changes."""
    current = dict(status or {})
    new = _base(current, generation)
    new["phase"] = FAILED
    new.pop("job", None)
    message = redact(message)
    new["conditions"] = cond.kstatus(
        current.get("conditions"),
        generation=generation,
        when=now,
        ready=False,
        ready_reason=Reason(reason, message),
        stalled=Reason(reason, message),
    )
    return new


def add_history(
    history: Sequence[Mapping[str, Any]] | None, entry: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Newest first, one entry per snapshotID (a repeat moves to the front), at most HISTORY_LIMIT."""
    rest = [dict(h) for h in history or () if h.get("snapshotID") != entry["snapshotID"]]
    return [dict(entry), *rest][:HISTORY_LIMIT]


def is_settled(status: Mapping[str, Any] | None, generation: int, job_name: str) -> bool:
    """Whether the status already records the final outcome of `job_name` for `generation`
    (then the Job must not be created again, e.g. after its TTL removed it)."""
    status = status or {}
    return (
        status.get("observedGeneration") == generation
        and status.get("job") == job_name
        and status.get("phase") in (SUCCEEDED, FAILED)
    )


# --- events ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Event]:
    """What to announce for a status change: one Event per phase transition (or new Job / generation)."""
    old = old or {}
    same_phase = old.get("phase") == new.get("phase")
    same_job = old.get("job") == new.get("job")
    same_gen = old.get("observedGeneration") == new.get("observedGeneration")
    if same_phase and same_job and same_gen:
        return []
    ready = cond.get_condition(new.get("conditions"), "Ready") or {}
    phase, job = new.get("phase"), new.get("job")
    if phase == PENDING:
        return [
            Event("Normal", "JobCreated", f"Job {job} created for generation {new.get('observedGeneration')}")
        ]
    if phase == RUNNING:
        return [Event("Normal", "JobRunning", f"Job {job} is running")]
    if phase == SUCCEEDED:
        return [Event("Normal", "Snapshotted", str(ready.get("message", "")))]
    if phase == FAILED:
        return [Event("Warning", str(ready.get("reason", "Failed")), str(ready.get("message", "")))]
    return []


def same(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change nothing."""
    return json.dumps(dict(old or {}), sort_keys=True) == json.dumps(dict(new), sort_keys=True)
