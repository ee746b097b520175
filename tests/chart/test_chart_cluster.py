"""The chart on the real control plane: rendered manifests pass server-side dry run (and Pod Security
`restricted`), then a real `helm install` of the images `make images` built, whose operator Deployment runs on
the test node as a real container (podman) under the chart's own ServiceAccount (in-cluster token, no admin
rights), and whose snapshot Jobs run the worker image as real containers: they snapshot sample data from
fake-gcs-server into a fake-gcs-server store; its GC CronJob runs under the GC ServiceAccount. A missing RBAC
rule fails it.

TERRASNAP_CAPTURE_FIXTURES=1 also saves the DatasetSnapshot statuses seen during the run under
tests/chart/fixtures/ (the Argo CD health check and kstatus tests read them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart import helmtool as h
from tests.chart.test_chart import NON_DEFAULT
from tests.controlplane.testing import Cluster, wait_for
from tests.support import fakegcs, images
from tests.support.sampledata import make_demo, write_raster

pytestmark = [pytest.mark.cluster, pytest.mark.helm, pytest.mark.gcs]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ENGINE_RUN = 300
RESTRICTED = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
              "pod-security.kubernetes.io/warn=restricted", "pod-security.kubernetes.io/warn-version=latest")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_list(objs: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})


@pytest.fixture(scope="module")
def chart_crds(cluster: Cluster) -> None:
    """The chart's CRDs, applied for real (the same bytes as crds/; idempotent for other tests)."""
    cluster.kubectl("apply", "--server-side", "--field-manager=terrasnap-chart-test", "-f", str(h.CHART / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/datasetsnapshots.terrasnap.io",
                    "crd/snapshotstores.terrasnap.io", "crd/clusterkopfpeerings.kopf.dev")


# --- server-side dry run --------------------------------------------------------------------------------

DRY_RUN_VALUES = {
    "default": {},
    "non-default": {**NON_DEFAULT, "metrics": {"serviceMonitor": {"enabled": False}}},  # no prometheus CRDs here
    "ha": {"replicaCount": 3, "rbac": {"storeSecrets": [{"name": "k"}]},
           "exampleStore": {"enabled": True, "url": "file:///data/store"}},
    "namespaces": {"watchNamespaces": ["team-*", "ml-data"], "worker": {"namespaces": ["default"]}},
}


@pytest.mark.parametrize("case", list(DRY_RUN_VALUES))
def test_rendered_manifests_pass_server_side_dry_run(cluster: Cluster, chart_crds: None, namespace: str,
                                                     case: str) -> None:
    cluster.kubectl("label", "namespace", namespace, *RESTRICTED, "--overwrite")
    values = dict(DRY_RUN_VALUES[case])
    if case == "non-default":
        values["worker"] = {**values["worker"], "namespaces": [namespace]}
    objs = h.template(values, release=f"dry-{case}", namespace=namespace)
    assert len(objs) >= 10
    p = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=_as_list(objs), check=False)
    assert p.returncode == 0, p.stderr
    # Pod Security admission (warn=restricted on the namespace) would print "would violate PodSecurity".
    assert "violate" not in p.stderr and "Warning" not in p.stderr, p.stderr
    applied = [line for line in p.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(objs), p.stdout


def test_crds_pass_server_side_dry_run(cluster: Cluster, chart_crds: None) -> None:
    p = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=terrasnap-chart-test",
                        "-f", str(h.CHART / "crds"))
    assert p.stdout.count("serverside-applied (server dry run)") == 3, p.stdout


# --- helm install: the operator under the chart's RBAC ------------------------------------------------------


