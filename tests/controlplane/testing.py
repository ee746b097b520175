"""Helpers for tests against the test control plane (used by tests/cluster/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[1:])} exited {self.returncode}: {self.stderr or self.stdout}"


@dataclass
class Cluster:
    kubeconfig: str
    bin_dir: Path
    server: str
    node_name: str
    version: str
    state_dir: Path
    info: dict = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses that talk to the cluster (KUBECONFIG, our kubectl first on PATH)."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig,
                "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}"}

    def kubectl(self, *args: str, input: str | bytes | None = None, check: bool = True,
                timeout: float = 120, namespace: str | None = None) -> subprocess.CompletedProcess:
        """Run the cluster's kubectl; returns CompletedProcess (text). Raises KubectlError if check fails."""
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", self.kubeconfig]
        if namespace:
            cmd += ["-n", namespace]
        cmd += list(args)
        if isinstance(input, bytes):
            input = input.decode()
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and p.returncode != 0:
            raise KubectlError(p.returncode, cmd, p.stdout, p.stderr)
        return p

    def get(self, *args: str, namespace: str | None = None) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json", namespace=namespace).stdout)

    def apply(self, manifest: str | dict | list, namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
        """`kubectl apply -f -` with YAML/JSON text, a dict or a list of dicts."""
        if not isinstance(manifest, str):
            items = manifest if isinstance(manifest, list) else [manifest]
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        return self.kubectl("apply", "-f", "-", input=manifest, namespace=namespace, check=check)

    def api_client(self) -> ApiClient:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
        return client.ApiClient(cfg)


def wait_for(fn: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll fn until it returns a truthy value; return it. Raises TimeoutError with the last error/value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # keep polling; report the last error
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
