"""The one Kubernetes client of terrasnap: the operator and the cluster GC connect here, and post Events here.

A small synchronous client over plain JSON dicts. The official client's typed models are not needed: the
planner builds plain manifests, and the operator only creates, reads, merge-patches and deletes a handful
of kinds. This uses the official package's configuration loading (kubeconfig, in-cluster, token refresh)
and its TLS-aware REST client. `official_client()` hands the same configuration to code written against
the official typed API (the GC's roots discovery).

Configuration is loaded when a client connects, never at import: $KUBECONFIG as it is then (a test session
sets it after the client library was first imported; cluster GC once failed that way).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import rest

from terrasnap.api.constants import API_VERSION, SNAPSHOT_PLURAL, STORE_PLURAL
from terrasnap.planner.patch import merge_diff

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
EVENT_MESSAGE_LIMIT = 1024
# Events about cluster-scoped objects (SnapshotStores) go here, as kopf and kubectl do it.
DEFAULT_EVENT_NAMESPACE = "default"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


def load_configuration() -> k8s_client.Configuration:
    """In-cluster config if there is one, else $KUBECONFIG (or ~/.kube/config) as it is now."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


def official_client() -> Any:
    """The official `kubernetes.client` module, its default configuration loaded by `load_configuration`."""
    k8s_client.Configuration.set_default(load_configuration())
    return k8s_client


# --- the interface handlers are written against (a unit-test fake implements it too) ----------------


class Client(Protocol):
    """What the operator's logic needs from the apiserver. Paths are API paths (see the *_path helpers)."""

    def get(self, path: str) -> Obj | None: ...

    def list(self, path: str, label_selector: str | None = None) -> list[Obj]: ...

    def create(self, path: str, body: Mapping[str, Any]) -> tuple[Obj | None, bool]: ...

    def patch(self, path: str, body: Mapping[str, Any]) -> Obj: ...

    def delete(self, path: str, propagation: str = "Background") -> bool: ...

    def update_status(
        self, path: str, compute: Callable[[Obj], Obj | None], attempts: int = 8, current: Obj | None = None
    ) -> tuple[Obj, Obj, Obj] | None: ...

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class Requests(Protocol):
    def get(self, path: str) -> Obj | None: ...

    def patch(self, path: str, body: Mapping[str, Any]) -> Obj: ...


def update_status(
    client: Requests,
    path: str,
    compute: Callable[[Obj], Obj | None],
    attempts: int = 8,
    current: Obj | None = None,
) -> tuple[Obj, Obj, Obj] | None:
    """Read the object at `path`, compute its new status, and merge-patch `/status` with the read
    resourceVersion as a precondition, retrying on conflicts.

    `current`, if given, is a recent copy of the object to try first (saves a read when it is fresh).
    Returns (object as read, old status, new status), or None if the object is gone.
    """
    for attempt in range(attempts):
        obj = current if attempt == 0 and current is not None else client.get(path)
        if obj is None:
            return None
        old = obj.get("status") or {}
        new = compute(obj)
        if new is None:
            return obj, old, old
        diff = merge_diff(old, new)
        if not diff:
            return obj, old, new
        patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": diff}
        try:
            client.patch(path + "/status", patch)
            return obj, old, new
        except KubeError as exc:
            if exc.status != 409:
                raise
            log.debug("status conflict on %s, retrying", path)
    raise KubeError(409, "Conflict", f"status of {path} kept changing")


# --- Events ------------------------------------------------------------------------------------------------


def event_manifest(
    obj: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    *,
    component: str,
    now: datetime | None = None,
    name_prefix: str | None = None,
    namespace: str | None = None,
) -> Obj:
    """A core/v1 Event about `obj`: in `namespace`, else the object's, else `default` (cluster-scoped)."""
    meta = obj.get("metadata") or {}
    namespace = namespace or meta.get("namespace") or DEFAULT_EVENT_NAMESPACE
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),  # empty for a cluster-scoped object, as kubectl describe expects
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": name_prefix or f"{meta.get('name', 'terrasnap')}.",
            "namespace": namespace,
        },
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "type": type_,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": os.environ.get("HOSTNAME") or component,
    }