def _status(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return dict(cluster.get(kind, name, namespace=namespace).get("status") or {})


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((dict(c) for c in status.get("conditions") or () if c["type"] == type_), {})


class StatusRecorder:
    """Keeps every distinct status a resource went through (for the health-check fixtures)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        slim = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "generation": meta["generation"]},
                "status": obj.get("status") or {}}
        key = json.dumps({"g": meta["generation"], "s": slim["status"]}, sort_keys=True)
        if all(json.dumps({"g": s["metadata"]["generation"], "s": s["status"]}, sort_keys=True) != key
               for s in self.seen):
            self.seen.append(slim)

    def watch(self, cluster: Cluster, ns: str, name: str, until: Any, timeout: float) -> dict[str, Any]:
        def poll() -> dict[str, Any] | None:
            obj = cluster.get("dsnap", name, namespace=ns)
            self.add(obj)
            return obj if until(obj) else None
        return dict(wait_for(poll, timeout, interval=0.3, what=f"dsnap {ns}/{name}"))


def _save_fixtures(prefix: str, rec: StatusRecorder) -> None:
    if os.environ.get("TERRASNAP_CAPTURE_FIXTURES") != "1":
        return
    FIXTURES.mkdir(exist_ok=True)
    for old in FIXTURES.glob(f"{prefix}-*.json"):
        old.unlink()
    for i, obj in enumerate(rec.seen):
        status = obj["status"]
        ready = _condition(status, "Ready")
        label = f"{status.get('phase', 'none')}-{ready.get('reason', 'noready')}".lower()
        if status and status.get("observedGeneration") != obj["metadata"]["generation"]:
            label += "-outdated"
        if obj["metadata"].get("namespace"):
            obj = json.loads(json.dumps(obj).replace(obj["metadata"]["namespace"], "ml-data"))
        (FIXTURES / f"{prefix}-{i:02d}-{label}.json").write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def data_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A second namespace for the DatasetSnapshots (the operator and GC live in `namespace`)."""
    ns = f"{namespace[:50]}-data"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "terrasnap.io/test=true", *RESTRICTED)
    yield ns
    if os.environ.get("TERRASNAP_KEEP_NAMESPACES") != "1":
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _upload(gcs: fakegcs.FakeGCS, bucket: str, root: Path) -> None:
    from terrasnap.engine.store import Store

    gcs.create_bucket(bucket)
    store = Store.from_url(f"gs://{bucket}", gcs.endpoint)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        store.put_file(str(path), path.relative_to(root).as_posix())


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_helm_install_runs_snapshots_under_the_charts_rbac(
    cluster: Cluster, chart_crds: None, namespace: str, data_namespace: str, gcs: fakegcs.FakeGCS,
    tmp_path: Path,
) -> None:
    release = f"ts{uuid.uuid4().hex[:6]}"
    store_name = f"{release}-store"
    bucket, raw = f"{release}-snapshots", f"{release}-raw"
    gcs.create_bucket(bucket)
    _upload(gcs, raw, make_demo(tmp_path / "demo"))
    bad = tmp_path / "bad"
    write_raster(bad / "no_crs.tif", crs=None)  # missing CRS is rejected by default: a real failure
    _upload(gcs, f"{release}-bad", bad)

    cluster.kubectl("label", "namespace", namespace, *RESTRICTED, "--overwrite")
    # The store's credentials live in the release namespace (the default home); the operator copies them for
    # Jobs in other namespaces. The emulator ignores them, but the RBAC paths are exercised.
    cluster.kubectl("create", "secret", "generic", "store-key", "--from-literal=key.json={}", namespace=namespace)
    metrics_port, health_port = _free_port(), _free_port()
    # The images make images built: the test node runs pods of localhost/ images it holds as real containers.
    operator_image, worker_image = images.ref("operator"), images.ref("worker")
    for image in (operator_image, worker_image):
        assert images.available(image), f"{image} is not in the local image store: run `make images`"
    values = {
        "fullnameOverride": release,
        "image": {"repository": operator_image.rsplit(":", 1)[0], "tag": images.version()},
        "worker": {"image": {"repository": worker_image.rsplit(":", 1)[0], "tag": images.version()}},
        "watchNamespaces": [data_namespace],  # leave the other tests' namespaces alone
        "metrics": {"port": metrics_port}, "health": {"port": health_port},
        "rbac": {"storeSecrets": [{"name": "store-key"}]},
        "operator": {"watchServerTimeout": 30, "watchClientTimeout": 40},
        "exampleStore": {"enabled": True, "name": store_name, "url": f"gs://{bucket}/dvc",
                         "endpoint": gcs.endpoint, "credentialsSecret": {"name": "store-key"},
                         "gc": {"gracePeriod": "0s"}},
    }
    installed = False
    try:
        out = h.run("install", release, str(h.CHART), "--namespace", namespace, "--wait", "--timeout", "180s",
                    *h.values_args(values), extra_env={"KUBECONFIG": cluster.kubeconfig}, timeout=240).stdout
        installed = True
        notes = out.split("NOTES:", 1)[1]  # the next commands for the user
        assert f"kubectl -n {namespace} rollout status deployment/{release}" in notes
        assert "--for=condition=Ready" in notes and f"kubectl get snapshotstore {store_name}" in notes
        deployment = cluster.get("deployment", release, namespace=namespace)
        assert deployment["status"].get("readyReplicas") == 1
        (pod,) = cluster.get("pods", "-l", "app.kubernetes.io/component=operator", namespace=namespace)["items"]
        assert pod["spec"]["serviceAccountName"] == release
        _assert_ran_as_container(pod, operator_image)
        # the operator's own identity: the chart's ServiceAccount, no more
        assert cluster.kubectl("auth", "can-i", "get", "secrets", "-n", "kube-system",
                               f"--as=system:serviceaccount:{namespace}:{release}", check=False).stdout.strip() == "no"
        assert cluster.kubectl("auth", "can-i", "list", "secrets", "-n", data_namespace,
                               f"--as=system:serviceaccount:{namespace}:{release}", check=False).stdout.strip() == "no"
        # no Secret writes outside its namespace (no store here shares its key: rbac.credentialCopies is off)
        assert cluster.kubectl("auth", "can-i", "create", "secrets", "-n", data_namespace,
                               f"--as=system:serviceaccount:{namespace}:{release}", check=False).stdout.strip() == "no"

        # The store: the operator reads the credentials Secret and keeps the GC CronJob in its namespace.
        cronjob = f"terrasnap-gc-{store_name}"
        wait_for(lambda: cluster.kubectl("get", "cronjob", cronjob, namespace=namespace, check=False).returncode == 0,
                 60, interval=0.5, what=f"GC CronJob {cronjob} (created by the operator as its ServiceAccount)")
        cj = cluster.get("cronjob", cronjob, namespace=namespace)
        assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == f"{release}-gc"

        # A snapshot over the sample data: Job → process node → real engine → Ready with a manifest.
        rec = StatusRecorder()
        snapshot = {"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
                    "metadata": {"name": "buildings"},
                    "spec": {"store": store_name, "source": {"bucket": {"url": f"gs://{raw}/"}},
                             "validation": {"targetCRS": "EPSG:4326", "invalidGeometry": "repair"}}}
        # `create -o json` and `patch -o json` answer with the object as stored: the status before the operator
        # saw the change (no status, then the previous generation's).
        rec.add(json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(snapshot),
                                           namespace=data_namespace).stdout))
        obj = rec.watch(cluster, data_namespace, "buildings",
                        lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"), ENGINE_RUN)
        status = obj["status"]
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        cluster.kubectl("wait", "--for=condition=Ready", "dsnap/buildings", "--timeout=10s", namespace=data_namespace)
        assert status["manifest"]["uri"].startswith(f"gs://{bucket}/dvc/terrasnap/manifests/{data_namespace}/buildings/")
        assert status["summary"]["files"] >= 5
        # Every container of the snapshot Job's pod ran in the worker image, as a real container.
        (job_pod,) = cluster.get("pods", "-l", f"job-name={status['job']}", namespace=data_namespace)["items"]
        _assert_ran_as_container(job_pod, worker_image)
        # helm upgrade (a values change): Recreate replaces the operator pod; the new one carries on.
        first_log = cluster.kubectl("logs", pod["metadata"]["name"], namespace=namespace, check=False).stdout
        h.run("upgrade", release, str(h.CHART), "--namespace", namespace, "--reuse-values", "--wait", "--timeout",
              "180s", "--set", "operator.verbose=true", extra_env={"KUBECONFIG": cluster.kubeconfig}, timeout=240)
        (new_pod,) = wait_for(lambda: [p for p in cluster.get("pods", "-l", "app.kubernetes.io/component=operator",
                                                              namespace=namespace)["items"]
                                       if p["metadata"]["name"] != pod["metadata"]["name"]
                                       and p["status"].get("phase") == "Running"], 120, interval=1,
                              what="the upgraded operator pod")
        assert "--verbose" in new_pod["spec"]["containers"][0]["args"]
        # A spec change: the new generation is planned and snapshotted again (by the upgraded operator).
        rec.add(json.loads(cluster.kubectl("patch", "dsnap", "buildings", "--type=merge", "-o", "json", "-p",
                                           json.dumps({"spec": {"validation": {"targetCRS": "EPSG:3857"}}}),
                                           namespace=data_namespace).stdout))
        obj = rec.watch(cluster, data_namespace, "buildings",
                        lambda o: (o.get("status") or {}).get("observedGeneration") == 2
                        and o["status"].get("phase") in ("Succeeded", "Failed"), ENGINE_RUN)
        assert obj["status"]["phase"] == "Succeeded"
        assert len(obj["status"]["history"]) == 2
        _save_fixtures("succeeded", rec)

        # Bad data: Ready=False with the engine's reason.
        rec_bad = StatusRecorder()
        cluster.apply({**snapshot, "metadata": {"name": "rejected"},
                       "spec": {**snapshot["spec"], "source": {"bucket": {"url": f"gs://{release}-bad/"}}}},
                      namespace=data_namespace)
        obj = rec_bad.watch(cluster, data_namespace, "rejected",
                            lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"), ENGINE_RUN)
        assert obj["status"]["phase"] == "Failed"
        assert _condition(obj["status"], "Ready")["status"] == "False"
        _save_fixtures("failed", rec_bad)

        # What the operator did as its ServiceAccount: the worker SA, Events, no leftover credential copies.
        sa = cluster.get("serviceaccount", "terrasnap-worker", namespace=data_namespace)
        assert sa["automountServiceAccountToken"] is False
        events = cluster.get("events", namespace=data_namespace)["items"]
        reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "buildings"}
        assert "Snapshotted" in reasons, reasons
        wait_for(lambda: not [s for s in cluster.get("secrets", namespace=data_namespace)["items"]
                              if s["metadata"]["name"].endswith("-store")],
                 60, interval=1, what="per-Job credential copies deleted")

        # GC: a Job from the operator's CronJob runs `terrasnap gc` as the GC ServiceAccount (in-cluster token).
        cluster.kubectl("create", "job", "gc-now", f"--from=cronjob/{cronjob}", namespace=namespace)
        wait_for(lambda: (cluster.get("job", "gc-now", namespace=namespace).get("status") or {}).get("succeeded")
                 or _job_failed(cluster, namespace), ENGINE_RUN, interval=1, what="GC Job")
        assert not _job_failed(cluster, namespace), cluster.kubectl("logs", "job/gc-now", namespace=namespace,
                                                                    check=False).stdout
        last = _status(cluster, "snapshotstore", store_name)["lastGC"]
        assert last["result"] == "Succeeded", last
        assert last["roots"] >= 2  # the current manifests and the history of "buildings"
        rec_store = StatusRecorder()
        rec_store.add(cluster.get("snapshotstore", store_name))
        _save_fixtures("store", rec_store)
        gc_log = cluster.kubectl("logs", "job/gc-now", namespace=namespace, check=False).stdout
        assert "could not" not in gc_log, gc_log  # status patch and Event both allowed

        # No permission error about this test's objects (other tests' SnapshotStores may be reconciled too).
        log = first_log + cluster.kubectl("logs", f"deployment/{release}", namespace=namespace, check=False).stdout
        # An HTTP 403, not any "403" (kopf's debug lines print whole objects: resourceVersion '403').
        mine = [line for line in log.splitlines() if re.search(r"[Ff]orbidden|\(403\)|HTTP 403|status\W{0,3}403\b", line)
                and (data_namespace in line or store_name in line or "store-key" in line)]
        assert not mine, "\n".join(mine)
    finally:
        if installed:
            op_log = cluster.kubectl("logs", f"deployment/{release}", "--tail=200", namespace=namespace, check=False)
            print(f"--- operator log (tail) ---\n{op_log.stdout}{op_log.stderr}")
            p = h.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s", check=False,
                      extra_env={"KUBECONFIG": cluster.kubeconfig})
            print(p.stdout, p.stderr)
        cluster.kubectl("delete", "snapshotstore", store_name, "--ignore-not-found", "--wait=false", check=False)
    assert cluster.kubectl("get", "clusterrole", f"{release}-operator", check=False).returncode != 0


