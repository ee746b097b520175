"""planner: SnapshotStore → GC CronJob."""

from __future__ import annotations

from typing import Any

import pytest

from terrasnap.api.config import OperatorConfig
from terrasnap.api.models import SpecError
from terrasnap.planner import names
from terrasnap.planner.cronjob import cronjob_differs, plan_gc_cronjob

CONFIG = OperatorConfig(namespace="terrasnap-system", worker_image="worker:1", gc_service_account="gc")


def store(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "terrasnap.io/v1alpha1",
        "kind": "SnapshotStore",
        "metadata": {"name": "main", "uid": "s-uid", "generation": 1},
        "spec": {"url": "gs://acme/dvc", **spec},
    }


def test_gc_cronjob() -> None:
    plan = plan_gc_cronjob(store(gc={"schedule": "*/5 * * * *", "gracePeriod": "1h", "dryRun": True}), CONFIG)
    cron = plan.manifest
    assert plan.namespace == "terrasnap-system" and cron["metadata"]["namespace"] == "terrasnap-system"
    assert plan.name == "terrasnap-gc-main"
    assert cron["metadata"]["ownerReferences"][0]["uid"] == "s-uid"
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gc"
    (container,) = pod["containers"]
    assert container["command"] == ["terrasnap"]
    assert container["args"] == ["gc", "--store", "main", "--grace", "1h", "--dry-run"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TERRASNAP_NAMESPACE"] == "terrasnap-system"


def test_gc_cronjob_defaults_suspend_and_credentials() -> None:
    plan = plan_gc_cronjob(store(gc={"suspend": True}, credentials={"secretRef": {"name": "sa"}}), CONFIG)
    assert plan.manifest["spec"]["schedule"] == "0 3 * * *"
    assert plan.manifest["spec"]["suspend"] is True
    assert plan.secret_copy is None  # the Secret is already in the operator's namespace
    other = plan_gc_cronjob(
        store(credentials={"secretRef": {"namespace": "creds", "name": "sa", "key": "k"}}), CONFIG
    )
    assert other.secret_copy is not None and other.secret_copy.name == names.gc_secret_name("main")


def test_gc_cronjob_name_bounded() -> None:
    long = "s" * 200
    name = names.gc_cronjob_name(long)
    assert len(name) <= 52 and name != names.gc_cronjob_name("s" * 199)


def test_cronjob_differs() -> None:
    desired = plan_gc_cronjob(store(), CONFIG).manifest
    live = {"metadata": dict(desired["metadata"]), "spec": {**desired["spec"], "timeZone": None}}
    assert not cronjob_differs(live, desired)
    changed = plan_gc_cronjob(store(gc={"schedule": "@hourly"}), CONFIG).manifest
    assert cronjob_differs(live, changed)


def test_invalid_store() -> None:
    with pytest.raises(SpecError):
        plan_gc_cronjob(store(gc={"gracePeriod": "forever"}), CONFIG)
