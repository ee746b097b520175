"""Cluster mode of `terrasnap gc --store NAME`: roots from DatasetSnapshots, summary to the SnapshotStore.

Roots of store NAME: for every DatasetSnapshot (all namespaces), its current status.manifest.uri and its
status.history entries retained by the store's spec.gc.keep (the newest `last` entries, and every entry
completed within `within`) — those inside the store's URL, and all of those of NAME's own snapshots. The cluster's DatasetSnapshots are all the roots there
are, so GC runs with roots_complete=True: manifest folders no root names (and older than the grace) go too.
In-flight snapshots (phase Pending/Running) are protected by their registrations in the store; they are
counted in the report. Any doubt (a list call failing, an unknown root) fails closed in run_gc.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from terrasnap.engine.errors import GCFailedClosed, StoreUnreachable, TerrasnapError, UsageError
from terrasnap.engine.gc.report import GCReport
from terrasnap.engine.gc.run import run_gc
from terrasnap.engine.store import Store

GROUP = "terrasnap.io"
VERSION = "v1alpha1"
SNAPSHOTS = "datasetsnapshots"
STORES = "snapshotstores"
INFLIGHT_PHASES = ("Pending", "Running")


@dataclass(frozen=True)
class ClusterRoots:
    roots: list[str]
    inflight: list[str]  # ns/name of snapshots in Pending/Running
    snapshots: int


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def roots_from_snapshots(
    snapshots: Iterable[Mapping[str, Any]],
    store_name: str,
    store_url: str,
    keep_last: int,
    keep_within: timedelta,
    now: datetime,
) -> ClusterRoots:
    """Pure: the manifest URIs GC must keep for the store. An entry whose age is unknown is kept.

    A root belongs to the store by its URI, not by the snapshot's current spec.store: every retained manifest
    of every DatasetSnapshot that lies inside the store's URL is a root (a snapshot that once used this store,
    another store on the same URL). The store's own snapshots' URIs are roots wherever they point (one that
    names no manifest of the store is reported as missing)."""
    inside = store_url.rstrip("/") + "/"
    roots: set[str] = set()
    inflight: list[str] = []
    count = 0
    for obj in snapshots:
        own = (obj.get("spec") or {}).get("store") == store_name
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        retained = _retained(status, keep_last, keep_within, now)
        mine = {u for u in retained if own or u.startswith(inside)}
        if not own and not mine:
            continue
        count += 1
        roots |= mine
        if own and status.get("phase") in INFLIGHT_PHASES:
            inflight.append(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
    return ClusterRoots(roots=sorted(roots), inflight=sorted(inflight), snapshots=count)


def _retained(status: Mapping[str, Any], keep_last: int, keep_within: timedelta, now: datetime) -> set[str]:
    """The current manifest and the history entries the keep policy retains."""
    kept: set[str] = set()
    current = (status.get("manifest") or {}).get("uri")
    if current:
        kept.add(str(current))
    history = [h for h in status.get("history") or [] if isinstance(h, Mapping) and h.get("manifest")]
    # newest first; entries without a time sort first (kept by `last`) and are kept by `within` too
    history.sort(key=lambda h: _parse_time(h.get("completedAt")) or datetime.max.replace(tzinfo=UTC), reverse=True)
    for i, entry in enumerate(history):
        done = _parse_time(entry.get("completedAt"))
        if i < keep_last or done is None or now - done <= keep_within:
            kept.add(str(entry["manifest"]))
    return kept


def _kube() -> Any:
    from terrasnap.kube import official_client  # the operator's connection rules ($KUBECONFIG read now)

    return official_client()


def last_gc_status(report: GCReport | None, started: datetime, error: str | None, roots: int) -> dict[str, Any]:
    """status.lastGC as the SnapshotStore CRD declares it (undeclared fields would be pruned)."""
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    out: dict[str, Any] = {
        "startedAt": iso(started),
        "completedAt": iso(datetime.now(UTC)),
        "result": "Failed" if error or (report is not None and not report.ok) else "Succeeded",
        "roots": roots,
    }
    if report is not None:
        out.update(
            dryRun=report.dry_run,
            kept=report.kept + report.kept_inflight,
            deleted=len(report.deleted),
            skippedYoung=report.skipped_young,
            freedBytes=report.freed_bytes,
            report=report.uri,
        )
    message = error or ("; ".join(report.errors[:5]) if report is not None and report.errors else "")
    if not message and report is not None and report.missing_roots:
        shown = ", ".join(report.missing_roots[:3])
        message = f"{len(report.missing_roots)} root(s) name no published snapshot in the store (ignored): {shown}"
    if message:
        out["message"] = message[:4000]
    return out


def run_cluster_gc(
    store_name: str, *, dry_run: bool, grace: timedelta | None, endpoint: str | None = None
) -> dict[str, Any]:
    """Discover roots, run GC, record status.lastGC and an Event. Returns the report summary."""
    from terrasnap.api.durations import parse_duration as crd_duration
    from terrasnap.api.models import SpecError, StoreSpec

    started = datetime.now(UTC)
    client = _kube()
    custom = client.CustomObjectsApi()
    try:
        store_obj = custom.get_cluster_custom_object(GROUP, VERSION, STORES, store_name)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            raise UsageError(f"SnapshotStore {store_name!r} not found") from exc
        raise StoreUnreachable(f"reading SnapshotStore {store_name!r}: {exc.status} {exc.reason}") from exc
    try:
        spec = StoreSpec.from_dict(store_obj.get("spec"))
        keep_within = crd_duration(spec.gc.keep.within)
    except (SpecError, ValueError) as exc:
        raise UsageError(f"SnapshotStore {store_name!r}: {exc}") from exc
    grace_td = grace if grace is not None else crd_duration(spec.gc.grace_period)  # None: the store's
    dry = dry_run or spec.gc.dry_run

    report: GCReport | None = None
    error: str | None = None
    roots = ClusterRoots([], [], 0)
    try:
        try:
            listed = custom.list_cluster_custom_object(GROUP, VERSION, SNAPSHOTS)
        except client.exceptions.ApiException as exc:
            raise GCFailedClosed(f"listing DatasetSnapshots: {exc.status} {exc.reason}; nothing deleted") from exc
        roots = roots_from_snapshots(
            listed.get("items", []), store_name, spec.url, spec.gc.keep.last, keep_within, started
        )
        store = Store.from_url(spec.url, endpoint or spec.endpoint)
        store.check_reachable()
        report = run_gc(store, roots.roots, grace=grace_td, dry_run=dry, roots_complete=True, skip_missing_roots=True)
    except TerrasnapError as exc:
        error = exc.message
        _record(client, store_obj, last_gc_status(report, started, error, len(roots.roots)), error)
        raise
    _record(client, store_obj, last_gc_status(report, started, None, len(roots.roots)), None)
    summary = report.summary()
    summary["inflightSnapshots"] = roots.inflight
    return summary


def _record(client: Any, store_obj: Mapping[str, Any], last_gc: dict[str, Any], error: str | None) -> None:
    """Patch status.lastGC and post an Event; failures here are reported, never hide the GC result."""
    import sys

    name = store_obj["metadata"]["name"]
    try:
        client.CustomObjectsApi().patch_cluster_custom_object_status(
            GROUP, VERSION, STORES, name, {"status": {"lastGC": last_gc}}
        )
    except Exception as exc:
        print(f"terrasnap gc: could not patch SnapshotStore {name} status: {exc}", file=sys.stderr)
    if error:
        reason, message, kind = "GCFailed", f"garbage collection failed closed: {error}", "Warning"
    else:
        verb = "would delete" if last_gc.get("dryRun") else "deleted"
        reason, kind = "GarbageCollected", "Normal"
        message = (
            f"{verb} {last_gc.get('deleted', 0)} object(s), {last_gc.get('freedBytes', 0)} bytes; "
            f"kept {last_gc.get('kept', 0)}, {last_gc.get('skippedYoung', 0)} too young; "
            f"{last_gc.get('roots', 0)} root(s); report {last_gc.get('report', '')}"
        )
    from terrasnap.kube import event_manifest

    namespace = os.environ.get("TERRASNAP_EVENT_NAMESPACE", "default")  # cluster-scoped object → "default"
    event = event_manifest(store_obj, kind, reason, message, component="terrasnap-gc",
                           name_prefix=f"{name}.gc-", namespace=namespace)
    try:
        client.CoreV1Api().create_namespaced_event(namespace, event)
    except Exception as exc:
        print(f"terrasnap gc: could not post an Event for SnapshotStore {name}: {exc}", file=sys.stderr)
