"""The operator on the real control plane: kube-apiserver validates the shipped CRDs, the Job and garbage
collectors do their work, the process node runs the real engine against fake-gcs-server, and the operator
runs as a subprocess (so it can be killed and restarted).

Every test namespace is `tsop-*` and enforces Pod Security `restricted`; the operator watches only those.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.testing import Cluster, KubectlError, wait_for
from tests.support import fakegcs
from tests.support.sampledata import make_demo

pytestmark = [pytest.mark.cluster, pytest.mark.gcs]

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
# Pods share the host's filesystem on the test node but get their own /workspace; data they read must be
# outside pytest's /tmp and owned by the worker uid (git refuses repositories of other users).
DATA_ROOT = REPO / ".state" / "test-operator"
WORKER_UID = 65532
# This session's objects carry this label and its operator serves only them (another operator on the same
# cluster, e.g. `make demo-cluster`'s, is told to leave them alone with `--selector '!terrasnap.io/test-run'`).
RUN_LABEL = "terrasnap.io/test-run"
RUN_ID = uuid.uuid4().hex[:10]
ENGINE_RUN = 300  # seconds one engine run may take on the process node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def _chown_tree(root: Path, uid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.lchown(path, uid, uid)


# --- the operator as a subprocess --------------------------------------------------------------------------


class Operator:
    """`python -m terrasnap.controller` against the test cluster, watching `tsop-*` namespaces."""

    def __init__(self, cluster: Cluster, system_namespace: str, log_path: Path) -> None:
        self.cluster = cluster
        self.system_namespace = system_namespace
        self.log_path = log_path
        self.metrics_port = _free_port()
        self.health_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **self.cluster.env,
            "TERRASNAP_NAMESPACE": self.system_namespace,
            "TERRASNAP_WORKER_IMAGE": "terrasnap/worker:test",
            "TERRASNAP_WATCH_SERVER_TIMEOUT": "30",
            "TERRASNAP_WATCH_CLIENT_TIMEOUT": "40",
            "TERRASNAP_ALLOW_INSECURE_SOURCES": "1",  # the tests' repositories are file:// (the chart never sets it)
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
        argv = [
            sys.executable, "-m", "terrasnap.controller", "--namespace", "tsop-*", "--selector", f"{RUN_LABEL}={RUN_ID}",
            "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
            "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child keeps it)
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)  # fmt: skip
        log.close()
        wait_for(self.healthy, 60, what="operator liveness endpoint")

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"operator exited:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/datasetsnapshots.terrasnap.io", "crd/snapshotstores.terrasnap.io")  # fmt: skip


def _make_namespace(cluster: Cluster, prefix: str) -> str:
    ns = f"tsop-{prefix}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "terrasnap.io/test=true",
                    "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")  # fmt: skip
    return ns


@pytest.fixture(scope="module")
def operator(cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    system = _make_namespace(cluster, "system")
    op = Operator(cluster, system, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)
        print(f"\n--- operator log (tail) ---\n{op.log()[-4000:]}")


@pytest.fixture
def ns(cluster: Cluster, operator: Operator, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _make_namespace(cluster, request.node.name.removeprefix("test_").replace("_", "-")[:20].strip("-"))
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        out = cluster.kubectl("get", "all,events,dsnap", "-o", "wide", namespace=name, check=False)
        print(f"\n--- namespace {name} at failure ---\n{out.stdout}{out.stderr}")
        print(f"--- operator log (tail) ---\n{operator.log()[-6000:]}")
    if os.environ.get("TERRASNAP_KEEP_NAMESPACES") != "1":
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def store(cluster: Cluster, operator: Operator, gcs: fakegcs.FakeGCS) -> Iterator[Callable[..., str]]:
    """make_store(**spec) → the name of a new SnapshotStore on a fresh fake-gcs-server bucket."""
    made: list[str] = []

    def make(endpoint: str | None = None, **spec: Any) -> str:
        name = f"tsop-{uuid.uuid4().hex[:8]}"
        bucket = f"b-{uuid.uuid4().hex[:10]}"
        gcs.create_bucket(bucket)
        body = {"url": f"gs://{bucket}/dvc", "endpoint": endpoint or gcs.endpoint, **spec}
        cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
                       "metadata": {"name": name, "labels": {RUN_LABEL: RUN_ID}}, "spec": body})  # fmt: skip
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.kubectl("delete", "snapshotstore", name, "--wait=false", check=False)


@pytest.fixture
def git_repo() -> Iterator[Path]:
    """A git repository with the demo data under data/: tag v1, then tag v2 with one more file."""
    root = DATA_ROOT / f"repo-{uuid.uuid4().hex[:8]}"
    make_demo(root / "data")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "v1")
    _git(root, "tag", "v1")
    (root / "data" / "NOTES.txt").write_text("second revision\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "v2")
    _git(root, "tag", "v2")
    _chown_tree(root, WORKER_UID)
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def snapshot_manifest(name: str, store: str, repo: Path, revision: str = "v1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "store": store,
        "source": {"git": {"url": f"file://{repo}", "revision": revision, "path": "data"}},
        "validation": {"targetCRS": "EPSG:4326", "invalidGeometry": "repair"},
        **spec,
    }
    return {"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
            "metadata": {"name": name, "labels": {RUN_LABEL: RUN_ID}}, "spec": body}  # fmt: skip


def jobs_of(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    return list(cluster.get("jobs", "-l", f"terrasnap.io/snapshot={name}", namespace=ns)["items"])


def dsnap(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(cluster.get("dsnap", name, namespace=ns))


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition["type"] == "Ready":
            return dict(condition)
    return {}


def wait_phase(cluster: Cluster, ns: str, name: str, phases: tuple[str, ...], generation: int | None = None,
               timeout: float = ENGINE_RUN) -> dict[str, Any]:  # fmt: skip
    def check() -> dict[str, Any] | None:
        obj = dsnap(cluster, ns, name)
        status = obj.get("status") or {}
        want = generation or obj["metadata"]["generation"]
        return obj if status.get("phase") in phases and status.get("observedGeneration") == want else None

    return dict(wait_for(check, timeout, interval=1, what=f"{ns}/{name} in {phases}"))


def events_for(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get("events", namespace=ns)["items"]
    return [e for e in items if e["involvedObject"].get("kind") == "DatasetSnapshot"
            and e["involvedObject"].get("name") == name]  # fmt: skip


# --- tests -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_snapshot_lifecycle(
    cluster: Cluster,
    operator: Operator,
    ns: str,
    store: Callable[..., str],
    git_repo: Path,
    gcs: fakegcs.FakeGCS,
) -> None:
    """apply → Job → real engine → Ready with manifest URIs that resolve; re-apply is a no-op; a new revision
    makes a new snapshot with history; delete → Jobs garbage-collected, data kept. In a `restricted`
    namespace, so the pods are also proven acceptable to Pod Security admission."""
    from terrasnap.engine.store import Store

    store_name = store()
    cluster.apply(snapshot_manifest("buildings", store_name, git_repo), namespace=ns)
    cluster.kubectl("wait", "--for=condition=Ready", "dsnap/buildings", f"--timeout={ENGINE_RUN}s",
                    namespace=ns, timeout=ENGINE_RUN + 30)  # fmt: skip
    obj = dsnap(cluster, ns, "buildings")
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 1
    assert status["snapshotID"].startswith("sha256:") and status["shortID"] == status["snapshotID"][7:19]
    assert [c["type"] for c in status["conditions"]] == ["Ready"]
    assert ready(obj)["reason"] == "Snapshotted" and ready(obj)["observedGeneration"] == 1
    url = f"gs://{cluster_bucket(cluster, store_name)}/dvc"
    manifest_uri = status["manifest"]["uri"]
    assert manifest_uri.startswith(f"{url}/terrasnap/manifests/{ns}/buildings/")
    assert manifest_uri.endswith("/manifest.parquet")
    assert status["source"]["commit"] == _git(git_repo, "rev-parse", "v1").strip()
    assert len(status["history"]) == 1 and status["history"][0]["snapshotID"] == status["snapshotID"]
    (job,) = jobs_of(cluster, ns, "buildings")
    assert status["job"] == job["metadata"]["name"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    # The manifest resolves in the store: one row per file, hashes match the source bytes.
    import pyarrow.parquet as pq

    st = Store.from_url(url, gcs.endpoint)
    table = pq.read_table(io.BytesIO(st.read_bytes(st.rel_from_uri(manifest_uri)))).to_pylist()
    assert len(table) == status["summary"]["files"]
    by_path = {row["path"]: row for row in table}
    readme = (git_repo / "data" / "README.txt").read_bytes()
    assert by_path["raw/README.txt"]["sha256"] == hashlib.sha256(readme).hexdigest()
    assert st.exists(Store.object_rel(by_path["raw/README.txt"]["md5"]))
    for key in ("metadata", "lock", "stac"):
        assert st.exists(st.rel_from_uri(status["manifest"][key])), key

    # Printer columns show the values.
    wide = cluster.kubectl("get", "dsnap", "buildings", "-o", "wide", namespace=ns).stdout
    header, row = wide.strip().splitlines()
    for column in ("READY", "PHASE", "SNAPSHOT", "FILES", "AGE", "MANIFEST", "JOB"):
        assert column in header
    for value in ("True", "Succeeded", status["shortID"], str(status["summary"]["files"]), manifest_uri):
        assert value in row

    reasons = [e["reason"] for e in events_for(cluster, ns, "buildings")]
    assert "JobCreated" in reasons and "Snapshotted" in reasons
    assert 'terrasnap_snapshots{phase="Succeeded"}' in operator.metrics()

    # Re-applying the same spec creates no Job.
    cluster.apply(snapshot_manifest("buildings", store_name, git_repo), namespace=ns)
    time.sleep(3)
    assert len(jobs_of(cluster, ns, "buildings")) == 1
    assert dsnap(cluster, ns, "buildings")["status"] == status

    # A new revision: a new Job, a new snapshot, both in history.
    cluster.apply(snapshot_manifest("buildings", store_name, git_repo, revision="v2"), namespace=ns)
    second = wait_phase(cluster, ns, "buildings", ("Succeeded", "Failed"), generation=2)
    assert second["status"]["phase"] == "Succeeded", ready(second)
    assert second["status"]["snapshotID"] != status["snapshotID"]
    assert [h["snapshotID"] for h in second["status"]["history"]] == [
        second["status"]["snapshotID"], status["snapshotID"],
    ]  # fmt: skip
    assert [h["generation"] for h in second["status"]["history"]] == [2, 1]
    assert len(jobs_of(cluster, ns, "buildings")) == 2

    # Delete: the garbage collector removes the Jobs (and their pods); the data stays in the store.
    cluster.kubectl("delete", "dsnap", "buildings", namespace=ns)
    wait_for(lambda: not jobs_of(cluster, ns, "buildings"), 60, interval=1, what="Jobs garbage-collected")
    assert st.exists(st.rel_from_uri(manifest_uri))


def cluster_bucket(cluster: Cluster, store_name: str) -> str:
    url = cluster.get("snapshotstore", store_name)["spec"]["url"]
    return str(url.removeprefix("gs://").split("/")[0])


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_rejected_data_fails_at_once(
    cluster: Cluster, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """invalidGeometry=reject on data with a bow-tie: the engine exits 1, the Job fails without retries,
    Ready=False with the engine's reason and message, a Warning Event."""
    store_name = store()
    manifest = snapshot_manifest("strict", store_name, git_repo, backoffLimit=3)
    manifest["spec"]["validation"]["invalidGeometry"] = "reject"
    cluster.apply(manifest, namespace=ns)
    obj = wait_phase(cluster, ns, "strict", ("Failed", "Succeeded"))
    assert obj["status"]["phase"] == "Failed"
    condition = ready(obj)
    assert condition["status"] == "False" and condition["reason"] == "ValidationFailed"
    assert "buildings.geojson" in condition["message"]
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Ready", "Stalled"]
    (job,) = jobs_of(cluster, ns, "strict")
    assert job["status"].get("failed") == 1, "rejected data must not be retried"
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "PodFailurePolicy"
    warnings = [e for e in events_for(cluster, ns, "strict") if e["type"] == "Warning"]
    assert any(e["reason"] == "ValidationFailed" for e in warnings)
    assert "snapshotID" not in obj["status"]


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_unreachable_store_is_retried_then_fails(
    cluster: Cluster, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    store_name = store(endpoint=f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    cluster.apply(snapshot_manifest("nostore", store_name, git_repo, backoffLimit=1), namespace=ns)
    obj = wait_phase(cluster, ns, "nostore", ("Failed", "Succeeded"))
    assert obj["status"]["phase"] == "Failed"
    assert ready(obj)["reason"] == "StoreUnreachable", ready(obj)
    (job,) = jobs_of(cluster, ns, "nostore")
    assert job["status"].get("failed") == 2, "exit 3 counts against backoffLimit=1: two attempts"


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_operator_killed_mid_job_converges(
    cluster: Cluster, operator: Operator, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    store_name = store()
    cluster.apply(snapshot_manifest("survivor", store_name, git_repo), namespace=ns)
    wait_for(lambda: jobs_of(cluster, ns, "survivor"), 60, interval=0.5, what="the Job")
    operator.kill()
    try:
        # The Job finishes while no operator runs.
        wait_for(
            lambda: any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                        for j in jobs_of(cluster, ns, "survivor") for c in j.get("status", {}).get("conditions", [])),
            ENGINE_RUN, interval=1, what="the Job to finish",
        )  # fmt: skip
        assert (dsnap(cluster, ns, "survivor").get("status") or {}).get("phase") != "Succeeded"
    finally:
        operator.start()
    obj = wait_phase(cluster, ns, "survivor", ("Succeeded",), timeout=60)
    assert ready(obj)["status"] == "True"
    assert len(jobs_of(cluster, ns, "survivor")) == 1
    # And a second restart changes nothing.
    operator.kill()
    operator.start()
    time.sleep(3)
    assert len(jobs_of(cluster, ns, "survivor")) == 1
    assert dsnap(cluster, ns, "survivor")["status"] == obj["status"]


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_secrets_never_leak(
    cluster: Cluster, operator: Operator, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """A store that shares its Secret (in the operator's namespace) has it copied for the Job and mounted, the
    git token is a secretKeyRef; neither value appears in status, events, Job/pod specs or the operator's log."""
    key_marker = f"KEYMARKER{uuid.uuid4().hex}"
    token_marker = f"TOKENMARKER{uuid.uuid4().hex}"
    key = json.dumps({"type": "service_account", "private_key": key_marker, "client_email": "x@y.z"})
    cluster.kubectl("create", "secret", "generic", "gcs-key", f"--from-literal=key.json={key}",
                    namespace=operator.system_namespace)  # fmt: skip
    cluster.kubectl("create", "secret", "generic", "git-token", f"--from-literal=token={token_marker}",
                    namespace=ns)  # fmt: skip
    # the opt-in that copies the store's key (credentials.shareWithNamespaces, only with a Selector)
    store_name = store(credentials={"secretRef": {"name": "gcs-key"}, "shareWithNamespaces": True},
                       allowedNamespaces={"from": "Selector", "selector": {"matchLabels": {"terrasnap.io/test": "true"}}})
    manifest = snapshot_manifest("secretive", store_name, git_repo, backoffLimit=0)
    manifest["spec"]["source"]["git"]["credentialsSecret"] = {"name": "git-token"}
    cluster.apply(manifest, namespace=ns)
    (job,) = wait_for(lambda: jobs_of(cluster, ns, "secretive"), 60, interval=0.5, what="the Job")
    pod_spec = job["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in [*pod_spec["initContainers"], *pod_spec["containers"]]}
    assert list(steps) == ["fetch", "pipeline", "snapshot"]

    def secret_env(name: str) -> dict[str, Any]:
        return {e["name"]: e["valueFrom"] for e in steps[name].get("env") or () if "valueFrom" in e}

    def mounts(name: str) -> set[str]:
        return {m["name"] for m in steps[name].get("volumeMounts") or ()}

    # the git token reaches the fetch step only, the store key the snapshot step only, the pipeline nothing
    assert secret_env("fetch") == {"TERRASNAP_GIT_TOKEN": {"secretKeyRef": {"name": "git-token", "key": "token"}}}
    assert secret_env("pipeline") == {} and secret_env("snapshot") == {}
    assert "store-credentials" in mounts("snapshot")
    assert "store-credentials" not in mounts("fetch") | mounts("pipeline")
    copy_name = next(
        v["secret"]["secretName"] for v in pod_spec["volumes"] if v["name"] == "store-credentials"
    )
    obj = wait_phase(cluster, ns, "secretive", ("Succeeded", "Failed"))
    # The copy lived only as long as the Job ran.
    wait_for(
        lambda: cluster.kubectl("get", "secret", copy_name, namespace=ns, check=False).returncode != 0,
        30, what="the credentials copy to be deleted",
    )  # fmt: skip
    seen = [
        json.dumps(obj),
        cluster.kubectl("get", "events", "-A", "-o", "json").stdout,
        cluster.kubectl("get", "jobs,pods", "-o", "json", namespace=ns).stdout,
        cluster.kubectl("get", "snapshotstore", store_name, "-o", "json").stdout,
        operator.log(),
    ]
    for text in seen:
        assert key_marker not in text and token_marker not in text


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_a_tenant_with_edit_rights_reaches_no_store_or_gc_credential(
    cluster: Cluster, operator: Operator, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """A ServiceAccount bound to `edit` in its namespace (impersonated): it cannot read the GC's key in the
    operator's namespace, nor run a pod there to mount it, and a snapshot in its namespace leaves no copy
    there to mount — the snapshot pod mounts the namespace's own Secret (snapshotSecretRef) only."""
    system = operator.system_namespace
    gc_key = f"gc-key-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "secret", "generic", gc_key, "--from-literal=key.json={}", namespace=system)
    cluster.kubectl("create", "secret", "generic", "store-writer", "--from-literal=key.json={}", namespace=ns)
    cluster.kubectl("create", "serviceaccount", "dev", namespace=ns)
    cluster.kubectl("create", "rolebinding", "dev-edit", "--clusterrole=edit", f"--serviceaccount={ns}:dev",
                    namespace=ns)  # fmt: skip
    dev = f"--as=system:serviceaccount:{ns}:dev"

    def can(verb: str, what: str, namespace: str) -> str:
        return str(cluster.kubectl("auth", "can-i", verb, what, dev, namespace=namespace, check=False).stdout.strip())

    assert can("create", "pods", ns) == can("get", "secrets", ns) == "yes"  # edit is real
    for verb, what in (("get", f"secret/{gc_key}"), ("list", "secrets"), ("create", "pods"), ("create", "jobs")):
        assert can(verb, what, system) == "no", (verb, what)
    denied = cluster.kubectl("get", "secret", gc_key, "-o", "json", dev, namespace=system, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    store_name = store(credentials={"secretRef": {"name": gc_key},
                                    "snapshotSecretRef": {"name": "store-writer"}})  # fmt: skip
    cluster.apply(snapshot_manifest("tenant", store_name, git_repo), namespace=ns)
    (job,) = wait_for(lambda: jobs_of(cluster, ns, "tenant"), 60, interval=0.5, what="the Job")
    obj = wait_phase(cluster, ns, "tenant", ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Succeeded", ready(obj)
    pod = job["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"store-writer"} and gc_key not in json.dumps(job)
    assert [s["metadata"]["name"] for s in cluster.get("secrets", namespace=ns)["items"]] == ["store-writer"]


def test_invalid_resources_are_refused(cluster: Cluster, crds: None, ns: str) -> None:
    def refused(manifest: dict[str, Any], namespace: str | None = None) -> str:
        with pytest.raises(KubectlError) as info:
            cluster.apply(manifest, namespace=namespace)
        return str(info.value.stderr)

    base = snapshot_manifest("bad", "main", Path("/nowhere"))
    schema = json.loads(json.dumps(base))
    schema["spec"]["validation"]["invalidGeometry"] = "fix"
    assert 'Unsupported value: "fix"' in refused(schema, ns)
    both = json.loads(json.dumps(base))
    both["spec"]["source"]["bucket"] = {"url": "gs://raw/a/"}
    assert "exactly one of source.git, source.bucket or source.volume" in refused(both, ns)
    empty_rev = json.loads(json.dumps(base))
    empty_rev["spec"]["source"]["git"]["revision"] = ""
    assert "revision" in refused(empty_rev, ns)
    bad_url = {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore", "metadata": {"name": "tsop-bad"},
               "spec": {"url": "ftp://x/y", "gc": {"gracePeriod": "one day"}}}  # fmt: skip
    message = refused(bad_url)
    assert "url must start with gs://, s3://, azure:// or file:///" in message and "gracePeriod" in message
    bad_container = {**bad_url, "metadata": {"name": "tsop-bad-azure"},
                     "spec": {"url": "azure://No_Such--Container/y", "accountName": "acct"}}
    assert "an azure container must be 3-63" in refused(bad_container)
    misplaced = {**bad_url, "metadata": {"name": "tsop-bad-account"}, "spec": {"url": "gs://b/y", "accountName": "acct"}}
    assert "accountName is for azure:// stores only" in refused(misplaced)



def test_specs_that_would_fail_a_job_are_refused_at_apply_time(cluster: Cluster, crds: None, ns: str) -> None:
    """Issue 15: each refused by the apiserver, with a message that says what is wrong."""
    def refused(manifest: dict[str, Any], namespace: str | None = None) -> str:
        with pytest.raises(KubectlError) as info:
            cluster.apply(manifest, namespace=namespace)
        return str(info.value.stderr)

    def variant(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        doc = json.loads(json.dumps(snapshot_manifest("bad", "main", Path("/nowhere"))))
        edit(doc)
        return doc

    git = lambda d: d["spec"]["source"]["git"]  # noqa: E731
    cases: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda d: d["metadata"].update(name="n" * 64), "metadata.name must be at most 63 characters"),
        (lambda d: git(d).update(url="https://example.com/r.git\nx"), "must not contain whitespace"),
        (lambda d: git(d).update(url="https://bob:hunter2@example.com/r.git"), "must not carry user:password@"),
        (lambda d: git(d).update(url="http://example.com/r.git", credentialsSecret={"name": "tok"}),
         "never sent over plain http://"),
        (lambda d: d["spec"].update(resources={"requests": {"memory": "8Gi"}, "limits": {"memory": "1Gi"}}),
         "requests value must be at most its resources.limits"),
        (lambda d: d["spec"].update(resources={"requests": {"cpu": "-1"}}), "spec.resources.requests.cpu"),
    ]
    for edit, expected in cases:
        message = refused(variant(edit), ns)
        assert expected in message, (expected, message)

    # spec.store is immutable once set
    cluster.apply(snapshot_manifest("moving", "store-a", Path("/nowhere")), namespace=ns)
    with pytest.raises(KubectlError) as info:
        cluster.kubectl("patch", "dsnap", "moving", "--type=merge", "-p", '{"spec":{"store":"store-b"}}',
                        namespace=ns)
    assert "spec.store is immutable" in str(info.value.stderr)

    def store(name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore", "metadata": {"name": name},
                "spec": {"url": "gs://b/p", **spec}}

    assert "at most 63 characters" in refused(store("s" * 64))
    assert "512" in refused(store("tsop-long", url="gs://b/" + "p" * 600))
    assert "whitespace" in refused(store("tsop-nl", url="gs://b/p\nq"))
    assert "gracePeriod" in refused(store("tsop-dur", gc={"gracePeriod": "99999999999999999999w"}))

def test_store_gets_gc_cronjob(cluster: Cluster, operator: Operator, store: Callable[..., str]) -> None:
    name = store(gc={"schedule": "*/30 * * * *", "gracePeriod": "1h", "suspend": True})
    obj = wait_for(
        lambda: (o := cluster.get("snapshotstore", name)) and ready(o).get("status") == "True" and o, 60,
        what="store Ready",
    )  # fmt: skip
    ref = obj["status"]["cronJob"]
    assert ref["namespace"] == operator.system_namespace
    cron = cluster.get("cronjob", ref["name"], namespace=ref["namespace"])
    assert cron["spec"]["schedule"] == "*/30 * * * *" and cron["spec"]["suspend"] is True
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["gc", "--store", name]
    assert cron["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    # A spec change reaches the CronJob.
    cluster.kubectl(
        "patch", "snapshotstore", name, "--type=merge", "-p", '{"spec":{"gc":{"schedule":"@daily"}}}'
    )
    wait_for(
        lambda: cluster.get("cronjob", ref["name"], namespace=ref["namespace"])["spec"]["schedule"] == "@daily",
        60, what="CronJob updated",
    )  # fmt: skip
    # Deleting the store removes its CronJob (owner reference).
    cluster.kubectl("delete", "snapshotstore", name)
    wait_for(
        lambda: cluster.kubectl("get", "cronjob", ref["name"], namespace=ref["namespace"], check=False).returncode
        != 0,
        60, what="CronJob garbage-collected",
    )  # fmt: skip


def test_a_second_store_on_the_same_url_is_not_ready_and_its_snapshots_wait(
    cluster: Cluster, operator: Operator, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """Two stores on one bucket prefix would GC each other's snapshots: the newer is StoreConflict, its GC
    CronJob suspended, its snapshots get no Job; the older one goes on."""
    first = store()
    url = cluster.get("snapshotstore", first)["spec"]["url"]
    # Created within the same second, the two are ordered by name: the twin's sorts after the first's.
    twin = f"{first}-twin"
    cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
                   "metadata": {"name": twin, "labels": {RUN_LABEL: RUN_ID}},
                   "spec": {"url": url + "/", "endpoint": cluster.get("snapshotstore", first)["spec"]["endpoint"]}})
    try:
        obj = wait_for(lambda: (o := cluster.get("snapshotstore", twin)) and ready(o).get("reason") == "StoreConflict"
                       and o, 60, what="StoreConflict")  # fmt: skip
        assert f"SnapshotStore {first!r}" in ready(obj)["message"]
        ref = obj["status"]["cronJob"]
        assert cluster.get("cronjob", ref["name"], namespace=ref["namespace"])["spec"]["suspend"] is True
        assert ready(cluster.get("snapshotstore", first))["status"] == "True"
        cluster.apply(snapshot_manifest("twinned", twin, git_repo), namespace=ns)
        wait_for(lambda: ready(dsnap(cluster, ns, "twinned")).get("reason") == "StoreConflict", 60,
                 what="the snapshot to wait")  # fmt: skip
        assert not jobs_of(cluster, ns, "twinned")
    finally:
        cluster.kubectl("delete", "snapshotstore", twin, "--wait=false", check=False)


def test_a_store_limited_by_selector_refuses_other_namespaces_until_one_is_labelled(
    cluster: Cluster, operator: Operator, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """allowedNamespaces.from: Selector — a snapshot outside it: NamespaceNotAllowed, an Event, no Job and no
    copy of the store's Secret; labelling the namespace starts the snapshot without restarting anything."""
    key = json.dumps({"type": "service_account", "client_email": "x@y.z"})
    secret = f"key-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "secret", "generic", secret, f"--from-literal=key.json={key}",
                    namespace=operator.system_namespace)  # fmt: skip
    tenant = f"geo-{uuid.uuid4().hex[:6]}"
    store_name = store(credentials={"secretRef": {"name": secret}}, allowedNamespaces={
        "from": "Selector", "selector": {"matchLabels": {"terrasnap.io/tenant": tenant}}})  # fmt: skip
    cluster.apply(snapshot_manifest("outsider", store_name, git_repo, backoffLimit=0), namespace=ns)
    obj = wait_for(
        lambda: (o := dsnap(cluster, ns, "outsider")) and ready(o).get("reason") == "NamespaceNotAllowed" and o,
        60, what="NamespaceNotAllowed",
    )  # fmt: skip
    assert ns in ready(obj)["message"] and store_name in ready(obj)["message"]
    assert "NamespaceNotAllowed" in [e["reason"] for e in events_for(cluster, ns, "outsider")]
    time.sleep(3)  # nothing is created later either
    assert not jobs_of(cluster, ns, "outsider")
    assert cluster.get("secrets", namespace=ns)["items"] == []

    cluster.kubectl("label", "namespace", ns, f"terrasnap.io/tenant={tenant}")
    (job,) = wait_for(lambda: jobs_of(cluster, ns, "outsider"), 60, interval=0.5, what="the Job after labelling")
    assert ready(dsnap(cluster, ns, "outsider")).get("reason") != "NamespaceNotAllowed"
    assert job["metadata"]["labels"]["terrasnap.io/store"] == store_name


def test_an_image_the_operator_does_not_allow_is_refused(
    cluster: Cluster, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """spec.image must be the worker image or match TERRASNAP_ALLOWED_IMAGES: no Job runs anything else."""
    cluster.apply(snapshot_manifest("miner", store(), git_repo, image="evil.example/miner:latest"), namespace=ns)
    obj = wait_for(
        lambda: (o := dsnap(cluster, ns, "miner")) and ready(o).get("reason") == "ImageNotAllowed" and o, 60,
        what="ImageNotAllowed",
    )  # fmt: skip
    assert "evil.example/miner:latest" in ready(obj)["message"] and not jobs_of(cluster, ns, "miner")
    assert "ImageNotAllowed" in [e["reason"] for e in events_for(cluster, ns, "miner")]


def test_missing_store_is_reported(cluster: Cluster, ns: str, git_repo: Path) -> None:
    cluster.apply(snapshot_manifest("orphan", "tsop-does-not-exist", git_repo), namespace=ns)
    obj = wait_for(
        lambda: (o := dsnap(cluster, ns, "orphan")) and ready(o).get("reason") == "StoreNotFound" and o, 60,
        what="StoreNotFound",
    )  # fmt: skip
    assert ready(obj)["status"] == "False" and not jobs_of(cluster, ns, "orphan")


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_a_job_the_api_server_refuses_is_reported(
    cluster: Cluster, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """A namespace quota of zero Jobs: the status says JobRejected with the API server's words (not a silent
    retry loop in the operator's log), and the snapshot runs once the quota is lifted."""
    cluster.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
                   "spec": {"hard": {"count/jobs.batch": "0"}}}, namespace=ns)  # fmt: skip
    wait_for(lambda: cluster.get("resourcequotas", "no-jobs", namespace=ns).get("status", {}).get("hard"), 60,
             interval=0.5, what="the quota's status")  # fmt: skip
    cluster.apply(snapshot_manifest("quota", store(), git_repo), namespace=ns)
    obj = wait_for(
        lambda: (o := dsnap(cluster, ns, "quota")) and ready(o).get("reason") == "JobRejected" and o, 60,
        what="JobRejected",
    )  # fmt: skip
    assert "exceeded quota" in ready(obj)["message"] and not jobs_of(cluster, ns, "quota")
    cluster.kubectl("delete", "resourcequota", "no-jobs", namespace=ns)
    done = wait_for(lambda: (o := dsnap(cluster, ns, "quota"))["status"].get("phase") == "Succeeded" and o,
                    ENGINE_RUN, interval=1, what="the snapshot to run after the quota is lifted")  # fmt: skip
    assert ready(done)["status"] == "True" and len(jobs_of(cluster, ns, "quota")) == 1


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_spec_change_supersedes_running_job(
    cluster: Cluster, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    store_name = store()
    cluster.apply(snapshot_manifest("moving", store_name, git_repo, revision="v1"), namespace=ns)
    (first,) = wait_for(lambda: jobs_of(cluster, ns, "moving"), 60, interval=0.5, what="the first Job")
    cluster.apply(snapshot_manifest("moving", store_name, git_repo, revision="v2"), namespace=ns)
    obj = wait_phase(cluster, ns, "moving", ("Succeeded", "Failed"), generation=2)
    assert obj["status"]["phase"] == "Succeeded", ready(obj)
    assert obj["status"]["source"]["commit"] == _git(git_repo, "rev-parse", "v2").strip()
    names = [j["metadata"]["name"] for j in jobs_of(cluster, ns, "moving")]
    assert first["metadata"]["name"] not in names and len(names) == 1
    assert [h["generation"] for h in obj["status"]["history"]] == [2]
    assert "Superseded" in [e["reason"] for e in events_for(cluster, ns, "moving")]


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_bucket_source(
    cluster: Cluster, ns: str, store: Callable[..., str], gcs: fakegcs.FakeGCS, tmp_path: Path
) -> None:
    """A gs:// prefix as the source, read with the store's endpoint."""
    from terrasnap.engine.store import Store

    raw_bucket = f"raw-{uuid.uuid4().hex[:10]}"
    gcs.create_bucket(raw_bucket)
    data = make_demo(tmp_path / "data")
    raw = Store.from_url(f"gs://{raw_bucket}/sample", gcs.endpoint)
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        raw.write_bytes(path.relative_to(data).as_posix(), path.read_bytes())
    store_name = store()
    manifest = snapshot_manifest("frombucket", store_name, Path("/unused"))
    manifest["spec"]["source"] = {"bucket": {"url": f"gs://{raw_bucket}/sample/"}}
    cluster.apply(manifest, namespace=ns)
    obj = wait_phase(cluster, ns, "frombucket", ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Succeeded", ready(obj)
    assert obj["status"]["summary"]["rasters"] == 2
    assert obj["status"]["source"].get("commit") is None


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_volume_source(cluster: Cluster, ns: str, store: Callable[..., str]) -> None:
    """A PersistentVolumeClaim as the source, mounted read-only at /source (the node's hostPath PVs)."""
    cluster.apply(
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "annotations"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                  "resources": {"requests": {"storage": "10Mi"}}}},
        namespace=ns,
    )  # fmt: skip

    def provisioned() -> str | None:
        for pv in cluster.get("persistentvolumes")["items"]:
            ref = pv["spec"].get("claimRef") or {}
            if ref.get("namespace") == ns and ref.get("name") == "annotations":
                return str(pv["spec"]["hostPath"]["path"])
        return None

    host_path = Path(wait_for(provisioned, 60, interval=0.5, what="a PersistentVolume for the claim"))
    make_demo(host_path / "tiles")
    _chown_tree(host_path, WORKER_UID)
    store_name = store()
    manifest = snapshot_manifest("fromvolume", store_name, Path("/unused"))
    manifest["spec"]["source"] = {"volume": {"claimName": "annotations", "path": "/tiles"}}
    cluster.apply(manifest, namespace=ns)
    obj = wait_phase(cluster, ns, "fromvolume", ("Succeeded", "Failed"))
    assert obj["status"]["phase"] == "Succeeded", ready(obj)
    assert obj["status"]["summary"]["rasters"] == 2
    (job,) = jobs_of(cluster, ns, "fromvolume")
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "source", "mountPath": "/source", "readOnly": True} in mounts


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_retry_annotation_reruns_a_failed_generation(
    cluster: Cluster, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    store_name = store(endpoint=f"http://127.0.0.1:{_free_port()}")  # unreachable: fails every time
    cluster.apply(snapshot_manifest("again", store_name, git_repo, backoffLimit=0), namespace=ns)
    failed = wait_phase(cluster, ns, "again", ("Failed",))
    first_job = failed["status"]["job"]
    cluster.kubectl("annotate", "dsnap", "again", "terrasnap.io/retry=1", "--overwrite", namespace=ns)
    wait_for(lambda: len(jobs_of(cluster, ns, "again")) == 2, 60, interval=0.5, what="a second Job")
    again = wait_for(
        lambda: (o := dsnap(cluster, ns, "again"))["status"].get("job") != first_job
        and o["status"].get("phase") == "Failed" and o,
        ENGINE_RUN, interval=1, what="the retried Job to fail too",
    )  # fmt: skip
    assert again["metadata"]["generation"] == 1 and again["status"]["observedGeneration"] == 1
    assert ready(again)["reason"] == "StoreUnreachable"


@pytest.mark.timeout(3 * ENGINE_RUN)
def test_a_forged_termination_message_is_never_believed(
    cluster: Cluster, operator: Operator, ns: str, store: Callable[..., str], git_repo: Path
) -> None:
    """A tenant's pod with the Job's labels (job-name and controller-uid, no controller reference) that ends
    after the real pod, claiming another namespace's manifest: the status names the real, canonical one."""
    store_name = store()
    cluster.apply(snapshot_manifest("forged", store_name, git_repo), namespace=ns)
    wait_for(lambda: jobs_of(cluster, ns, "forged"), 60, interval=0.5, what="the Job")
    operator.kill()
    try:
        wait_for(
            lambda: any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                        for j in jobs_of(cluster, ns, "forged") for c in j.get("status", {}).get("conditions", [])),
            ENGINE_RUN, interval=1, what="the Job to finish",
        )  # fmt: skip
        (job,) = jobs_of(cluster, ns, "forged")
        bucket = cluster.get("snapshotstore", store_name)["spec"]["url"]
        lie = {"ok": True, "snapshotID": "sha256:" + "e" * 64,
               "manifest": f"{bucket}/terrasnap/manifests/victim/data/{'e' * 64}/manifest.parquet"}
        restricted = {"runAsNonRoot": True, "runAsUser": WORKER_UID, "allowPrivilegeEscalation": False,
                      "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
        cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "forger", "labels": {"job-name": job["metadata"]["name"],
                                         "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "snapshot", "image": "x", "securityContext": restricted,
                "command": ["sh", "-c", f"echo '{json.dumps(lie)}' > /dev/termination-log"]}]}},
            namespace=ns)  # fmt: skip
        wait_for(lambda: cluster.get("pod", "forger", namespace=ns).get("status", {}).get("phase") == "Succeeded",
                 60, interval=0.5, what="the forged pod to end")  # fmt: skip
    finally:
        operator.start()
    obj = wait_phase(cluster, ns, "forged", ("Succeeded", "Failed"), timeout=60)
    status = obj["status"]
    assert status["phase"] == "Succeeded", ready(obj)
    sid = status["snapshotID"]
    assert status["manifest"]["uri"] == (
        f"{bucket}/terrasnap/manifests/{ns}/forged/{sid.removeprefix('sha256:')}/manifest.parquet")
    assert "victim" not in json.dumps(status)
