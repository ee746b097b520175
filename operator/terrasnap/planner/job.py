"""DatasetSnapshot → the Job that makes its snapshot (a pure function of the object, its store and config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from terrasnap.api import contract
from terrasnap.api.config import OperatorConfig
from terrasnap.api.constants import (
    ANNOTATION_RETRY,
    ANNOTATION_SPEC_HASH,
    LABEL_GENERATION,
    LABEL_SNAPSHOT,
    LABEL_STORE,
)
from terrasnap.api.models import VOLUME_MOUNT, SnapshotSpec, StoreSpec
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

CONTAINER = "snapshot"
RESULT_FILE = "/dev/termination-log"
# One directory per DVC remote the repository names (engine/dvcsource.py reads <dir>/<remote>/credentials.json).
DVC_REMOTES_DIR = contract.DVC_REMOTE_CREDENTIALS_DIR
DVC_REMOTES_ENV = contract.DVC_REMOTE_CREDENTIALS_ENV


@dataclass(frozen=True)
class JobPlan:
    name: str
    spec_hash: str
    manifest: Manifest
    secret_copy: SecretCopy | None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.manifest["metadata"]["labels"])


def snapshot_labels(name: str, generation: int, store: str) -> dict[str, str]:
    labels = base_labels("snapshot")
    labels.update({LABEL_SNAPSHOT: name, LABEL_GENERATION: str(generation), LABEL_STORE: store})
    return labels


def command_args(snapshot_name: str, namespace: str, spec: SnapshotSpec, store: StoreSpec) -> list[str]:
    args = ["snapshot", spec.source.argument(), "--store", store.url]
    if store.endpoint:
        args += ["--endpoint", store.endpoint]
    args += ["--name", snapshot_name, "--namespace", namespace]
    args += spec.validation.arguments()
    args += ["--result-file", RESULT_FILE, "--workdir", WORKSPACE]
    return args


def pod_failure_policy() -> Manifest:
    """Rejected data and usage errors fail the Job at once; infrastructure errors count against
    backoffLimit; evictions and preemptions (DisruptionTarget) are retried without counting."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": list(contract.EXIT_FINAL),
                },
            },
            {
                "action": "Count",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": list(contract.EXIT_RETRYABLE),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def plan_job(
    snapshot: Mapping[str, Any], store_name: str, store: StoreSpec, config: OperatorConfig
) -> JobPlan:
    """The Job for the snapshot's current generation.

    `snapshot` is the DatasetSnapshot object (apiVersion, kind, metadata with name/namespace/uid/generation,
    spec). Raises `SpecError` for a spec the apiserver should have refused.
    """
    meta = snapshot["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 1)
    raw_spec = snapshot.get("spec") or {}
    spec = SnapshotSpec.from_dict(raw_spec)
    retry = (meta.get("annotations") or {}).get(ANNOTATION_RETRY) or None
    hash_ = names.spec_hash(meta["uid"], raw_spec, retry)
    job_name = names.job_name(name, generation, hash_)
    labels = snapshot_labels(name, generation, store_name)

    env = base_env(store.endpoint)
    volumes, mounts = scratch_volumes()
    copy, cred_volumes, cred_mounts, cred_env = credentials(
        store.credentials,
        default_namespace=config.namespace,
        pod_namespace=namespace,
        copy_name=names.store_secret_name(job_name),
    )
    volumes += cred_volumes
    mounts += cred_mounts
    env += cred_env

    git = spec.source.git
    if git is not None and git.credentials is not None:
        env.append(
            {
                "name": "TERRASNAP_GIT_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": git.credentials.name, "key": git.credentials.key}},
            }
        )
    if git is not None and git.dvc_remotes:
        # Only Secrets of the snapshot's own namespace; each mounted for its remote alone.
        for i, remote in enumerate(git.dvc_remotes):
            volumes.append({"name": f"dvc-remote-{i}", "secret": {
                "secretName": remote.credentials.name, "defaultMode": 0o440,
                "items": [{"key": remote.credentials.key, "path": contract.DVC_REMOTE_CREDENTIALS_FILE}]}})
            mounts.append({"name": f"dvc-remote-{i}", "mountPath": f"{DVC_REMOTES_DIR}/{remote.name}",
                           "readOnly": True})
        env.append({"name": DVC_REMOTES_ENV, "value": DVC_REMOTES_DIR})
    volume = spec.source.volume
    if volume is not None:
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}}
        )
        mounts.append({"name": "source", "mountPath": VOLUME_MOUNT, "readOnly": True})

    container: Manifest = {
        "name": CONTAINER,
        "image": spec.image or config.worker_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["terrasnap"],
        "args": command_args(name, namespace, spec, store),
        "env": env,
        "resources": _resources(spec.resources, config.resources),
        "securityContext": container_security_context(),
        "terminationMessagePath": RESULT_FILE,
        "terminationMessagePolicy": "File",
        "volumeMounts": mounts,
        "workingDir": WORKSPACE,
    }
    manifest: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SPEC_HASH: hash_},
            "ownerReferences": [owner_reference(snapshot)],
        },
        "spec": {
            "backoffLimit": spec.backoff_limit if spec.backoff_limit is not None else config.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds or config.active_deadline_seconds,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": config.worker_service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    return JobPlan(name=job_name, spec_hash=hash_, manifest=manifest, secret_copy=copy)


def _resources(requested: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> Manifest:
    """Spec resources over the defaults, per resource name. A default limit is dropped for a resource whose
    request the spec sets (a request above the default limit would make the Job invalid)."""
    user_requests = dict((requested or {}).get("requests") or {})
    user_limits = dict((requested or {}).get("limits") or {})
    requests = {**dict(defaults.get("requests") or {}), **user_requests}
    limits = {k: v for k, v in dict(defaults.get("limits") or {}).items() if k not in user_requests}
    limits.update(user_limits)
    result: Manifest = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def worker_service_account(namespace: str, config: OperatorConfig) -> Manifest:
    """The worker ServiceAccount the operator keeps in each namespace with snapshots: no API rights are
    bound to it and its token is never mounted (the Job's pods report through termination messages)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": config.worker_service_account,
            "namespace": namespace,
            "labels": base_labels("worker"),
        },
        "automountServiceAccountToken": False,
    }
