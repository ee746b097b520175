"""Pieces shared by the snapshot Job and the GC CronJob: security contexts, credentials, labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from terrasnap.api import contract
from terrasnap.api.constants import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY
from terrasnap.api.models import SecretKeyRef

WORKER_UID = 65532
# The one writable place of a worker pod (an emptyDir): HOME, TMPDIR and caches point into it, so the root
# filesystem can stay read-only. Not /work or /tmp: on the test node pods see the host's filesystem, where
# checkouts and test data often live under /work or /tmp, and a mount there would hide them.
WORKSPACE = "/workspace"
CREDENTIALS_DIR = "/var/run/secrets/terrasnap/store"
CREDENTIALS_FILE = "credentials.json"
CREDENTIALS_VOLUME = "store-credentials"

Manifest = dict[str, Any]


def base_labels(component: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, "app.kubernetes.io/name": "terrasnap", LABEL_COMPONENT: component}


def pod_security_context() -> Manifest:
    """Pod Security Standards `restricted`."""
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volumes() -> tuple[list[Manifest], list[Manifest]]:
    """The emptyDir workspace (the root filesystem is read-only). Returns (volumes, mounts)."""
    return [{"name": "work", "emptyDir": {}}], [{"name": "work", "mountPath": WORKSPACE}]


def base_env(endpoint: str | None) -> list[Manifest]:
    env = [
        {"name": "HOME", "value": WORKSPACE},
        {"name": "TMPDIR", "value": WORKSPACE},
        {"name": "XDG_CACHE_HOME", "value": f"{WORKSPACE}/.cache"},
        # The worker's uid may have no passwd entry (getpass.getuser() then fails inside DVC), and the root
        # filesystem is read-only (DVC's site cache defaults to /var/tmp/dvc).
        {"name": "USER", "value": "terrasnap"},
        {"name": "LOGNAME", "value": "terrasnap"},
        {"name": "DVC_SITE_CACHE_DIR", "value": f"{WORKSPACE}/.dvc-site-cache"},
        {"name": "DVC_NO_ANALYTICS", "value": "1"},
        # gcsfs probes the bucket type over gRPC and hangs against emulators (see PITFALLS).
        {"name": "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "value": "false"},
    ]
    if endpoint:
        env.append({"name": "TERRASNAP_STORE_ENDPOINT", "value": endpoint})
    return env


@dataclass(frozen=True)
class SecretCopy:
    """A store Secret the operator must copy before the pod can mount it (pods mount only Secrets of their
    own namespace). The copy holds only the one key, under `CREDENTIALS_FILE`."""

    source_namespace: str
    source_name: str
    source_key: str
    namespace: str
    name: str


# The variable each provider's clients read a credentials file from: a GCS service-account key, an AWS
# shared credentials file (INI, `[default] aws_access_key_id = ...`), or for Azure (whose tools take no file)
# terrasnap's own: a connection string or the account key (engine/store.py azure_login).
CREDENTIALS_FILE_ENV = {"gs": "GOOGLE_APPLICATION_CREDENTIALS", "s3": "AWS_SHARED_CREDENTIALS_FILE",
                        "azure": contract.AZURE_CREDENTIALS_ENV}  # fmt: skip


def credentials(
    ref: SecretKeyRef | None, *, default_namespace: str, pod_namespace: str, copy_name: str, scheme: str = "gs"
) -> tuple[SecretCopy | None, list[Manifest], list[Manifest], list[Manifest]]:
    """How a pod in `pod_namespace` gets the store's credentials file.

    Returns (copy or None, volumes, mounts, env). A Secret in the pod's own namespace is mounted directly;
    one elsewhere (by default the operator's namespace) is copied to `copy_name` first.
    """
    if ref is None:
        return None, [], [], []
    source_namespace = ref.namespace or default_namespace
    if source_namespace == pod_namespace:
        copy = None
        secret_name, key = ref.name, ref.key
    else:
        copy = SecretCopy(source_namespace, ref.name, ref.key, pod_namespace, copy_name)
        secret_name, key = copy_name, CREDENTIALS_FILE
    volumes = [
        {
            "name": CREDENTIALS_VOLUME,
            "secret": {
                "secretName": secret_name,
                "items": [{"key": key, "path": CREDENTIALS_FILE}],
                "defaultMode": 0o440,
            },
        }
    ]
    mounts = [{"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True}]
    variable = CREDENTIALS_FILE_ENV.get(scheme, CREDENTIALS_FILE_ENV["gs"])
    env = [{"name": variable, "value": f"{CREDENTIALS_DIR}/{CREDENTIALS_FILE}"}]
    return copy, volumes, mounts, env


def owner_reference(obj: Mapping[str, Any], *, controller: bool = True) -> Manifest:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def secret_copy_manifest(
    copy: SecretCopy, value: bytes | str, *, labels: Mapping[str, str], owner: Manifest
) -> Manifest:
    """The copied Secret. `value` is the base64 text from the source Secret's `data` (never decoded here)."""
    text = value.decode() if isinstance(value, bytes) else value
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": copy.name,
            "namespace": copy.namespace,
            "labels": dict(labels),
            "annotations": {"terrasnap.io/copied-from": f"{copy.source_namespace}/{copy.source_name}"},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {CREDENTIALS_FILE: text},
    }
