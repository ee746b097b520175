"""What every reconcile function gets: the configuration, a client, and the operator's small caches.

The reconcile functions (`snapshots`, `stores`) are plain functions of (Context, object, now): no kopf, no
globals, no clock of their own, so unit tests run them against an in-memory client. `handlers` holds the one
real Context of the process and the kopf registrations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from terrasnap import kube as k
from terrasnap.api.config import OperatorConfig
from terrasnap.controller import metrics
from terrasnap.planner import names
from terrasnap.planner import status as st
from terrasnap.planner.common import SecretCopy, secret_copy_manifest
from terrasnap.planner.status import Event

log = logging.getLogger("terrasnap.operator")


class Retry(Exception):
    """Not done yet, for a reason the user can fix (a missing store or Secret): try again after `delay` s."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class Context:
    config: OperatorConfig
    client: k.Client
    service_accounts: set[str] = field(default_factory=set)  # namespaces with the worker SA ensured
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)  # SnapshotStores seen by the watch
    seen_jobs: dict[str, tuple[str, int]] = field(default_factory=dict)  # Job uid → (state, failed pods)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # Namespace → labels (the watch's)

    def announce(self, obj: Mapping[str, Any], events: list[Event]) -> None:
        """Post Events about `obj` (messages redacted: no credentials in URLs reach an Event)."""
        for event in events:
            self.client.event(obj, event.type, event.reason, st.redact(event.message))

    def store(self, name: str) -> dict[str, Any] | None:
        """The SnapshotStore from the watch's cache, else from the apiserver."""
        cached = self.stores.get(name)
        if cached is not None:
            return cached
        found = self.client.get(k.store_path(name))
        if found is not None:
            self.stores[name] = found
        return found

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A Namespace's labels from the watch's cache, else from the apiserver; None if it does not exist."""
        cached = self.namespaces.get(name)
        if cached is not None:
            return cached
        found = self.client.get(k.namespace_path(name))
        if found is None:
            return None
        labels = dict((found.get("metadata") or {}).get("labels") or {})
        self.namespaces[name] = labels
        return labels

    def copy_secret(self, copy: SecretCopy, labels: Mapping[str, str], owner: dict[str, Any]) -> bool:
        """Create (or refresh, after a rotation) the copy of a store Secret: only its one key. False if the
        source Secret or its key is missing. Values pass through as base64 text, never decoded or logged."""
        source = self.client.get(k.secrets_path(copy.source_namespace, copy.source_name))
        value = ((source or {}).get("data") or {}).get(copy.source_key)
        if value is None:
            return False
        manifest = secret_copy_manifest(copy, value, labels=labels, owner=owner)
        _, created = self.client.create(k.secrets_path(copy.namespace), manifest)
        if not created:
            # An earlier copy exists. Replace it (copies are immutable) so a rotated key reaches the next pod
            # — without reading it: the operator may create and delete Secrets there, never get them.
            self.client.delete(k.secrets_path(copy.namespace, copy.name))
            self.client.create(k.secrets_path(copy.namespace), manifest)
        return True

    def delete_secret_copy(self, job: Mapping[str, Any]) -> None:
        """Delete the per-Job credentials copy once the Job no longer needs it."""
        meta = job.get("metadata") or {}
        copy_name = names.store_secret_name(meta.get("name", ""))
        volumes = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or ()
        if any((v.get("secret") or {}).get("secretName") == copy_name for v in volumes):
            self.client.delete(k.secrets_path(meta["namespace"], copy_name))


def track_phase(obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    metrics.PHASE_TRACKER.set(meta.get("namespace", ""), meta.get("name", ""), status.get("phase"))
