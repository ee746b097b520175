"""Cluster-mode root discovery (pure) and the status.lastGC document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from terrasnap.engine.gc.cluster import last_gc_status, roots_from_snapshots
from terrasnap.engine.gc.report import GCReport

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _snap(ns: str, name: str, store: str, phase: str, current: str | None, history: list[tuple[str, Any]]) -> dict:
    status: dict[str, Any] = {"phase": phase, "history": [{"snapshotID": m, "manifest": m, "completedAt": t}
                                                          for m, t in history]}
    if current:
        status["manifest"] = {"uri": current}
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"store": store}, "status": status}


def _ago(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_roots_current_plus_retained_history() -> None:
    snaps = [
        _snap("a", "s1", "main", "Succeeded", "m0", [("m0", _ago(0)), ("m1", _ago(10)), ("m2", _ago(100)),
                                                     ("m3", _ago(200)), ("m4", _ago(300))]),
        _snap("b", "s2", "main", "Running", "n0", [("n0", _ago(1)), ("n1", None), ("n2", "not a time")]),
        _snap("c", "s3", "other", "Succeeded", "x0", [("x0", _ago(0))]),
        _snap("d", "s4", "main", "Pending", None, []),
    ]
    got = roots_from_snapshots(snaps, "main", "gs://main/dvc", keep_last=2, keep_within=timedelta(days=90), now=NOW)
    # s1: m0, m1 by last=2 (and within), m2..m4 older than 90d and beyond last → dropped
    # s2: n0 current; entries without a usable time are always kept
    assert got.roots == ["m0", "m1", "n0", "n1", "n2"]
    assert got.inflight == ["b/s2", "d/s4"] and got.snapshots == 3


def test_within_keeps_more_than_last() -> None:
    snaps = [_snap("a", "s", "main", "Succeeded", "m0", [("m0", _ago(0)), ("m1", _ago(5)), ("m2", _ago(6))])]
    got = roots_from_snapshots(snaps, "main", "gs://main/dvc", keep_last=1, keep_within=timedelta(days=7), now=NOW)
    assert got.roots == ["m0", "m1", "m2"]


def test_roots_belong_to_a_store_by_uri_not_by_the_current_spec_store() -> None:
    """A snapshot that once published into this store (or one of another store on the same URL) keeps its
    manifests here; a URI of another store is not a root, and a prefix of the URL is not inside it."""
    inside, outside, lookalike = "gs://main/dvc/terrasnap/manifests/a/s/1", "gs://x/m", "gs://main/dvc2/m"
    snaps = [
        _snap("a", "moved", "other", "Succeeded", outside, [(outside, _ago(0)), (inside, _ago(1))]),
        _snap("b", "elsewhere", "other", "Running", lookalike, []),
    ]
    got = roots_from_snapshots(snaps, "main", "gs://main/dvc/", keep_last=5, keep_within=timedelta(days=7), now=NOW)
    assert got.roots == [inside] and got.snapshots == 1 and got.inflight == []


def test_last_gc_status_matches_the_crd_fields() -> None:
    report = GCReport(gc="g", store="file:///s", roots=["r"], roots_complete=True, dry_run=False,
                      grace_seconds=1, started="", kept=3, kept_inflight=1, skipped_young=2,
                      deleted=["a" * 32], freed_bytes=7, uri="file:///s/terrasnap/gc/x.json")
    doc = last_gc_status(report, NOW, None, 4)
    assert set(doc) <= {"startedAt", "completedAt", "result", "message", "dryRun", "roots", "kept", "deleted",
                        "skippedYoung", "freedBytes", "report"}
    assert doc["result"] == "Succeeded" and doc["deleted"] == 1 and doc["kept"] == 4 and doc["roots"] == 4
    failed = last_gc_status(None, NOW, "unknown root 'x'", 2)
    assert failed["result"] == "Failed" and "unknown root" in failed["message"]
