"""controller.stores against an in-memory apiserver: the GC CronJob, credentials, status transitions."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from terrasnap import kube as k
from terrasnap.api.config import OperatorConfig
from terrasnap.controller import stores
from terrasnap.controller.context import Context, Retry
from tests.unit.fake_cluster import FakeCluster

SYSTEM = "terrasnap-system"
CONFIG = OperatorConfig(namespace=SYSTEM, worker_image="worker:1", gc_service_account="gc")
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
CRON = k.cronjobs_path(SYSTEM, "terrasnap-gc-main")


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def ctx(cluster: FakeCluster) -> Context:
    return Context(config=CONFIG, client=cluster)


def new_store(cluster: FakeCluster, **spec: Any) -> dict[str, Any]:
    return cluster.put(k.store_path(), {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
                                        "metadata": {"name": "main"}, "spec": {"url": "gs://acme/dvc", **spec}})  # fmt: skip


def status(cluster: FakeCluster) -> dict[str, Any]:
    return (cluster.get(k.store_path("main")) or {}).get("status") or {}


def condition(cluster: FakeCluster, type_: str) -> dict[str, Any] | None:
    return next((c for c in status(cluster).get("conditions") or () if c["type"] == type_), None)


def secret(cluster: FakeCluster, namespace: str, name: str, key: str) -> None:
    value = base64.b64encode(b"{}").decode()
    cluster.put(k.secrets_path(namespace), {"metadata": {"name": name, "namespace": namespace}, "data": {key: value}})


def test_a_store_gets_its_gc_cronjob_and_a_ready_status(cluster: FakeCluster, ctx: Context) -> None:
    stores.reconcile_store(ctx, new_store(cluster), T0)
    cron = cluster.get(CRON)
    assert cron is not None and cron["spec"]["schedule"] == "0 3 * * *"
    assert status(cluster)["cronJob"] == {"namespace": SYSTEM, "name": "terrasnap-gc-main"}
    ready = condition(cluster, "Ready")
    assert ready is not None and ready["status"] == "True" and ready["reason"] == "Configured"
    assert condition(cluster, "Stalled") is None
    assert cluster.events("default", "main") == [
        ("Normal", "Configured", f"GC CronJob {SYSTEM}/terrasnap-gc-main scheduled '0 3 * * *'")
    ]

    # Again (a resume): no second CronJob, no patch, no second Event.
    stores.reconcile_store(ctx, cluster.get(k.store_path("main")) or {}, T1)
    assert len(cluster.items(k.cronjobs_path(SYSTEM))) == 1
    assert ("patch", CRON) not in cluster.requests
    assert len(cluster.events("default", "main")) == 1


def test_a_schedule_change_patches_the_cronjob(cluster: FakeCluster, ctx: Context) -> None:
    stores.reconcile_store(ctx, new_store(cluster), T0)
    changed = cluster.edit_spec(k.store_path("main"), {"gc": {"schedule": "*/5 * * * *", "suspend": True}})
    stores.reconcile_store(ctx, changed, T1)
    cron = cluster.get(CRON) or {}
    assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["suspend"] is True
    assert status(cluster)["observedGeneration"] == 2
    ready = condition(cluster, "Ready") or {}
    assert ready["message"].endswith("(suspended)")
    assert len(cluster.events("default", "main")) == 1  # same status and reason: a new message is no news


def test_missing_credentials_stall_the_store_until_the_secret_exists(cluster: FakeCluster, ctx: Context) -> None:
    obj = new_store(cluster, credentials={"secretRef": {"name": "gcs", "key": "sa.json"}})
    with pytest.raises(Retry, match="gcs"):
        stores.reconcile_store(ctx, obj, T0)
    ready, stalled = condition(cluster, "Ready"), condition(cluster, "Stalled")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "CredentialsNotFound"
    assert stalled is not None and stalled["reason"] == "CredentialsNotFound"
    assert cluster.get(CRON) is None
    assert [e[:2] for e in cluster.events("default", "main")] == [("Warning", "CredentialsNotFound")]

    secret(cluster, SYSTEM, "gcs", "sa.json")
    stores.reconcile_store(ctx, cluster.get(k.store_path("main")) or {}, T1)
    assert cluster.get(CRON) is not None
    ready = condition(cluster, "Ready") or {}
    assert ready["status"] == "True" and ready["lastTransitionTime"] == T1
    assert condition(cluster, "Stalled") is None
    assert [e[:2] for e in cluster.events("default", "main")] == [
        ("Warning", "CredentialsNotFound"),
        ("Normal", "Configured"),
    ]


def test_credentials_in_another_namespace_are_copied_and_refreshed(cluster: FakeCluster, ctx: Context) -> None:
    secret(cluster, "creds", "gcs", "k")
    obj = new_store(cluster, credentials={"secretRef": {"namespace": "creds", "name": "gcs", "key": "k"}})
    stores.reconcile_store(ctx, obj, T0)
    (copy,) = cluster.items(k.secrets_path(SYSTEM))
    assert list(copy["data"]) and copy["metadata"]["ownerReferences"][0]["kind"] == "SnapshotStore"
    first_uid = copy["metadata"]["uid"]
    cluster.delete(k.secrets_path(SYSTEM, copy["metadata"]["name"]))
    cluster.put(k.secrets_path(SYSTEM), {**copy, "metadata": {**copy["metadata"], "uid": "stale"}})

    stores.reconcile_store(ctx, obj, T1)  # the copy exists: replaced, never read
    (again,) = cluster.items(k.secrets_path(SYSTEM))
    assert again["metadata"]["uid"] == first_uid != "stale"
    assert ("get", k.secrets_path(SYSTEM, copy["metadata"]["name"])) not in cluster.requests


def test_an_invalid_store_spec_is_reported_without_a_cronjob(cluster: FakeCluster, ctx: Context) -> None:
    stores.reconcile_store(ctx, new_store(cluster, gc={"schedule": "daily"}), T0)
    ready = condition(cluster, "Ready") or {}
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "schedule" in ready["message"]
    assert cluster.get(CRON) is None


def test_the_store_cache_follows_the_watch(cluster: FakeCluster, ctx: Context) -> None:
    obj = new_store(cluster)
    stores.remember_store(ctx, obj)
    created = obj["metadata"].get("creationTimestamp")
    assert ctx.store("main") == {"metadata": {"name": "main", "creationTimestamp": created}, "spec": obj["spec"]}
    stores.remember_store(ctx, obj, deleted=True)
    cluster.delete(k.store_path("main"))
    assert ctx.store("main") is None


def test_a_second_store_on_the_same_or_a_nested_url_is_not_ready_and_its_gc_is_suspended(
    cluster: FakeCluster, ctx: Context
) -> None:
    from terrasnap.planner.store_status import overlapping_store

    def store(name: str, url: str, created: str, endpoint: str | None = None) -> dict[str, Any]:
        spec = {"url": url, **({"endpoint": endpoint} if endpoint else {})}
        return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}

    old = store("old", "gs://acme/dvc", "2026-01-01T00:00:00Z")
    for url in ("gs://acme/dvc/", "gs://acme", "gs://acme/dvc/team-a"):
        assert "SnapshotStore 'old'" in (overlapping_store(store("new", url, "2026-02-01T00:00:00Z"), [old]) or "")
        assert overlapping_store(old, [store("new", url, "2026-02-01T00:00:00Z")]) is None  # the older one works
    assert overlapping_store(store("new", "gs://acme/dvc2", "2026-02-01T00:00:00Z"), [old]) is None
    assert overlapping_store(store("new", "gs://acme/dvc", "2026-02-01T00:00:00Z", "http://emu:4443"), [old]) is None

    first = new_store(cluster)
    stores.reconcile_store(ctx, first, T0)
    second = cluster.put(k.store_path(), {**first, "metadata": {"name": "twin"}})
    with pytest.raises(Retry, match="the same URL as SnapshotStore 'main'"):
        stores.reconcile_store(ctx, second, T1)
    got = cluster.get(k.store_path("twin"))
    assert got is not None
    (ready,) = [c for c in got["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "StoreConflict")
    cronjob = cluster.get(k.cronjobs_path(CONFIG.namespace, got["status"]["cronJob"]["name"]))
    assert cronjob is not None and cronjob["spec"]["suspend"] is True
    stores.reconcile_store(ctx, first, T2)  # the first store is not disturbed
