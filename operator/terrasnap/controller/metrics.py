"""Prometheus metrics of the operator (served by `prometheus_client` on --metrics-port)."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

from terrasnap.api.constants import PHASES

SNAPSHOTS = Gauge(
    "terrasnap_snapshots", "DatasetSnapshots by phase (of their observed generation).", ["phase"]
)
JOB_DURATION = Histogram(
    "terrasnap_job_duration_seconds",
    "Wall time of snapshot Jobs, from start to completion or failure.",
    ["outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600),
)
FAILURES = Counter("terrasnap_snapshot_failures_total", "Snapshots that ended Failed, by reason.", ["reason"])
RECONCILE_ERRORS = Counter(
    "terrasnap_reconcile_errors_total", "Handler runs that raised (and were retried).", ["resource"]
)
JOBS_CREATED = Counter("terrasnap_jobs_created_total", "Snapshot Jobs created.")
JOBS_SUPERSEDED = Counter("terrasnap_jobs_superseded_total", "Running Jobs deleted because the spec changed.")

for _phase in (*PHASES, "Unknown"):
    SNAPSHOTS.labels(phase=_phase).set(0)


class PhaseTracker:
    """Keeps `terrasnap_snapshots{phase}` equal to the phases of the DatasetSnapshots seen."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = dict.fromkeys((*PHASES, "Unknown"), 0)
        self._lock = threading.Lock()

    def set(self, namespace: str, name: str, phase: str | None) -> None:
        new = phase if phase in PHASES else "Unknown"
        assert new is not None
        with self._lock:
            old = self._phases.get((namespace, name))
            if old == new:
                return
            self._phases[(namespace, name)] = new
            self._move(old, new)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._move(self._phases.pop((namespace, name), None), None)

    def _move(self, old: str | None, new: str | None) -> None:
        if old is not None:
            self._counts[old] -= 1
            SNAPSHOTS.labels(phase=old).set(self._counts[old])
        if new is not None:
            self._counts[new] += 1
            SNAPSHOTS.labels(phase=new).set(self._counts[new])


PHASE_TRACKER = PhaseTracker()
