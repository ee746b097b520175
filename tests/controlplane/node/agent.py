"""The node agent: registers this Node, dispatches pod events to one `PodWorker` per pod, runs the loops.

Threads: the heartbeat (Lease, Node status), the pod watch, the provisioner, the scheduler's re-check and
the kubelet API server. On SIGTERM every running container gets 2 s to stop; no podman container of this
node outlives the agent (`podman.sweep` when it starts and stops).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import shutil
import threading
from pathlib import Path

from . import containers, podman, provisioner, scheduler
from .kube import ApiError, Kube, Obj, delete_pod_now
from .kubelet_api import make_server
from .node import Node
from .pod import PodWorker

log = logging.getLogger("node-agent")


class Agent:
    def __init__(self, kube: Kube, node_name: str, state: Path, port: int, apiserver_port: int, version: str,
                 tls: tuple[str, str, str]):
        self.kube = kube
        state = state.resolve()
        state.mkdir(parents=True, exist_ok=True)
        (state / "pods").mkdir(exist_ok=True)
        (state / "pvs").mkdir(exist_ok=True)
        self.state = state
        self.node = Node(kube, node_name, state, port, apiserver_port, version)
        self.tls = tls  # (cert, key, client CA) of the kubelet API
        self.workers: dict[str, PodWorker] = {}
        self.finished: dict[tuple[str, str], str] = {}  # (ns, name) -> uid of a finished pod, for logs
        self.done: set[str] = set()  # uids of pods whose worker ended: never run twice
        self.wlock = threading.Lock()
        self.stopping = self.node.stopping
        self.server: http.server.ThreadingHTTPServer | None = None

    # -- pods -----------------------------------------------------------------------------------------
    def handle_pod(self, etype: str, pod: Obj) -> None:
        md, spec = pod["metadata"], pod["spec"]
        uid = md["uid"]
        with self.wlock:
            w = self.workers.get(uid)
        if etype == "DELETED":
            if w:
                w.deleted = True
                w.changed.set()
            else:
                self.cleanup_pod_dir(uid, md["namespace"], md["name"])
            return
        if w:
            w.update(pod)
            return
        node = spec.get("nodeName")
        if not node:
            if not md.get("deletionTimestamp") and pod.get("status", {}).get("phase", "Pending") == "Pending":
                scheduler.bind(self.node, pod)
            return
        if node != self.node.name:
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if uid in self.done or (self.state / "pods" / uid / "done").exists():
            phase = "Succeeded"  # ran here already; a late event with an older phase must not start it again
        if phase in ("Succeeded", "Failed"):
            if md.get("deletionTimestamp"):  # nothing runs: let the object go (the kubelet's final delete)
                threading.Thread(target=delete_pod_now, args=(self.kube, pod), daemon=True).start()
            else:
                self.finished.setdefault((md["namespace"], md["name"]), uid)
            return
        if self.stopping.is_set():
            return
        # A pod already Running that this agent does not know was started by an earlier agent process (its
        # processes died with it): it runs again from the start, as after a node reboot.
        w = PodWorker(self.node, pod, self.worker_done)
        with self.wlock:
            self.workers[uid] = w
            self.finished.pop((md["namespace"], md["name"]), None)
        w.thread.start()

    def worker_done(self, w: PodWorker) -> None:
        with self.wlock:
            self.done.add(w.uid)
            with contextlib.suppress(OSError):
                (w.dir / "done").touch()
            self.workers.pop(w.uid, None)
            if w.deleted:
                self.cleanup_pod_dir(w.uid, w.ns, w.name)
            else:
                self.finished[(w.ns, w.name)] = w.uid

    def cleanup_pod_dir(self, uid: str, ns: str, name: str) -> None:
        if self.finished.get((ns, name)) == uid:
            self.finished.pop((ns, name), None)
        d = self.state / "pods" / uid
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)

    def running_pods(self) -> list[Obj]:
        return [w.pod for w in list(self.workers.values())]

    def find_logs(self, ns: str, name: str, cname: str, previous: bool) -> tuple[Path, PodWorker | None] | None:
        with self.wlock:
            w = next((w for w in self.workers.values() if w.ns == ns and w.name == name), None)
            uid = w.uid if w else self.finished.get((ns, name))
        if uid is None:
            return None
        d = self.state / "pods" / uid / "logs" / cname
        runs = sorted((int(p.stem) for p in d.glob("*.log")), reverse=True) if d.exists() else []
        if not runs:
            return None
        if previous:
            if len(runs) < 2:
                return None
            return d / f"{runs[1]}.log", None
        return d / f"{runs[0]}.log", w

    def pod_loop(self) -> None:
        """List, then watch all pods (a relist after 410 Gone or an error); pods gone meanwhile are deleted."""
        path = "/api/v1/pods"
        while not self.stopping.is_set():
            try:
                lst = self.kube.get(path)
                rv = lst["metadata"]["resourceVersion"]
                seen = set()
                for pod in lst["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.handle_pod("ADDED", pod)
                with self.wlock:
                    gone = [w for uid, w in self.workers.items() if uid not in seen]
                for w in gone:
                    w.deleted = True
                    w.changed.set()
                while not self.stopping.is_set():
                    for ev in self.kube.watch(path, rv):
                        t, obj = ev["type"], ev["object"]
                        if t == "ERROR":
                            raise ApiError(obj.get("code", 500), json.dumps(obj))
                        rv = obj["metadata"]["resourceVersion"]
                        if t == "BOOKMARK":
                            continue
                        try:
                            self.handle_pod(t, obj)
                        except Exception:
                            log.exception("handling pod event")
                        if self.stopping.is_set():
                            return
            except ApiError as e:
                if e.status != 410:
                    log.warning("pod watch: %s", e)
                    self.stopping.wait(1)
            except Exception as e:
                log.warning("pod watch: %s", e)
                self.stopping.wait(1)

    # -- kubelet API ----------------------------------------------------------------------------------
    def serve(self) -> None:
        self.server = make_server(self, self.node.port, *self.tls)
        self.server.serve_forever(poll_interval=0.5)

    # -- main -----------------------------------------------------------------------------------------
    def run(self) -> None:
        podman.sweep(self.state)  # containers an earlier agent process left (it was killed)
        self.node.register()
        provisioner.ensure_storage_class(self.node)
        loops = {
            "heartbeat_loop": self.node.heartbeat_loop,
            "pod_loop": self.pod_loop,
            "pv_loop": lambda: provisioner.pv_loop(self.node),
            "schedule_loop": lambda: scheduler.schedule_loop(self.node),
            "serve": self.serve,
        }
        threads = [threading.Thread(target=f, name=name, daemon=True) for name, f in loops.items()]
        for t in threads:
            t.start()
        self.stopping.wait()
        log.info("stopping: killing running pods")
        with self.wlock:
            workers = list(self.workers.values())
        ts = []
        for w in workers:
            for p in list(w.procs.values()):
                t = threading.Thread(target=containers.kill, args=(p, 2.0), daemon=True)
                t.start()
                ts.append(t)
        for t in ts:
            t.join(10)
        podman.sweep(self.state)  # none may outlive the agent
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.shutdown()
