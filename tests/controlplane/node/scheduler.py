"""The scheduler's part: bind pending pods to this node if it may run them.

Honours schedulerName, cordon (spec.unschedulable), nodeSelector and NoSchedule/NoExecute taints against
tolerations; no affinity, topology spread or resource fit (there is one node).
"""

from __future__ import annotations

import logging

from .kube import ApiError, Obj, pod_path
from .node import Node

log = logging.getLogger("node-agent")


def tolerates(t: Obj, taint: Obj) -> bool:
    if t.get("effect") and t["effect"] != taint["effect"]:
        return False
    if t.get("operator") == "Exists":
        return not t.get("key") or t["key"] == taint["key"]
    return bool(t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""))


def schedulable(node: Node, pod: Obj) -> bool:
    spec = pod["spec"]
    if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
        return False
    got = node.kube.get(f"/api/v1/nodes/{node.name}", ok404=True)
    if got is None or got["spec"].get("unschedulable"):
        return False
    labels = got["metadata"].get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    for taint in got["spec"].get("taints") or []:
        if taint["effect"] not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in spec.get("tolerations") or []):
            return False
    return True


def bind(node: Node, pod: Obj) -> None:
    md = pod["metadata"]
    if not schedulable(node, pod):
        return
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"], "uid": md["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node.name}}
    try:
        node.kube.request("POST", pod_path(md["namespace"], md["name"]) + "/binding", body)
        node.event(pod, "Scheduled", f"Successfully assigned {md['namespace']}/{md['name']} to {node.name}")
    except ApiError as e:
        if e.status not in (404, 409):
            log.warning("bind %s/%s: %s", md["namespace"], md["name"], e)


def schedule_loop(node: Node) -> None:
    """Re-try binding pending pods (the watch only fires when a pod changes, not when the node does)."""
    while not node.stopping.wait(1):
        try:
            pods = node.kube.get("/api/v1/pods", query={"fieldSelector": "spec.nodeName=,status.phase=Pending"})
            for pod in pods["items"]:
                if not pod["metadata"].get("deletionTimestamp"):
                    bind(node, pod)
        except Exception as e:
            log.warning("scheduler: %s", e)