def _assert_ran_as_container(pod: dict[str, Any], image: str) -> None:
    statuses = (pod["status"].get("initContainerStatuses") or []) + pod["status"]["containerStatuses"]
    assert statuses
    for st in statuses:
        assert st["image"] == image, st
        assert st["containerID"].startswith("podman://"), st  # not the process mode's terrasnap-process://
        assert st["imageID"].startswith(image.rsplit(":", 1)[0] + "@sha256:"), st


def _job_failed(cluster: Cluster, namespace: str) -> bool:
    conditions = (cluster.get("job", "gc-now", namespace=namespace).get("status") or {}).get("conditions") or ()
    return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)


# --- the GitOps example ---------------------------------------------------------------------------------

GITOPS = h.REPO / "examples" / "gitops"


def test_gitops_example_renders_and_passes_server_side_dry_run(cluster: Cluster, chart_crds: None,
                                                               namespace: str) -> None:
    """`kubectl kustomize examples/gitops` (kustomize built into kubectl) → the apiserver accepts every object
    (schemas, CEL rules) in a server-side dry run; the namespace is swapped for this test's own."""
    import yaml

    rendered = cluster.kubectl("kustomize", str(GITOPS)).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["DatasetSnapshot", "DatasetSnapshot", "Namespace", "SnapshotStore"], kinds
    store = next(o for o in objs if o["kind"] == "SnapshotStore")
    assert "namespace" not in store["metadata"]  # cluster-scoped: kustomize's namespace must not touch it
    for o in objs:
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "training-data"
        if o["kind"] == "DatasetSnapshot":
            assert o["metadata"]["namespace"] == "ml-data" and o["spec"]["store"] == store["metadata"]["name"]
    swapped = json.loads(json.dumps(objs).replace('"ml-data"', json.dumps(namespace)))
    p = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=_as_list(swapped), check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("(server dry run)") == len(objs), p.stdout