# --- the real client ---------------------------------------------------------------------------------------


class Kube:
    """Thread-safe; one instance per process."""

    def __init__(
        self,
        configuration: k8s_client.Configuration | None = None,
        timeout: float = 30.0,
        component: str = "terrasnap-operator",
    ) -> None:
        if configuration is None:
            configuration = load_configuration()
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 16)
        self.configuration = configuration
        self.timeout = timeout
        self.component = component
        self._rest = rest.RESTClientObject(configuration)
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        url = self.configuration.host.rstrip("/") + path
        if query:
            url += "?" + urlencode(query)
        headers: dict[str, str] = {"Accept": "application/json", "User-Agent": self.component}
        if body is not None:
            headers["Content-Type"] = content_type
        with self._lock:  # the token refresh hook of the official configuration is not thread-safe
            auth = self.configuration.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            headers["Authorization"] = str(auth["value"])
        response = self._rest.request(
            method, url, headers=headers, body=body, _request_timeout=(10, self.timeout)
        )
        try:
            raw = response.read()
        finally:
            response.response.release_conn()
        data = json.loads(raw) if raw else {}
        if response.status >= 400:
            message = data.get("message", "") if isinstance(data, dict) else ""
            raise KubeError(response.status, str(data.get("reason") or response.reason), message)
        return data if isinstance(data, dict) else {}

    def get(self, path: str) -> Obj | None:
        try:
            return self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": label_selector} if label_selector else None
        return list(self.request("GET", path, query=query).get("items") or [])

    def create(self, path: str, body: Mapping[str, Any]) -> tuple[Obj | None, bool]:
        """POST; returns (object, True) or (None, False) when it already exists (HTTP 409)."""
        try:
            return self.request("POST", path, dict(body)), True
        except KubeError as exc:
            if exc.status == 409:
                return None, False
            raise

    def patch(self, path: str, body: Mapping[str, Any]) -> Obj:
        return self.request("PATCH", path, dict(body), content_type=MERGE_PATCH)

    def delete(self, path: str, propagation: str = "Background") -> bool:
        """DELETE; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self.request("DELETE", path, body)
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def update_status(
        self, path: str, compute: Callable[[Obj], Obj | None], attempts: int = 8, current: Obj | None = None
    ) -> tuple[Obj, Obj, Obj] | None:
        return update_status(self, path, compute, attempts=attempts, current=current)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event about `obj`. Best effort: a failed post is logged, never raised."""
        manifest = event_manifest(obj, type_, reason, message, component=self.component)
        try:
            self.create(events_path(manifest["metadata"]["namespace"]), manifest)
        except Exception:  # events never fail a reconcile
            log.warning("could not post event %s about %s", reason, manifest["involvedObject"].get("name"),
                        exc_info=log.isEnabledFor(logging.DEBUG))  # fmt: skip


# --- paths -------------------------------------------------------------------------------------------------


def _q(part: str) -> str:
    return quote(part, safe="")


def snapshot_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{API_VERSION}/namespaces/{_q(namespace)}/{SNAPSHOT_PLURAL}"
    return f"{base}/{_q(name)}" if name else base


def store_path(name: str | None = None) -> str:
    base = f"/apis/{API_VERSION}/{STORE_PLURAL}"
    return f"{base}/{_q(name)}" if name else base


def jobs_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/batch/v1/namespaces/{_q(namespace)}/jobs"
    return f"{base}/{_q(name)}" if name else base


def cronjobs_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/batch/v1/namespaces/{_q(namespace)}/cronjobs"
    return f"{base}/{_q(name)}" if name else base


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/pods"


def secrets_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{_q(namespace)}/secrets"
    return f"{base}/{_q(name)}" if name else base


def service_accounts_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/serviceaccounts"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/events"


def namespace_path(name: str) -> str:
    return f"/api/v1/namespaces/{_q(name)}"
