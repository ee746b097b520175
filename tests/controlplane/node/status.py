"""The status a pod reports: container states (waiting, running, terminated) and the pod's phase and conditions.

Pure functions of what the pod worker knows; `pod_status` keeps a condition's lastTransitionTime while its
status does not change, like the kubelet.
"""

from __future__ import annotations

from typing import Any

from .kube import Obj


def waiting(c: Obj, reason: str, message: str | None = None, restarts: int = 0,
            last: Obj | None = None) -> Obj:
    st: dict[str, Any] = {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                          "started": False, "restartCount": restarts, "state": {"waiting": {"reason": reason}},
                          "lastState": last or {}}
    if message:
        st["state"]["waiting"]["message"] = message
    return st


def _ids(c: Obj, pid: int, container_id: str | None, image_id: str | None) -> tuple[str, str]:
    """(containerID, imageID): the runtime's, or for a process `process://<pid>`, `terrasnap-process://<image>`."""
    return (container_id or f"process://{pid}", image_id or f"terrasnap-process://{c.get('image', '')}")


def running(c: Obj, pid: int, started_at: str, restarts: int, last: Obj | None, init: bool = False, *,
            container_id: str | None = None, image_id: str | None = None) -> Obj:
    cid, iid = _ids(c, pid, container_id, image_id)
    return {"name": c["name"], "image": c.get("image", ""), "imageID": iid,
            "containerID": cid, "ready": not init, "started": True,
            "restartCount": restarts, "state": {"running": {"startedAt": started_at}}, "lastState": last or {}}


def exit_code(returncode: int) -> int:
    """Killed by signal N -> 128+N, like a container runtime."""
    return 128 - returncode if returncode < 0 else returncode


def terminated(c: Obj, pid: int, started_at: str, finished_at: str, restarts: int, code: int, message: str,
               last: Obj, reason: str | None = None, *, container_id: str | None = None,
               image_id: str | None = None) -> Obj:
    cid, iid = _ids(c, pid, container_id, image_id)
    term: Obj = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                 "startedAt": started_at, "finishedAt": finished_at, "containerID": cid}
    if message:
        term["message"] = message
    return {"name": c["name"], "image": c.get("image", ""), "imageID": iid,
            "containerID": cid, "ready": False, "started": False,
            "restartCount": restarts, "state": {"terminated": term}, "lastState": last}


def pod_status(pod: Obj, *, phase: str, reason: str | None, message: str | None, start_time: str,
               statuses: dict[str, Obj], init_statuses: dict[str, Obj], volumes_ready: bool,
               last: Obj | None, now: str) -> Obj:
    spec = pod["spec"]
    conts = [statuses[c["name"]] for c in spec["containers"] if c["name"] in statuses]
    inits = [init_statuses[c["name"]] for c in spec.get("initContainers") or [] if c["name"] in init_statuses]
    initialized = all(s.get("state", {}).get("terminated", {}).get("exitCode") == 0 for s in inits) and (
        len(inits) == len(spec.get("initContainers") or []))
    all_ready = bool(conts) and len(conts) == len(spec["containers"]) and all(s["ready"] for s in conts)
    completed = phase in ("Succeeded", "Failed")

    def cond(type_: str, ok: bool, reason: str | None = None) -> Obj:
        c: Obj = {"type": type_, "status": "True" if ok else "False", "lastProbeTime": None,
                  "lastTransitionTime": now}
        if reason and not ok:
            c["reason"] = reason
        prev = next((x for x in (last or {}).get("conditions", []) if x["type"] == type_), None)
        if prev and prev["status"] == c["status"]:
            c["lastTransitionTime"] = prev["lastTransitionTime"]
        return c

    conditions = [
        cond("PodReadyToStartContainers", volumes_ready),
        cond("Initialized", initialized, "ContainersNotInitialized"),
        cond("Ready", all_ready and not completed, "PodCompleted" if completed else "ContainersNotReady"),
        cond("ContainersReady", all_ready and not completed, "PodCompleted" if completed else "ContainersNotReady"),
        cond("PodScheduled", True),
    ]
    # keep conditions set by others (e.g. DisruptionTarget from controllers)
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] not in {x["type"] for x in conditions}:
            conditions.append(c)
    return {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": start_time,
        "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
        "conditions": conditions,
        "containerStatuses": conts,
        "initContainerStatuses": inits,
        "reason": reason,
        "message": message,
    }
