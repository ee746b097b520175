"""What a pod spec refers to: Secret and ConfigMap data, the downward API (fieldRef, resourceFieldRef), $(VAR).

A Job's completion index reaches a pod this way: the Job controller adds a fieldRef env var
(JOB_COMPLETION_INDEX) on the pod's `batch.kubernetes.io/job-completion-index` label (Kubernetes 1.37; the
annotation of the same name is set too), which `field_ref` reads like any other label or annotation.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Literal

from .kube import Kube, Obj

Kind = Literal["secrets", "configmaps"]


class ConfigError(Exception):
    """A container cannot be configured yet (missing Secret/ConfigMap key, unbound claim, ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a known variable is replaced, an unknown one kept, `$$` is `$`."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)


def field_ref(pod: Obj, path: str, node: str) -> str:
    md = pod["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        value: str = (md.get(m.group(1)) or {}).get(m.group(2), "")
        return value
    simple = {
        "metadata.name": md.get("name", ""),
        "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""),
        "spec.nodeName": node,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path == "metadata.labels":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((md.get("labels") or {}).items()))
    if path == "metadata.annotations":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((md.get("annotations") or {}).items()))
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path}")
    return str(simple[path])


def _quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q)


def resource_ref(container: Obj, ref: Obj, node_alloc: dict[str, str]) -> str:
    res = ref["resource"]
    kind, _, name = res.partition(".")
    val = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if val is None:
        val = node_alloc.get(name, "0")
    divisor = _quantity(str(ref.get("divisor", "1")))
    n = _quantity(str(val)) / divisor
    return str(math.ceil(n))


def lookup(kube: Kube, ns: str, kind: Kind, name: str, optional: bool) -> Obj | None:
    """A Secret or ConfigMap; None if it is missing and optional."""
    obj: Obj | None = kube.get(f"/api/v1/namespaces/{ns}/{kind}/{name}", ok404=True)
    if obj is None and not optional:
        singular = {"secrets": "secret", "configmaps": "configmap"}[kind]
        raise ConfigError("CreateContainerConfigError", f'{singular} "{name}" not found')
    return obj


def data(kind: Kind, obj: Obj | None) -> dict[str, bytes]:
    """The keys of a Secret or ConfigMap (data and binaryData), decoded."""
    if obj is None:
        return {}
    if kind == "secrets":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out
