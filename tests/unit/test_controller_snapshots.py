"""controller.snapshots against an in-memory apiserver: Jobs, their results, supersession, retries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from terrasnap import kube as k
from terrasnap.api import contract
from terrasnap.api.config import OperatorConfig
from terrasnap.controller import snapshots
from terrasnap.controller.context import Context, Retry
from terrasnap.kube import KubeError
from terrasnap.planner.job import CONTAINER
from tests.unit.fake_cluster import FakeCluster

NS = "ml-data"
T0, T1, T2, T3 = (f"2026-01-01T00:0{i}:00Z" for i in range(4))
SID = "sha256:" + "ab" * 32
CONFIG = OperatorConfig(namespace="terrasnap-system", worker_image="worker:1")
SPEC: dict[str, Any] = {
    "store": "main",
    "source": {"git": {"url": "https://git.example/r.git", "revision": "main", "path": "data"}},
}


@pytest.fixture
def cluster() -> FakeCluster:
    c = FakeCluster()
    c.put(k.store_path(), {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
                           "metadata": {"name": "main"}, "spec": {"url": "gs://acme/dvc"}})  # fmt: skip
    return c


@pytest.fixture
def ctx(cluster: FakeCluster) -> Context:
    return Context(config=CONFIG, client=cluster)


def new_snapshot(cluster: FakeCluster, name: str = "buildings", **spec: Any) -> dict[str, Any]:
    return cluster.put(k.snapshot_path(NS), {"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
                                             "metadata": {"name": name, "namespace": NS},
                                             "spec": {**SPEC, **spec}})  # fmt: skip


def fresh(cluster: FakeCluster, name: str = "buildings") -> dict[str, Any]:
    obj = cluster.get(k.snapshot_path(NS, name))
    assert obj is not None
    return obj


def jobs(cluster: FakeCluster) -> list[dict[str, Any]]:
    return cluster.items(k.jobs_path(NS))


def finish(cluster: FakeCluster, job: dict[str, Any], message: str | None, ok: bool = True) -> dict[str, Any]:
    """What the Job controller and the kubelet write when the pod ends (its termination message)."""
    name = job["metadata"]["name"]
    if ok:
        condition = {"type": "Complete", "status": "True"}
    else:
        condition = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": T2}
    cluster.set_status(k.jobs_path(NS, name), {"startTime": T1, "completionTime": T2, "conditions": [condition],
                                               "succeeded" if ok else "failed": 1})  # fmt: skip
    terminated = {"exitCode": 0 if ok else 1, "finishedAt": T2, **({"message": message} if message else {})}
    uid = job["metadata"]["uid"]
    cluster.put(k.pods_path(NS), {
        "metadata": {"name": f"{name}-pod", "namespace": NS,
                     "labels": {"job-name": name, "batch.kubernetes.io/controller-uid": uid},
                     "ownerReferences": [{"kind": "Job", "name": name, "uid": uid, "controller": True}]},
        "status": {"containerStatuses": [{"name": CONTAINER, "state": {"terminated": terminated}}]}})  # fmt: skip
    got = cluster.get(k.jobs_path(NS, name))
    assert got is not None
    return got


def ok_result() -> str:
    return json.dumps({
        "ok": True, "snapshotID": SID, "manifest": contract.snapshot_uris("gs://acme/dvc", NS, "buildings", SID)["manifest"],
        "source": {"commit": "c0ffee"},
        "summary": {"files": 4, "features": 10, "rasters": 1, "bytes": 99, "repaired": 0, "rejected": 0, "warnings": 0},
    })  # fmt: skip


def test_a_new_snapshot_gets_one_job_with_a_deterministic_name_and_a_pending_status(
    cluster: FakeCluster, ctx: Context
) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster), T0, created=True)
    (job,) = jobs(cluster)
    name = job["metadata"]["name"]
    assert name.startswith("buildings-1-")
    status = fresh(cluster)["status"]
    assert status["phase"] == "Pending" and status["job"] == name and status["observedGeneration"] == 1
    assert cluster.events(NS, "buildings") == [("Normal", "JobCreated", f"Job {name} created for generation 1")]

    # The same object planned again (another cluster, same uid): the same name.
    other = FakeCluster()
    other.objects = {p: o for p, o in cluster.objects.items() if "/jobs/" not in p}
    snapshots.reconcile_snapshot(Context(config=CONFIG, client=other), fresh(cluster), T1)
    assert [j["metadata"]["name"] for j in jobs(other)] == [name]


def test_reconciling_again_neither_duplicates_the_job_nor_repeats_the_event(
    cluster: FakeCluster, ctx: Context
) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster), T0, created=True)
    ctx.service_accounts.clear()  # a restarted operator: the ServiceAccount create answers 409 too
    snapshots.reconcile_snapshot(ctx, fresh(cluster), T1)  # kopf's resume after a restart
    snapshots.reconcile_snapshot(Context(config=CONFIG, client=cluster), fresh(cluster), T2)
    assert len(jobs(cluster)) == 1
    assert len(cluster.items(k.service_accounts_path(NS))) == 1
    assert [reason for _, reason, _ in cluster.events(NS, "buildings")] == ["JobCreated"]
    creates = [p for verb, p in cluster.requests if verb == "create" and p == k.jobs_path(NS)]
    assert len(creates) == 3  # each run asked, and took 409 as success


def test_a_finished_jobs_termination_message_becomes_the_status(cluster: FakeCluster, ctx: Context) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster), T0, created=True)
    (job,) = jobs(cluster)
    cluster.set_status(k.jobs_path(NS, job["metadata"]["name"]), {"active": 1, "ready": 1, "startTime": T1})
    snapshots.observe_job(ctx, cluster.get(k.jobs_path(NS, job["metadata"]["name"])) or {}, T1)
    assert fresh(cluster)["status"]["phase"] == "Running"

    snapshots.observe_job(ctx, finish(cluster, job, ok_result()), T3)
    status = fresh(cluster)["status"]
    assert status["phase"] == "Succeeded"
    assert status["snapshotID"] == SID
    assert status["manifest"]["uri"].endswith("manifest.parquet")
    reasons = [reason for _, reason, _ in cluster.events(NS, "buildings")]
    assert reasons == ["JobCreated", "JobRunning", "Snapshotted"]

    # The same Job event again (a re-list): nothing read, nothing written.
    before = len(cluster.requests)
    snapshots.observe_job(ctx, cluster.get(k.jobs_path(NS, job["metadata"]["name"])) or {}, T3)
    assert cluster.requests[before:] == [("get", k.jobs_path(NS, job["metadata"]["name"]))]


def test_a_failed_jobs_engine_error_becomes_a_failed_status_with_a_warning(cluster: FakeCluster, ctx: Context) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster), T0, created=True)
    (job,) = jobs(cluster)
    message = json.dumps({"ok": False, "error": {"reason": "ValidationFailed", "message": "2 invalid geometries"}})
    snapshots.observe_job(ctx, finish(cluster, job, message, ok=False), T3)
    status = fresh(cluster)["status"]
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ValidationFailed"
    assert cluster.events(NS, "buildings")[-1][:2] == ("Warning", "ValidationFailed")

    # Settled: reconciling the same generation again starts nothing.
    snapshots.reconcile_snapshot(ctx, fresh(cluster), T3)
    assert len(jobs(cluster)) == 1


def test_a_spec_change_supersedes_the_running_job(cluster: FakeCluster, ctx: Context) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster), T0, created=True)
    (first,) = jobs(cluster)
    first_path = k.jobs_path(NS, first["metadata"]["name"])
    cluster.set_status(first_path, {"active": 1, "ready": 1, "startTime": T1})

    changed = cluster.edit_spec(k.snapshot_path(NS, "buildings"),
                                {"source": {"git": {**SPEC["source"]["git"], "revision": "v2"}}})  # fmt: skip
    assert changed["metadata"]["generation"] == 2
    snapshots.reconcile_snapshot(ctx, changed, T2)
    (second,) = jobs(cluster)
    assert second["metadata"]["name"].startswith("buildings-2-")
    assert cluster.get(first_path) is None
    status = fresh(cluster)["status"]
    assert status["observedGeneration"] == 2 and status["job"] == second["metadata"]["name"]
    assert ("Normal", "Superseded", f"Job {first['metadata']['name']} deleted: the spec changed") in cluster.events(
        NS, "buildings"
    )

    # A late event of the superseded Job (its last state, as the watch delivers it) changes nothing.
    before = fresh(cluster)["status"]
    late = {**first, "status": {"startTime": T1, "completionTime": T2, "succeeded": 1,
                                "conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    snapshots.observe_job(ctx, late, T3)
    assert fresh(cluster)["status"] == before


def test_a_finished_job_of_an_older_spec_is_not_deleted(cluster: FakeCluster, ctx: Context) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster), T0, created=True)
    (first,) = jobs(cluster)
    finish(cluster, first, ok_result())
    changed = cluster.edit_spec(k.snapshot_path(NS, "buildings"), {"source": {"git": {**SPEC["source"]["git"],
                                                                                       "revision": "v2"}}})  # fmt: skip
    snapshots.reconcile_snapshot(ctx, changed, T2)
    assert len(jobs(cluster)) == 2


def test_a_missing_store_is_reported_and_retried(cluster: FakeCluster, ctx: Context) -> None:
    with pytest.raises(Retry):
        snapshots.reconcile_snapshot(ctx, new_snapshot(cluster, store="nope"), T0, created=True)
    status = fresh(cluster)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "StoreNotFound" and "'nope'" in ready["message"]
    assert jobs(cluster) == []


def test_an_invalid_spec_is_reported_without_a_job(cluster: FakeCluster, ctx: Context) -> None:
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster, source={"git": {"url": "ftp://x/r.git"}}), T0)
    ready = next(c for c in fresh(cluster)["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert jobs(cluster) == []


def test_a_status_write_racing_another_writer_is_retried_on_a_fresh_read(cluster: FakeCluster, ctx: Context) -> None:
    obj = new_snapshot(cluster)
    cluster.set_status(k.snapshot_path(NS, "buildings"), {"someoneElse": True})  # obj is now stale
    snapshots.reconcile_snapshot(ctx, obj, T0, created=True)
    status = fresh(cluster)["status"]
    assert status["phase"] == "Pending"


def test_a_status_write_that_keeps_conflicting_raises(cluster: FakeCluster) -> None:
    path = k.snapshot_path(NS, new_snapshot(cluster)["metadata"]["name"])

    def compute(fresh_obj: dict[str, Any]) -> dict[str, Any]:
        cluster.set_status(path, {"n": fresh_obj["metadata"]["resourceVersion"]})  # someone writes in between
        return {"phase": "Pending"}

    with pytest.raises(KubeError, match="kept changing"):
        cluster.update_status(path, compute, attempts=3)


# -- SnapshotStore.spec.allowedNamespaces -----------------------------------------------------------------


def _limit_store(cluster: FakeCluster) -> None:
    cluster.edit_spec(k.store_path("main"), {"allowedNamespaces": {
        "from": "Selector", "selector": {"matchLabels": {"terrasnap.io/tenant": "geo"}}}})  # fmt: skip


def _reason(obj: dict[str, Any]) -> str:
    (ready,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    return str(ready["reason"])


def test_a_namespace_the_store_does_not_select_gets_no_job_and_no_secret(cluster: FakeCluster, ctx: Context) -> None:
    _limit_store(cluster)
    ns = cluster.put("/api/v1/namespaces", {"metadata": {"name": NS, "labels": {"team": "other"}}})
    obj = new_snapshot(cluster)
    snapshots.reconcile_snapshot(ctx, obj, T0, created=True)
    assert _reason(fresh(cluster)) == "NamespaceNotAllowed" and jobs(cluster) == []
    assert cluster.items(k.secrets_path(NS)) == [] and cluster.items(k.service_accounts_path(NS)) == []
    assert ("Warning", "NamespaceNotAllowed") in [(t, r) for t, r, _ in cluster.events(NS, "buildings")]

    # an unrelated watch event changes nothing; labelling the namespace runs the snapshot
    snapshots.namespace_changed(ctx, ns, T1)
    assert jobs(cluster) == []
    snapshots.namespace_changed(ctx, {"metadata": {"name": NS, "labels": {"terrasnap.io/tenant": "geo"}}}, T1)
    (job,) = jobs(cluster)
    assert fresh(cluster)["status"]["phase"] == "Pending" and job["metadata"]["namespace"] == NS


def test_allowed_namespaces_default_to_all_and_selectors_follow_the_apiserver() -> None:
    from terrasnap.api.models import AllowedNamespaces, SpecError, StoreSpec
    from terrasnap.api.selectors import label_selector_matches as m

    assert StoreSpec.from_dict({"url": "gs://a/b"}).allowed_namespaces.allows(None)
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
        {"key": "frozen", "operator": "DoesNotExist"}]}  # fmt: skip
    assert m(sel, {"a": "1", "tier": "gold"}) and not m(sel, {"a": "1", "tier": "bronze"})
    assert not m(sel, {"a": "1", "tier": "gold", "frozen": ""}) and not m(sel, {"tier": "gold"})
    assert m({}, {}) and m({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["y"]}]}, {})
    assert not m({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"y": "x"})
    # the empty selector selects every namespace, as everywhere in Kubernetes
    assert AllowedNamespaces.from_dict({"from": "Selector", "selector": {}}).allows(None)
    with pytest.raises(SpecError, match="selector is required"):
        AllowedNamespaces.from_dict({"from": "Selector"})
    with pytest.raises(SpecError, match="must be one of All, Selector"):
        AllowedNamespaces.from_dict({"from": "Same"})


def test_a_snapshot_of_a_conflicting_store_gets_no_job(cluster: FakeCluster, ctx: Context) -> None:
    """The newer of two stores on one URL pushes nothing: its snapshots wait with StoreConflict."""
    from terrasnap.controller import stores

    for name, created in (("main", "2026-01-01T00:00:00Z"), ("twin", "2026-02-01T00:00:00Z")):
        stores.remember_store(ctx, {"metadata": {"name": name, "creationTimestamp": created},
                                    "spec": {"url": "gs://acme/dvc/"}})  # fmt: skip
    obj = new_snapshot(cluster, store="twin")
    with pytest.raises(Retry, match="same URL as SnapshotStore 'main'"):
        snapshots.reconcile_snapshot(ctx, obj, T0, created=True)
    assert _reason(fresh(cluster)) == "StoreConflict" and jobs(cluster) == []
    snapshots.reconcile_snapshot(ctx, new_snapshot(cluster, "other"), T0, created=True)  # main's run
    assert len(jobs(cluster)) == 1
