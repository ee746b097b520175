"""The API server as the node agent talks to it: a small JSON REST client with watch, and API timestamps."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import config as kconfig
from kubernetes.client import Configuration

Obj = dict[str, Any]  # a Kubernetes object (or a part of one) as parsed JSON


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> float:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Kube:
    """Minimal JSON REST client built on the kubernetes package's kubeconfig loader."""

    def __init__(self, kubeconfig: str):
        cfg = Configuration()
        kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.host: str = cfg.host.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "terrasnap-node-agent"}
        if cfg.api_key.get("authorization"):
            self.headers["Authorization"] = cfg.api_key["authorization"]
        self.pool = urllib3.PoolManager(
            num_pools=4, maxsize=16, cert_reqs="CERT_REQUIRED", ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file, key_file=cfg.key_file,
        )

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json", timeout: float = 30, ok404: bool = False) -> Any:
        url = self.host + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        r = self.pool.request(method, url, body=data, headers=headers, timeout=timeout, retries=False)
        if r.status == 404 and ok404:
            return None
        if r.status >= 300:
            raise ApiError(r.status, r.data.decode(errors="replace"))
        return json.loads(r.data) if r.data else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def merge_patch(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json", **kw)

    def watch(self, path: str, rv: str, timeout: int = 60) -> Iterator[Obj]:
        q = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": str(timeout),
             "allowWatchBookmarks": "true"}
        url = self.host + path + "?" + urllib.parse.urlencode(q)
        r = self.pool.request("GET", url, headers=self.headers, preload_content=False, retries=False,
                              timeout=urllib3.Timeout(connect=10, read=timeout + 30))
        try:
            if r.status != 200:
                raise ApiError(r.status, r.read().decode(errors="replace"))
            buf = b""
            while True:
                chunk = r.read1(65536)  # whatever has arrived (read(n) would wait for n bytes)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            r.release_conn()


def pod_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "")


def delete_pod_now(kube: Kube, pod: Obj) -> None:
    """The kubelet's final delete: everything has stopped, let the API server remove the object."""
    md = pod["metadata"]
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "preconditions": {"uid": md["uid"]}}
    with contextlib.suppress(ApiError):
        kube.request("DELETE", pod_path(md["namespace"], md["name"]), body)
