"""A small synchronous Kubernetes client over plain JSON dicts.

The official client's typed models are not needed here: the planner builds plain manifests, and the
operator only creates, reads, merge-patches and deletes a handful of kinds. This uses the official
package's configuration loading (kubeconfig, in-cluster, token refresh) and its TLS-aware REST client.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import rest

from terrasnap.api.constants import API_VERSION, SNAPSHOT_PLURAL, STORE_PLURAL
from terrasnap.planner.patch import merge_diff

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class Kube:
    """Thread-safe; one instance per operator process."""

    def __init__(self, configuration: k8s_client.Configuration | None = None, timeout: float = 30.0) -> None:
        if configuration is None:
            configuration = k8s_client.Configuration()
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                # $KUBECONFIG as it is now, not as it was when the client was first imported
                k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                            client_configuration=configuration)
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 16)
        self.configuration = configuration
        self.timeout = timeout
        self._rest = rest.RESTClientObject(configuration)
        self._lock = threading.Lock()

    # --- raw requests -----------------------------------------------------------------------------------

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
        headers: dict[str, str] = {"Accept": "application/json", "User-Agent": "terrasnap-operator"}
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

    # --- status writes ----------------------------------------------------------------------------------

    def update_status(
        self, path: str, compute: Callable[[Obj], Obj | None], attempts: int = 8, current: Obj | None = None
    ) -> tuple[Obj, Obj, Obj] | None:
        """Read the object at `path`, compute its new status, and merge-patch `/status` with the read
        resourceVersion as a precondition, retrying on conflicts.

        `current`, if given, is a recent copy of the object to try first (saves a read when it is fresh).
        Returns (object as read, old status, new status), or None if the object is gone.
        """
        for attempt in range(attempts):
            obj = current if attempt == 0 and current is not None else self.get(path)
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
                self.patch(path + "/status", patch)
                return obj, old, new
            except KubeError as exc:
                if exc.status != 409:
                    raise
                log.debug("status conflict on %s, retrying", path)
        raise KubeError(409, "Conflict", f"status of {path} kept changing")


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
