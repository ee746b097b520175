# The fixtures imported from test_operator.py are test parameters by design (pytest injects them by name).
# ruff: noqa: F811
"""The operator-made GC CronJob on the real control plane (issue 6, "On the control plane").

The operator (a subprocess, as in test_operator.py) snapshots two revisions of one git repository into a
fake-gcs-server store through real engine Jobs; one DatasetSnapshot is then deleted. A Job made from the
store's GC CronJob with `kubectl create job --from=cronjob/...` runs `terrasnap gc --store NAME` in a pod on
the node agent, as the GC ServiceAccount with the chart's GC RBAC. It must delete exactly the objects only the
deleted snapshot referenced (and its manifest folder), keep every object of the live one (and its folder),
report the figures in the SnapshotStore's status.lastGC and an Event, and a vanilla `dvc pull` of the kept
snapshot must still reproduce the source bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from terrasnap.engine.store import INFLIGHT_PREFIX, Store
from tests.cluster.test_operator import (  # noqa: F401  (fixtures: operator, crds, ns, store, git_repo)
    ENGINE_RUN,
    RUN_ID,
    RUN_LABEL,
    Operator,
    _git,
    crds,
    git_repo,
    ns,
    operator,
    ready,
    snapshot_manifest,
    store,
    wait_phase,
)
from tests.controlplane.testing import Cluster, wait_for
from tests.support import azurite, fakegcs, motos3

pytestmark = [pytest.mark.cluster, pytest.mark.gcs]

GC_SA = "terrasnap-gc"  # OperatorConfig.gc_service_account's default: the CronJob's pods run as it


@pytest.fixture
def gc_rbac(cluster: Cluster, operator: Operator) -> Iterator[None]:
    """The GC ServiceAccount and exactly the rights charts/terrasnap/templates/rbac-gc.yaml gives it (the
    operator runs without the chart here): list DatasetSnapshots, get SnapshotStores, patch their status,
    create Events in "default"."""
    name = f"terrasnap-gc-test-{RUN_ID}"
    sa = {"kind": "ServiceAccount", "name": GC_SA, "namespace": operator.system_namespace}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": GC_SA, "namespace": operator.system_namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": [{"apiGroups": ["terrasnap.io"], "resources": ["datasetsnapshots"], "verbs": ["list"]},
                   {"apiGroups": ["terrasnap.io"], "resources": ["snapshotstores"], "verbs": ["get"]},
                   {"apiGroups": ["terrasnap.io"], "resources": ["snapshotstores/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [sa]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": "default"},
         "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": "default"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [sa]},
    ]  # fmt: skip
    cluster.apply(docs)
    yield
    cluster.kubectl("delete", "clusterrole,clusterrolebinding", name, "--wait=false", check=False)
    cluster.kubectl("delete", "role,rolebinding", name, "--wait=false", namespace="default", check=False)


def _metadata(st: Store, status: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(st.read_bytes(st.rel_from_uri(status["manifest"]["metadata"])))
    return doc


def _folder(st: Store, status: dict[str, Any]) -> str:
    return st.rel_from_uri(status["manifest"]["uri"]).rsplit("/", 1)[0]


def _files_under(st: Store, prefix: str) -> set[str]:
    return {rel for rel, _info in st.list_prefix(prefix)}


def _expire_registration(st: Store, rel: str) -> None:
    """Rewrite a registration as the same document whose lease ran out a day ago.

    Every snapshot leaves its registration in the store as a 48 h post-publish lease (refs.POST_PUBLISH_LEASE,
    docs/gc.md rule 3), and a live registration keeps its objects and manifest folder whatever the roots say.
    The lease has no knob, and waiting 48 h is not an option, so the test moves its expiry into the past: the
    state the store is in two days after publishing. Without this the deleted snapshot's objects would be
    (rightly) kept and the test would prove nothing about cluster roots. GC ignores a registration only once
    `now >= expires + CLOCK_SKEW` (5 min), and deletes it in its clean-up once expired for more than 2x that:
    a day ago is past both."""
    doc = json.loads(st.read_bytes(rel))
    doc["expires"] = time.time() - 86400
    st.write_bytes(rel, json.dumps(doc, sort_keys=True).encode())


def _job_done(cluster: Cluster, namespace: str, job: str) -> str | None:
    status = cluster.get("job", job, namespace=namespace).get("status") or {}
    for condition in status.get("conditions") or ():
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return None


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _s3_store(cluster: Cluster, operator: Operator, ns: str, s3: motos3.MotoS3, gc: dict[str, Any]) -> str:
    """An s3:// SnapshotStore on moto: the GC's key in the operator's namespace, the writers' in the
    snapshot's, both AWS shared credentials files (moto takes any keys)."""
    bucket, name = f"b-{uuid.uuid4().hex[:10]}", f"tsop-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    ini = "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    for namespace, secret in ((operator.system_namespace, f"{name}-gc"), (ns, "aws-writer")):
        cluster.kubectl("create", "secret", "generic", secret, f"--from-literal=credentials={ini}",
                        namespace=namespace)  # fmt: skip
    cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
                   "metadata": {"name": name, "labels": {RUN_LABEL: RUN_ID}},
                   "spec": {"url": f"s3://{bucket}/dvc", "endpoint": s3.endpoint, "region": "us-east-1", "gc": gc,
                            "credentials": {"secretRef": {"name": f"{name}-gc", "key": "credentials"},
                                            "snapshotSecretRef": {"name": "aws-writer", "key": "credentials"}}}})
    return name


