"""The one place that writes metav1.Conditions (cert-manager style), kstatus-compatible (Flux style).

Conditions are plain dicts as the apiserver stores them. Every function returns a new list and never mutates
its input, so callers can compare old and new status to decide whether to patch and what to announce.
`lastTransitionTime` changes only when a condition's `status` changes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from terrasnap.api.constants import READY, RECONCILING, STALLED

Condition = dict[str, Any]

MESSAGE_LIMIT = 32768
_REASON_OK = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, second precision (what metav1.Time serialises to)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return format_time(datetime.now(UTC))


def clean_reason(reason: str) -> str:
    """A reason the CRD pattern accepts: CamelCase, no spaces; anything else becomes `Unknown`-ish."""
    if _REASON_OK.match(reason or ""):
        return reason
    cleaned = re.sub(r"[^A-Za-z0-9_,:]", "", reason or "")
    cleaned = cleaned.lstrip("0123456789_,:").rstrip(",:")
    return cleaned if cleaned and _REASON_OK.match(cleaned) else "Unknown"


def get_condition(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Sequence[Condition] | None, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return bool(condition and condition.get("status") == "True")


def set_condition(
    conditions: Sequence[Condition] | None,
    type_: str,
    status: str | bool,
    reason: str,
    message: str,
    observed_generation: int | None,
    when: str,
) -> list[Condition]:
    """Return `conditions` with `type_` set. `lastTransitionTime` is kept unless `status` changes."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    previous = get_condition(conditions, type_)
    transition = when
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    condition: Condition = {
        "type": type_,
        "status": status,
        "reason": clean_reason(reason),
        "message": (message or "")[:MESSAGE_LIMIT],
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        condition["observedGeneration"] = int(observed_generation)
    result: list[Condition] = []
    placed = False
    for existing in conditions or ():
        if existing.get("type") == type_:
            result.append(condition)
            placed = True
        else:
            result.append(dict(existing))
    if not placed:
        result.append(condition)
    return result


def remove_condition(conditions: Sequence[Condition] | None, type_: str) -> list[Condition]:
    return [dict(c) for c in conditions or () if c.get("type") != type_]


@dataclass(frozen=True)
class Reason:
    """A condition's reason and message."""

    reason: str
    message: str


def kstatus(
    conditions: Sequence[Condition] | None,
    *,
    generation: int | None,
    when: str,
    ready: bool | str,
    ready_reason: Reason,
    reconciling: Reason | None = None,
    stalled: Reason | None = None,
) -> list[Condition]:
    """Set Ready (always), and Reconciling / Stalled only while true (removed otherwise).

    The order is stable: Ready first, then the others in the order they already had.
    """
    result = set_condition(
        conditions, READY, ready, ready_reason.reason, ready_reason.message, generation, when
    )
    if reconciling is not None:
        result = set_condition(
            result, RECONCILING, True, reconciling.reason, reconciling.message, generation, when
        )
    else:
        result = remove_condition(result, RECONCILING)
    if stalled is not None:
        result = set_condition(result, STALLED, True, stalled.reason, stalled.message, generation, when)
    else:
        result = remove_condition(result, STALLED)
    ready_first = [c for c in result if c["type"] == READY] + [c for c in result if c["type"] != READY]
    return ready_first


def differs(old: Sequence[Condition] | None, new: Sequence[Condition] | None) -> bool:
    """Whether two condition lists differ in anything but order."""

    def key(items: Sequence[Condition] | None) -> list[tuple[Any, ...]]:
        return sorted(tuple(sorted(c.items())) for c in items or ())

    return key(old) != key(new)
