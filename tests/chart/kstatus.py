"""kstatus's rules for custom resources (sigs.k8s.io/cli-utils v0.37 pkg/kstatus/status: Compute,
checkGenericProperties, checkGeneration, checkReadyCondition), written out in Python so the rules terrasnap's
status relies on are readable next to the tests. tests/chart/test_health.py checks that this agrees with the
real kstatus (built from the Go module proxy by build_kstatus.sh) on every fixture.

For a kind without built-in rules, in this order:
  metadata.deletionTimestamp set                              → Terminating
  status.observedGeneration present and != metadata.generation → InProgress (LatestGenerationNotObserved)
  the first condition that is Reconciling=True or Stalled=True → InProgress or Failed
  a Ready condition: True → Current; False or Unknown          → InProgress
  otherwise                                                    → Current (also with no status at all)
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
    for c in status.get("conditions") or ():
        if c.get("type") == "Ready":
            if c.get("status") == "True":
                return CURRENT, "Resource is Ready"
            if c.get("status") in ("False", "Unknown"):
                return IN_PROGRESS, c.get("message", "")
    return CURRENT, "Resource is current"
