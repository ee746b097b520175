"""One pod's life on this node: volumes, init containers (and sidecars), containers, restarts, deadline, deletion.

A `PodWorker` thread per pod; the agent hands it each new version of the pod object (`update`) and it
pushes the pod's status whenever what it reports changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import urllib3

from . import containers, status
from .containers import PodContext, Process
from .kube import ApiError, Obj, delete_pod_now, now, parse_time, pod_path
from .node import Node
from .refs import ConfigError
from .volumes import Volume, VolumeSource

log = logging.getLogger("node-agent")


class PodWorker:
    """Runs one pod on this node: volumes, init containers, containers, status, deletion."""

    def __init__(self, node: Node, pod: Obj, on_done: Callable[[PodWorker], None]):
        self.node = node
        self.kube = node.kube
        self.pod = pod
        self.on_done = on_done
        md = pod["metadata"]
        self.ns: str = md["namespace"]
        self.name: str = md["name"]
        self.uid: str = md["uid"]
        self.dir = node.state / "pods" / self.uid
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.deleted = False          # object gone from the API
        self.procs: dict[str, Process] = {}  # "<name>" or "init:<name>"
        self.statuses: dict[str, Obj] = {}
        self.init_statuses: dict[str, Obj] = {}
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str = (pod.get("status") or {}).get("startTime") or now()
        self.started_at_mono = time.monotonic() - max(0.0, time.time() - parse_time(self.start_time))
        self.last_status: Obj | None = None
        self.volumes: dict[str, Volume] = {}
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.ns}/{self.name}", daemon=True)

    # -- API plumbing -------------------------------------------------------------------------------------
    def update(self, pod: Obj) -> None:
        with self.lock:
            self.pod = pod
        self.changed.set()

    @property
    def deleting(self) -> bool:
        return self.deleted or bool(self.pod["metadata"].get("deletionTimestamp"))

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.node.event(self.pod, reason, message, type_)

    def push_status(self, force: bool = False) -> None:
        st = status.pod_status(
            self.pod, phase=self.phase, reason=self.reason, message=self.message, start_time=self.start_time,
            statuses=self.statuses, init_statuses=self.init_statuses,
            volumes_ready=bool(self.volumes) or not self.pod["spec"].get("volumes"),
            last=self.last_status, now=now(),
        )
        if not force and st == self.last_status:
            return
        try:
            self.kube.merge_patch(pod_path(self.ns, self.name) + "/status", {"status": st})
            self.last_status = st
        except ApiError as e:
            if e.status == 404:
                self.deleted = True
            else:
                log.warning("status update for %s/%s failed: %s", self.ns, self.name, e)
        except Exception as e:  # network hiccup: next change retries
            log.warning("status update for %s/%s failed: %s", self.ns, self.name, e)

    # -- container states ---------------------------------------------------------------------------------
    def _statuses(self, init: bool) -> dict[str, Obj]:
        return self.init_statuses if init else self.statuses

    def _state(self, c: Obj, init: bool) -> Obj:
        return self._statuses(init)[c["name"]]

    def _waiting(self, c: Obj, reason: str, message: str | None = None, restarts: int = 0,
                 last: Obj | None = None, init: bool = False) -> None:
        self._statuses(init)[c["name"]] = status.waiting(c, reason, message, restarts, last)

    def _running(self, c: Obj, p: Process, restarts: int, last: Obj | None, init: bool = False) -> None:
        self._statuses(init)[c["name"]] = status.running(c, p.pid, p.started_at, restarts, last, init,
                                                         container_id=p.container_id, image_id=p.image_id)

    def _terminated(self, c: Obj, p: Process, restarts: int, returncode: int, init: bool = False,
                    reason: str | None = None) -> Obj:
        code = status.exit_code(returncode)
        msg = p.exit_message or containers.termination_message(self.dir, c, code, restarts, p.term)
        reason = reason or p.exit_reason
        prev = self._statuses(init).get(c["name"], {})
        st = status.terminated(c, p.pid, p.started_at, now(), restarts, code, msg, prev.get("lastState", {}),
                               reason, container_id=p.container_id, image_id=p.image_id)
        self._statuses(init)[c["name"]] = st
        return st

    def container_running(self, cname: str) -> bool:
        p = self.procs.get(cname) or self.procs.get("init:" + cname)
        return p is not None and p.poll() is None and not self.node.stopping.is_set()

    # -- the pod's life -----------------------------------------------------------------------------------
    def deadline_exceeded(self) -> bool:
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        return ads is not None and time.monotonic() - self.started_at_mono > ads

    def grace(self) -> float:
        md = self.pod["metadata"]
        g = md.get("deletionGracePeriodSeconds")
        if g is None:
            g = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(max(g, 0))

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s/%s crashed", self.ns, self.name)
            self.phase, self.reason, self.message = "Failed", "NodeAgentError", "the test node agent failed"
            for p in list(self.procs.values()):
                containers.kill(p, 0)
            self.push_status()
        finally:
            if self.deleting:
                self.finish_deletion()
            self.on_done(self)

    def wait_change(self, timeout: float) -> None:
        self.changed.wait(timeout)
        self.changed.clear()

    def _context(self) -> PodContext:
        return PodContext(self.kube, self.pod, self.dir, self.node.state, self.node.name, self.node.allocatable,
                          self.node.apiserver_port, self.volumes)

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.dir.mkdir(parents=True, exist_ok=True)
        for c in spec.get("initContainers") or []:
            self._waiting(c, "PodInitializing", init=True)
        for c in spec["containers"]:
            self._waiting(c, "ContainerCreating" if not spec.get("initContainers") else "PodInitializing")
        self.push_status()
        # volumes (retry like the kubelet while something is missing)
        warned = None
        while True:
            if self.deleting:
                return
            if self.deadline_exceeded():
                return self.fail_deadline()
            try:
                self.volumes = VolumeSource(self.kube, self.pod, self.dir / "volumes", self.node.name,
                                            self.node.allocatable).prepare()
                break
            except (ConfigError, ApiError, urllib3.exceptions.HTTPError) as e:
                if str(e) != warned:
                    self.event("FailedMount", str(e), "Warning")
                    warned = str(e)
                self.wait_change(1.0)
        restart_policy = spec.get("restartPolicy", "Always")
        # init containers, one after another
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") == "Always":  # sidecar: start it and move on
                ok = self.start_main(c, init=True, sidecar=True)
                if not ok:
                    return
                continue
            restarts = 0
            while True:
                code = self.run_to_end(c, restarts, init=True)
                if code is None:
                    return  # deleted / deadline
                if code == 0:
                    break
                if restart_policy == "Never":
                    self.phase = "Failed"
                    for mc in spec["containers"]:
                        self._waiting(mc, "PodInitializing")
                    self.push_status()
                    self.event("Failed", f"init container {c['name']} failed with exit code {code}", "Warning")
                    return
                restarts += 1
                self.backoff(c, restarts, init=True)
                if self.deleting:
                    return
        for c in spec["containers"]:
            if not self.start_main(c):
                return
        self.supervise(restart_policy)

    def start_main(self, c: Obj, init: bool = False, sidecar: bool = False, restarts: int = 0) -> bool:
        """Start one container, retrying while it cannot be configured; False if the pod ended meanwhile."""
        warned = None
        while True:
            if self.deleting:
                return False
            if self.deadline_exceeded():
                self.fail_deadline()
                return False
            try:
                p = containers.start(self._context(), c, restarts, init)
                break
            except (ConfigError, ApiError, urllib3.exceptions.HTTPError) as e:
                reason = e.reason if isinstance(e, ConfigError) else "CreateContainerConfigError"
                self._waiting(c, reason, str(e), restarts, init=init)
                self.push_status()
                if str(e) != warned:
                    self.event("Failed", f"Error: {e}", "Warning")
                    warned = str(e)
                self.wait_change(1.0)
        key = ("init:" if init else "") + c["name"]
        self.procs[key] = p
        if not init:
            self.phase = "Running"  # Pending until a main container runs (the kubelet's rule)
        self._running(c, p, restarts, self._statuses(init).get(c["name"], {}).get("lastState"), init=init)
        if sidecar:
            self.init_statuses[c["name"]]["ready"] = True
        self.event("Started", f"Started container {c['name']}")
        self.push_status()
        return True

    def run_to_end(self, c: Obj, restarts: int, init: bool) -> int | None:
        """Run a container until it exits; its exit code, or None if the pod was deleted or ran out of time."""
        if not self.start_main(c, init=init, restarts=restarts):
            return None
        p = self.procs["init:" + c["name"] if init else c["name"]]
        while (returncode := p.poll()) is None:
            if self.deleting:
                containers.kill(p, self.grace())
                return None
            if self.deadline_exceeded():
                containers.kill(p, 0)
                self.fail_deadline()
                return None
            self.wait_change(0.1)
        containers.reap(p)  # nothing of a finished init container may outlive it
        self._terminated(c, p, restarts, returncode, init=init)
        self.push_status()
        return status.exit_code(returncode)

    def backoff(self, c: Obj, restarts: int, init: bool = False) -> None:
        delay = min(10.0 * 2 ** (restarts - 1), 300.0) if restarts > 1 else 1.0
        st = self._state(c, init)
        last = {"terminated": st["state"].get("terminated", {})}
        self._waiting(c, "CrashLoopBackOff", f"back-off {int(delay)}s restarting failed container={c['name']}",
                      restarts - 1, last=last, init=init)
        self.push_status()
        end = time.monotonic() + delay
        while time.monotonic() < end and not self.deleting and not self.deadline_exceeded():
            self.wait_change(min(0.2, end - time.monotonic()) if end > time.monotonic() else 0)

    def supervise(self, restart_policy: str) -> None:
        """Watch the running main containers: restart per restartPolicy, end the pod when all are done."""
        main = {c["name"]: c for c in self.pod["spec"]["containers"]}
        pending_restart: dict[str, tuple[float, int]] = {}
        while True:
            if self.deleting:
                return self._stop_for_deletion(main, restart_policy)
            if self.deadline_exceeded():
                for p in list(self.procs.values()):
                    containers.kill(p, 0)
                for p in list(self.procs.values()):
                    self._terminated(p.container, p, p.restarts, p.returncode if p.returncode is not None else 137,
                                     init=p.init)
                return self.fail_deadline()
            changed = False
            for name, c in main.items():
                proc = self.procs.get(name)
                if proc is None or name in pending_restart:
                    continue
                if (returncode := proc.poll()) is None or not self._state(c, False)["state"].get("running"):
                    continue
                containers.reap(proc)
                st = self._terminated(c, proc, proc.restarts, returncode)
                code = st["state"]["terminated"]["exitCode"]
                changed = True
                if restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0):
                    restarts = proc.restarts + 1
                    delay = min(10.0 * 2 ** (restarts - 2), 300.0) if restarts > 1 else 1.0
                    last = {"terminated": st["state"]["terminated"]}
                    self._waiting(c, "CrashLoopBackOff",
                                  f"back-off {int(delay)}s restarting failed container={name}", proc.restarts,
                                  last=last)
                    pending_restart[name] = (time.monotonic() + delay, restarts)
            for name, (when, restarts) in list(pending_restart.items()):
                if time.monotonic() >= when:
                    del pending_restart[name]
                    if not self.start_main(main[name], restarts=restarts):
                        return
                    changed = True
            if not pending_restart and all(
                (proc := self.procs.get(n)) is not None and proc.poll() is not None
                and self._state(main[n], False)["state"].get("terminated") for n in main
            ):
                codes = [self.statuses[n]["state"]["terminated"]["exitCode"] for n in main]
                # sidecars stop once the main containers are done
                for key, p in list(self.procs.items()):
                    if key.startswith("init:") and p.poll() is None:
                        containers.kill(p, self.grace())
                        self._terminated(p.container, p, p.restarts,
                                         p.returncode if p.returncode is not None else 137, init=True)
                self.phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
                self.push_status()
                return
            if changed:
                self.push_status()
            self.wait_change(0.1)

    def _stop_for_deletion(self, main: dict[str, Obj], restart_policy: str) -> None:
        """Graceful deletion: stop every container at once within the grace period, report how they ended."""
        grace = self.grace()
        self.event("Killing", f"Stopping container(s) {', '.join(main)}")
        threads = []
        for p in list(self.procs.values()):
            if p.poll() is None:
                t = threading.Thread(target=containers.kill, args=(p, grace), daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            t.join()
        for p in list(self.procs.values()):
            if p.returncode is not None and self._state(p.container, p.init)["state"].get("running"):
                self._terminated(p.container, p, p.restarts, p.returncode, init=p.init)
        if self.phase == "Running":
            codes = [s["state"].get("terminated", {}).get("exitCode", 1) for s in self.statuses.values()]
            self.phase = "Succeeded" if restart_policy != "Always" and all(x == 0 for x in codes) else "Failed"
        self.push_status()

    def fail_deadline(self) -> None:
        for p in list(self.procs.values()):
            containers.kill(p, 0)
        self.phase = "Failed"
        self.reason = "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        self.event("DeadlineExceeded", self.message, "Warning")
        self.push_status(force=True)

    def finish_deletion(self) -> None:
        """Everything is stopped: let the API server remove the object (the kubelet's final delete)."""
        for p in list(self.procs.values()):
            containers.kill(p, 0)
        if self.deleted:
            return
        delete_pod_now(self.kube, self.pod)
