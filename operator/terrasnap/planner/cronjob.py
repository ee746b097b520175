"""SnapshotStore → its garbage-collection CronJob, in the operator's namespace, owned by the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from terrasnap.api.config import OperatorConfig
from terrasnap.api.constants import LABEL_STORE
from terrasnap.api.models import StoreSpec
from terrasnap.planner import names
from terrasnap.planner.common import (
    WORKSPACE,
    Manifest,
    SecretCopy,
    base_env,
    base_labels,
    container_security_context,
    credentials,
    owner_reference,
    pod_security_context,
    scratch_volumes,
)

CONTAINER = "gc"
GC_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@dataclass(frozen=True)
class CronJobPlan:
    name: str
    namespace: str
    manifest: Manifest
    secret_copy: SecretCopy | None


def gc_labels(store_name: str) -> dict[str, str]:
    labels = base_labels("gc")
    labels[LABEL_STORE] = store_name
    return labels


def plan_gc_cronjob(store_obj: Mapping[str, Any], config: OperatorConfig) -> CronJobPlan:
    """The GC CronJob for a SnapshotStore. Its pods use the GC ServiceAccount (list DatasetSnapshots, patch
    SnapshotStore status) and run `terrasnap gc --store NAME`. Raises `SpecError` on an invalid spec."""
    store_name = store_obj["metadata"]["name"]
    store = StoreSpec.from_dict(store_obj.get("spec"))
    name = names.gc_cronjob_name(store_name)
    labels = gc_labels(store_name)
    env = base_env(store.endpoint)
    env.append({"name": "TERRASNAP_NAMESPACE", "value": config.namespace})
    volumes, mounts = scratch_volumes()
    copy, cred_volumes, cred_mounts, cred_env = credentials(
        store.credentials,
        default_namespace=config.namespace,
        pod_namespace=config.namespace,
        copy_name=names.gc_secret_name(store_name),
        scheme=store.scheme,
    )
    cred_env = [*cred_env, *store.provider_env()]
    volumes += cred_volumes
    mounts += cred_mounts
    env += cred_env
    args = ["gc", "--store", store_name, "--grace", store.gc.grace_period]
    if store.endpoint:
        args += ["--endpoint", store.endpoint]
    if store.gc.dry_run:
        args.append("--dry-run")
    container: Manifest = {
        "name": CONTAINER,
        "image": config.worker_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["terrasnap"],
        "args": args,
        "env": env,
        "resources": GC_RESOURCES,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "workingDir": WORKSPACE,
    }
    manifest: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(store_obj)],
        },
        "spec": {
            "schedule": store.gc.schedule,
            "suspend": store.gc.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": 6 * 3600,
                    "ttlSecondsAfterFinished": config.job_ttl_seconds,
                    "template": {
                        "metadata": {"labels": dict(labels)},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": config.gc_service_account,
                            # The GC reads DatasetSnapshots (its roots) and writes SnapshotStore status.
                            "automountServiceAccountToken": True,
                            "enableServiceLinks": False,
                            "securityContext": pod_security_context(),
                            "containers": [container],
                            "volumes": volumes,
                        },
                    },
                },
            },
        },
    }
    return CronJobPlan(name=name, namespace=config.namespace, manifest=manifest, secret_copy=copy)


def cronjob_differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the live CronJob's spec (as far as we set it) differs from the desired one."""
    return not _subset(desired.get("spec") or {}, existing.get("spec") or {}) or not _subset(
        desired["metadata"].get("labels") or {}, (existing.get("metadata") or {}).get("labels") or {}
    )


def _subset(want: Any, have: Any) -> bool:
    """`want` is contained in `have` (the apiserver adds defaults we do not set)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(_subset, want, have))
    return bool(want == have)