# --- more than one replica: kopf peering under the chart's RBAC ----------------------------------------------


def _token_kubeconfig(cluster: Cluster, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a token from the TokenRequest API)."""
    import yaml

    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    token = cluster.kubectl("create", "token", service_account, "--duration=1h", namespace=namespace).stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account, "namespace": namespace}}],
    }))
    return path


class Replica:
    """One replica of the rendered StatefulSet's container, run as a local process (the process node shares
    one network namespace, so in-cluster replicas would collide on their ports) with the SA's token."""

    def __init__(self, container: dict[str, Any], namespace: str, index: int, kubeconfig: Path, log: Path):
        import subprocess
        import sys

        self.health = _free_port()
        env: dict[str, str] = {"PATH": os.environ["PATH"], "HOME": str(log.parent), "KUBECONFIG": str(kubeconfig),
                               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
        for e in container["env"]:
            if "value" in e:
                env[e["name"]] = e["value"]
        field_values = {"metadata.namespace": namespace, "metadata.name": f"replica-{index}",
                        "metadata.labels['apps.kubernetes.io/pod-index']": str(index)}
        for e in container["env"]:
            if "valueFrom" in e:
                env[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
        env["TMPDIR"] = env["HOME"] = str(log.parent)
        args = [a for a in container["args"] if not a.startswith(("--metrics-port", "--liveness"))]
        args += ["--metrics-port=0", f"--liveness=http://127.0.0.1:{self.health}/healthz"]
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([str(Path(sys.executable).parent / "terrasnap"), *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_replicas_share_a_kopf_peering_and_fail_over(cluster: Cluster, chart_crds: None, namespace: str,
                                                     data_namespace: str, gcs: fakegcs.FakeGCS,
                                                     tmp_path: Path) -> None:
    """Two replicas as the chart renders them: distinct priorities from the pod index, one active, the other
    standing by; when the active one stops, the other takes over. Cluster-wide (kopf's peering needs it), so for
    its two minutes the replicas also see other tests' DatasetSnapshots; their Jobs have deterministic names
    and status writes are conditional, so a concurrent test's operator and these converge on the same state."""
    release = f"ha{uuid.uuid4().hex[:6]}"
    bucket, raw = f"{release}-snapshots", f"{release}-raw"
    gcs.create_bucket(bucket)
    _upload(gcs, raw, make_demo(tmp_path / "demo"))
    values = {"fullnameOverride": release, "replicaCount": 2,
              "operator": {"watchServerTimeout": 30, "watchClientTimeout": 40},
              "exampleStore": {"enabled": True, "name": f"{release}-store", "url": f"gs://{bucket}/dvc",
                               "endpoint": gcs.endpoint}}
    objs = h.template(values, release=release, namespace=namespace)
    sts = h.one(objs, "StatefulSet", release)
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    # Everything but the StatefulSet itself (its replicas run below as processes, with the same command/env).
    cluster.kubectl("apply", "-f", "-", input=_as_list([o for o in objs if o["kind"] != "StatefulSet"]))
    kubeconfig = _token_kubeconfig(cluster, namespace, release, tmp_path / "kubeconfig")
    replicas = [Replica(container, namespace, i, kubeconfig, tmp_path / f"replica-{i}.log") for i in (0, 1)]
    try:
        peering = wait_for(lambda: len(cluster.get("clusterkopfpeering", release).get("status") or {}) == 2
                           and cluster.get("clusterkopfpeering", release)["status"], 60, interval=0.5,
                           what="both replicas in the peering")
        assert sorted(p["priority"] for p in peering.values()) == [0, 1]  # distinct priorities
        # kopf starts a replica with mandatory peering paused; only the highest priority one stays resumed
        # (one that started first may resume and pause again once it sees the higher one).
        resumed = "Resuming operations after the pause"

        def paused(replica: Replica) -> bool:
            states = re.findall(r"(Resuming operations|Pausing operations)", replica.text())
            return not states or states[-1] == "Pausing operations"

        wait_for(lambda: resumed in replicas[1].text() and paused(replicas[0]), 30,
                 what="replica 1 (priority 1) active, replica 0 standing by")
        assert not paused(replicas[1])

        def snapshot(name: str) -> dict[str, Any]:
            cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
                           "metadata": {"name": name},
                           "spec": {"store": f"{release}-store", "source": {"bucket": {"url": f"gs://{raw}/"}},
                                    "validation": {"invalidGeometry": "repair"}}}, namespace=data_namespace)
            return dict(wait_for(lambda: (cluster.get("dsnap", name, namespace=data_namespace).get("status") or {})
                                 .get("phase") in ("Succeeded", "Failed")
                                 and cluster.get("dsnap", name, namespace=data_namespace)["status"],
                                 ENGINE_RUN, interval=1, what=f"dsnap {name}"))

        assert snapshot("first")["phase"] == "Succeeded"
        assert "created Job" in replicas[1].text() and "created Job" not in replicas[0].text()
        # The active replica stops (a rollout, a node drain): the standby takes over.
        replicas[1].stop()
        wait_for(lambda: not paused(replicas[0]), 60, what="failover")
        assert snapshot("second")["phase"] == "Succeeded"
        assert "created Job" in replicas[0].text()
        forbidden = [line for line in (replicas[0].text() + replicas[1].text()).splitlines()
                     if re.search(r"403|[Ff]orbidden", line) and (data_namespace in line or release in line)]
        assert not forbidden, "\n".join(forbidden)  # (other tests' SnapshotStores may be reconciled too)
    finally:
        for r in replicas:
            r.stop()
        print("\n".join(f"--- replica {i} ---\n{r.text()[-3000:]}" for i, r in enumerate(replicas)))
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                        input=_as_list([o for o in objs if o["kind"] != "StatefulSet"]), check=False)


def test_a_missing_rbac_rule_fails_the_operator(cluster: Cluster, chart_crds: None, namespace: str,
                                                data_namespace: str, gcs: fakegcs.FakeGCS) -> None:
    """The e2e tests above are only worth something if the operator really runs with the chart's rights: take
    one rule away (patch DatasetSnapshot status) and the operator pod, with its in-cluster token, is refused."""
    release = f"neg{uuid.uuid4().hex[:6]}"
    values = {"fullnameOverride": release, "watchNamespaces": [data_namespace],
              "metrics": {"port": _free_port()}, "health": {"port": _free_port()},
              "exampleStore": {"enabled": True, "name": f"{release}-store", "url": f"gs://{release}/dvc",
                               "endpoint": gcs.endpoint}}
    gcs.create_bucket(release)
    rendered = h.one(h.template(values, release=release, namespace=namespace), "ClusterRole", f"{release}-operator")
    index = next(i for i, r in enumerate(rendered["rules"]) if r["resources"] == ["datasetsnapshots/status",
                                                                                   "snapshotstores/status"])
    try:
        h.run("install", release, str(h.CHART), "--namespace", namespace, "--wait", "--timeout", "120s",
              *h.values_args(values), extra_env={"KUBECONFIG": cluster.kubeconfig}, timeout=180)
        cluster.kubectl("patch", "clusterrole", f"{release}-operator", "--type=json",
                        "-p", json.dumps([{"op": "remove", "path": f"/rules/{index}"}]))
        cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot", "metadata": {"name": "x"},
                       "spec": {"store": f"{release}-store", "source": {"bucket": {"url": f"gs://{release}/none/"}}}},
                      namespace=data_namespace)
        refused = f'datasetsnapshots.terrasnap.io "x" is forbidden: User "system:serviceaccount:{namespace}:{release}"'
        wait_for(lambda: refused in cluster.kubectl("logs", f"deployment/{release}", namespace=namespace,
                                                     check=False).stdout,
                 60, interval=1, what="the operator refused the status write")
        assert not cluster.get("dsnap", "x", namespace=data_namespace).get("status")
    finally:
        h.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s", check=False,
              extra_env={"KUBECONFIG": cluster.kubeconfig})
        cluster.kubectl("delete", "snapshotstore", f"{release}-store", "--ignore-not-found", "--wait=false",
                        check=False)
