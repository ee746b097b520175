"""kstatus's rules for custom resources (sigs.k8s.io/cli-utils pkg/kstatus/status: checkGenericProperties,
checkGeneration, Compute), re-implemented to test terrasnap's status against them without Go.

For a kind without built-in rules, kstatus decides from generic properties only:
  metadata.deletionTimestamp set                              → Terminating
  status.observedGeneration present and != metadata.generation → InProgress (LatestGenerationNotObserved)
  a condition Reconciling=True                                 → InProgress
  a condition Stalled=True                                     → Failed
  otherwise                                                    → Current (also with no status at all)
Ready is not read by kstatus itself; Flux and `kubectl wait --for=condition=Ready` read it.
"""

from __future__ import annotations

from typing import Any

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


def compute(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    generation = meta.get("generation")
    if generation is not None and "observedGeneration" in status and status["observedGeneration"] != generation:
        return IN_PROGRESS, (f"{obj.get('kind')} generation is {generation}, but latest observed generation is "
                             f"{status['observedGeneration']}")
    for c in status.get("conditions") or ():
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return IN_PROGRESS, c.get("message", "")
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return FAILED, c.get("message", "")
    return CURRENT, "Resource is current"
