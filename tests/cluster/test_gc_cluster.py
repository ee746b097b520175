"""`terrasnap gc --store NAME` (cluster mode) against the real control plane and fake-gcs-server, without the
operator: roots come from DatasetSnapshots (current + history retained by spec.gc.keep), the summary goes to
the SnapshotStore's status.lastGC and an Event, and any doubt fails closed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from terrasnap.engine.store import Store
from tests.controlplane.testing import Cluster
from tests.engine.gcsim import gc_cli, objects_in, publish, put, put_dir
from tests.support import fakegcs

pytestmark = [pytest.mark.cluster, pytest.mark.gcs]
CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/datasetsnapshots.terrasnap.io", "crd/snapshotstores.terrasnap.io")  # fmt: skip


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _snapshot(cluster: Cluster, ns: str, name: str, store: str, status: dict[str, Any]) -> None:
    cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"store": store, "source": {"bucket": {"url": "gs://raw/annotations/"}}}})
    cluster.kubectl("patch", "datasetsnapshot", name, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}), namespace=ns)


def _world(cluster: Cluster, ns: str, gcs: fakegcs.FakeGCS, bucket: str, within: str) -> dict[str, Any]:
    store = Store.from_url(f"gs://{bucket}/dvc", gcs.endpoint)
    shared, cur, old, gone = (put(store, b"shared"), put(store, b"current"), put(store, b"old history"),
                              put(store, b"deleted snapshot"))
    cur_dir = put_dir(store, {"a": shared, "b": cur})
    m_cur = publish(store, ns, "roads", [shared, cur, cur_dir])
    m_old = publish(store, ns, "roads", [shared, old])
    m_gone = publish(store, ns, "gone", [gone])
    name = f"gc-{uuid.uuid4().hex[:8]}"
    cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore", "metadata": {"name": name},
                   "spec": {"url": f"gs://{bucket}/dvc", "endpoint": gcs.endpoint,
                            "gc": {"gracePeriod": "1h", "keep": {"last": 1, "within": within}}}})
    now = datetime.now(UTC)
    _snapshot(cluster, ns, "roads", name, {
        "phase": "Succeeded", "manifest": {"uri": m_cur},
        "history": [{"snapshotID": "sha256:" + "1" * 64, "manifest": m_cur, "completedAt": _iso(now)},
                    {"snapshotID": "sha256:" + "0" * 64, "manifest": m_old,
                     "completedAt": _iso(now - timedelta(days=10))}]})
    # a snapshot of another store is not a root here (and does not make GC fail)
    _snapshot(cluster, ns, "elsewhere", "another-store", {"phase": "Succeeded", "manifest": {"uri": "gs://x/y"}})
    return {"store": store, "name": name, "shared": shared, "cur": cur, "cur_dir": cur_dir, "old": old,
            "gone": gone, "m_cur": m_cur, "m_old": m_old, "m_gone": m_gone}


def _last_gc(cluster: Cluster, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = cluster.get("snapshotstore", name).get("status", {}).get("lastGC", {})
    return doc


def _events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    items = cluster.get("events", namespace="default")["items"]
    return [e for e in items if e["involvedObject"].get("name") == name]


def test_cluster_gc_collects_what_retention_dropped(
    cluster: Cluster, crds: None, namespace: str, gcs: fakegcs.FakeGCS, gcs_bucket: str,
) -> None:
    w = _world(cluster, namespace, gcs, gcs_bucket, within="7d")
    # a dry run first: same report, nothing deleted
    code, summary, _ = gc_cli("--store", w["name"], "--dry-run", "--grace", "0s")
    assert code == 0 and summary is not None
    assert {w["old"], w["gone"]} <= objects_in(w["store"])
    assert _last_gc(cluster, w["name"])["dryRun"] is True
    assert summary["deleted"] == 2 and summary["rootsComplete"] is True

    # --grace 0s: the objects here are seconds old (fake-gcs-server cannot backdate them)
    assert gc_cli("--store", w["name"], "--grace", "0s")[0] == 0
    # kept: the current snapshot (and its .dir entries); gone: the history entry beyond keep.last and
    # older than keep.within, and the snapshot no DatasetSnapshot names; their manifest folders too
    assert objects_in(w["store"]) == {w["shared"], w["cur"], w["cur_dir"]}
    for uri, kept in ((w["m_cur"], True), (w["m_old"], False), (w["m_gone"], False)):
        assert w["store"].exists(w["store"].rel_from_uri(uri)) is kept, uri
    last = _last_gc(cluster, w["name"])
    assert last["result"] == "Succeeded" and last["deleted"] == 2 and last["dryRun"] is False
    assert last["roots"] == 1 and last["freedBytes"] == len(b"old history") + len(b"deleted snapshot")
    report = json.loads(w["store"].read_bytes(w["store"].rel_from_uri(last["report"])))
    assert sorted(report["deletedObjects"]) == sorted([w["old"], w["gone"]])
    reasons = [e["reason"] for e in _events(cluster, w["name"])]
    assert reasons.count("GarbageCollected") == 2


def test_cluster_gc_keeps_history_within_the_window(
    cluster: Cluster, crds: None, namespace: str, gcs: fakegcs.FakeGCS, gcs_bucket: str,
) -> None:
    w = _world(cluster, namespace, gcs, gcs_bucket, within="30d")
    assert gc_cli("--store", w["name"], "--grace", "0s")[0] == 0
    assert w["old"] in objects_in(w["store"]) and w["gone"] not in objects_in(w["store"])
    assert _last_gc(cluster, w["name"])["roots"] == 2


def test_cluster_gc_reports_a_missing_root_and_fails_closed_on_an_unreadable_one(
    cluster: Cluster, crds: None, namespace: str, gcs: fakegcs.FakeGCS, gcs_bucket: str,
) -> None:
    """A status naming a manifest the store does not hold protects nothing and must not stop GC for every
    tenant of the store (it is reported); a published root whose object list cannot be read stops it."""
    w = _world(cluster, namespace, gcs, gcs_bucket, within="7d")
    missing = w["store"].uri("terrasnap/manifests/x/y/" + "0" * 64 + "/manifest.parquet")
    _snapshot(cluster, namespace, "broken", w["name"], {"phase": "Succeeded", "manifest": {"uri": missing}})
    assert gc_cli("--store", w["name"], "--grace", "0s")[0] == 0
    last = _last_gc(cluster, w["name"])
    assert last["result"] == "Succeeded" and missing in last["message"]
    report = json.loads(w["store"].read_bytes(w["store"].rel_from_uri(last["report"])))
    assert report["missingRoots"] == [missing]
    assert objects_in(w["store"]) == {w["shared"], w["cur"], w["cur_dir"]}

    meta = w["store"].rel_from_uri(w["m_cur"]).rsplit("/", 1)[0] + "/metadata.json"
    assert w["store"].delete_many([meta]) == []
    before = objects_in(w["store"])
    assert gc_cli("--store", w["name"], "--grace", "0s")[0] == 3
    assert objects_in(w["store"]) == before
    last = _last_gc(cluster, w["name"])
    assert last["result"] == "Failed" and "metadata.json is missing" in last["message"]
    assert "GCFailed" in [e["reason"] for e in _events(cluster, w["name"])]


def test_cluster_gc_unknown_store(cluster: Cluster, crds: None) -> None:
    assert gc_cli("--store", f"no-such-{uuid.uuid4().hex[:6]}", "--grace", "0s")[0] == 2