def _azure_store(cluster: Cluster, operator: Operator, ns: str, azure: azurite.Azurite, gc: dict[str, Any]) -> str:
    """An azure:// SnapshotStore on Azurite: a connection string for the GC in the operator's namespace, the
    account key alone (with accountName) for the writers in the snapshot's: both forms the engine takes."""
    container, name = f"c-{uuid.uuid4().hex[:10]}", f"tsop-{uuid.uuid4().hex[:8]}"
    azure.create_container(container)
    for namespace, secret, value in ((operator.system_namespace, f"{name}-gc", azure.connection_string),
                                     (ns, "azure-writer", azure.account_key)):
        cluster.kubectl("create", "secret", "generic", secret, f"--from-literal=connection={value}",
                        namespace=namespace)  # fmt: skip
    cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
                   "metadata": {"name": name, "labels": {RUN_LABEL: RUN_ID}},
                   "spec": {"url": f"azure://{container}/dvc", "endpoint": azure.endpoint,
                            "accountName": azure.account_name, "gc": gc,
                            "credentials": {"secretRef": {"name": f"{name}-gc", "key": "connection"},
                                            "snapshotSecretRef": {"name": "azure-writer", "key": "connection"}}}})
    return name


@pytest.mark.timeout(3 * ENGINE_RUN)
@pytest.mark.parametrize("kind", ["gs", "s3", "azure"])
def test_gc_cronjob_collects_a_deleted_snapshot(
    cluster: Cluster,
    operator: Operator,
    gc_rbac: None,
    ns: str,
    store: Callable[..., str],
    git_repo: Path,
    gcs: fakegcs.FakeGCS,
    tmp_path: Path,
    kind: str,
    request: pytest.FixtureRequest,
) -> None:
    # gracePeriod 0s, the smallest the CRD's pattern accepts: the emulators cannot backdate objects, so an
    # honest "older than the grace" needs a zero grace. suspend: only our Job runs (the schedule never fires).
    gc = {"gracePeriod": "0s", "suspend": True, "keep": {"last": 1}}
    if kind == "s3":
        s3: motos3.MotoS3 = request.getfixturevalue("s3")
        store_name, endpoint = _s3_store(cluster, operator, ns, s3, gc), s3.endpoint
    elif kind == "azure":
        azure: azurite.Azurite = request.getfixturevalue("azure")
        store_name, endpoint = _azure_store(cluster, operator, ns, azure, gc), azure.endpoint
    else:
        store_name, endpoint = store(gc=gc), gcs.endpoint
    store_obj = wait_for(
        lambda: (o := cluster.get("snapshotstore", store_name)) and ready(o).get("status") == "True" and o, 60,
        what="store Ready with its CronJob",
    )  # fmt: skip
    cron = store_obj["status"]["cronJob"]
    assert cron["namespace"] == operator.system_namespace
    url = str(store_obj["spec"]["url"])
    st = Store.from_url(url, endpoint)

    # Two snapshots of one repository: "kept" at v1, "gone" at v2 (v1 + NOTES.txt), so they share objects.
    cluster.apply([snapshot_manifest("kept", store_name, git_repo, revision="v1"),
                   snapshot_manifest("gone", store_name, git_repo, revision="v2")], namespace=ns)  # fmt: skip
    kept = wait_phase(cluster, ns, "kept", ("Succeeded", "Failed"))["status"]
    gone = wait_phase(cluster, ns, "gone", ("Succeeded", "Failed"))["status"]
    assert kept["phase"] == "Succeeded" and gone["phase"] == "Succeeded", (kept, gone)

    kept_objects = set(_metadata(st, kept)["objects"])
    gone_objects = set(_metadata(st, gone)["objects"])
    kept_folder, gone_folder = _folder(st, kept), _folder(st, gone)
    expected_deleted = gone_objects - kept_objects
    # Not vacuous: something to delete, something shared to keep, and each side has a .dir object.
    assert expected_deleted and kept_objects & gone_objects, (kept_objects, gone_objects)
    assert any(o.endswith(".dir") for o in expected_deleted) and any(o.endswith(".dir") for o in kept_objects)
    assert kept_folder != gone_folder
    before = {o.md5: o.size for o in st.list_objects()}
    assert set(before) == kept_objects | gone_objects, "the store holds exactly the two snapshots' objects"
    kept_files = _files_under(st, kept_folder)
    assert f"{kept_folder}/manifest.parquet" in kept_files and _files_under(st, gone_folder)

    # Delete "gone"; its data stays in the store until GC.
    cluster.kubectl("delete", "dsnap", "gone", namespace=ns)
    wait_for(lambda: cluster.kubectl("get", "dsnap", "gone", namespace=ns, check=False).returncode != 0, 60,
             what="DatasetSnapshot gone deleted")  # fmt: skip

    # Two days later: both post-publish leases have run out (see _expire_registration). Expiring the kept
    # snapshot's lease too means its objects survive only because the cluster names it as a root.
    registrations = {rel for rel in _files_under(st, INFLIGHT_PREFIX) if rel.endswith(".json")}
    owners = sorted(json.loads(st.read_bytes(rel))["owner"] for rel in registrations)
    assert owners == [f"{ns}/gone", f"{ns}/kept"], owners
    for rel in registrations:
        _expire_registration(st, rel)

    job = f"gc-now-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "job", job, f"--from=cronjob/{cron['name']}", namespace=cron["namespace"])
    outcome = wait_for(lambda: _job_done(cluster, cron["namespace"], job), 180, interval=1, what="the GC Job")
    logs = cluster.kubectl("logs", f"job/{job}", namespace=cron["namespace"], check=False)
    assert outcome == "Complete", f"{logs.stdout}\n{logs.stderr}"
    (pod,) = cluster.get("pods", "-l", f"job-name={job}", namespace=cron["namespace"])["items"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["terrasnap"] and container["args"][:3] == ["gc", "--store", store_name]
    assert pod["spec"]["serviceAccountName"] == GC_SA and pod["spec"]["nodeName"] == cluster.node_name

    # 1 + 2: exactly the objects only "gone" referenced are deleted, with its manifest folder; everything of
    # "kept" stays, folder included.
    last = cluster.get("snapshotstore", store_name)["status"]["lastGC"]
    report = json.loads(st.read_bytes(st.rel_from_uri(last["report"])))
    after = {o.md5 for o in st.list_objects()}
    assert after == kept_objects, {
        "missing": kept_objects - after,
        "left over": after - kept_objects,
        "report": report,
        "log": logs.stdout,
    }
    assert set(before) - after == expected_deleted
    assert _files_under(st, gone_folder) == set()
    assert _files_under(st, kept_folder) == kept_files
    # the expired registrations were cleaned up by the run
    assert {rel for rel in _files_under(st, INFLIGHT_PREFIX) if rel.endswith(".json")} == set()

    # 3: status.lastGC and the Event carry the figures; the report in the store names the objects.
    freed = sum(before[o] for o in expected_deleted)
    assert last["result"] == "Succeeded" and last["dryRun"] is False, last
    assert last["deleted"] == len(expected_deleted) and last["freedBytes"] == freed, last
    assert last["roots"] == 1 and last["kept"] == len(kept_objects) and last["skippedYoung"] == 0, last
    assert set(report["deletedObjects"]) == expected_deleted and report["ok"] is True
    assert report["roots"] == [kept["manifest"]["uri"]]
    assert report["rootsComplete"] is True and report["manifestsDeleted"] == [gone_folder], report
    events = [
        e
        for e in cluster.get("events", namespace="default")["items"]
        if e["involvedObject"].get("kind") == "SnapshotStore"
        and e["involvedObject"].get("name") == store_name
    ]
    (event,) = [e for e in events if e["reason"] == "GarbageCollected"]
    assert event["type"] == "Normal", event
    assert f"deleted {len(expected_deleted)} object(s), {freed} bytes;" in event["message"], event
    assert "could not" not in logs.stdout, logs.stdout  # status patch and Event both allowed

    # 4: vanilla DVC pulls the kept snapshot from the store, byte for byte the source at v1.
    proj = tmp_path / "pull"
    proj.mkdir()
    for fname in ("dvc.yaml", "dvc.lock", "raw.dvc"):
        (proj / fname).write_bytes(st.read_bytes(f"{kept_folder}/{fname}"))
    # How a DVC user points at each emulator: an endpoint URL, or for Azure the connection string (in the
    # local config, where DVC's docs put secrets).
    reach: list[tuple[str, ...]] = [("remote", "modify", "s", "endpointurl", endpoint)]
    if kind == "gs":
        reach.append(("remote", "modify", "s", "allow_anonymous_login", "true"))
    elif kind == "azure":
        reach = [("remote", "modify", "--local", "s", "connection_string",
                  request.getfixturevalue("azure").connection_string)]
    for args in (("init", "--no-scm"), ("remote", "add", "-d", "s", url), *reach, ("pull",)):  # fmt: skip
        p = _dvc(proj, *args)
        assert p.returncode == 0, f"dvc {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    source = {
        path.removeprefix("data/"): path
        for path in _git(git_repo, "ls-tree", "-r", "--name-only", "v1", "data").splitlines()
    }
    pulled = {p.relative_to(proj / "raw").as_posix() for p in (proj / "raw").rglob("*") if p.is_file()}
    assert pulled == set(source)
    for rel, path in source.items():
        want = subprocess.run(["git", "-c", "safe.directory=*", "show", f"v1:{path}"], cwd=git_repo,
                              capture_output=True, check=True).stdout  # fmt: skip
        assert (proj / "raw" / rel).read_bytes() == want, rel
    # DVC itself finds the pulled raw data intact, and every file of the pipeline's cached directory outputs
    # (normalized/) has the md5 its .dir object in the store, named by dvc.lock, says.
    status = _dvc(proj, "status", "raw.dvc")
    assert status.returncode == 0 and "changed" not in status.stdout, status.stdout
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    dir_outs = [out for stage in lock["stages"].values() for out in stage.get("outs", ())
                if str(out.get("md5", "")).endswith(".dir")]  # fmt: skip
    assert dir_outs and all(out["md5"] in kept_objects for out in dir_outs), dir_outs
    for out in dir_outs:
        entries = json.loads(st.read_bytes(Store.object_rel(out["md5"])))
        root = proj / out["path"]
        assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
            e["relpath"] for e in entries
        }, out["path"]
        for e in entries:
            assert hashlib.md5((root / e["relpath"]).read_bytes()).hexdigest() == e["md5"], e
