"""The test control plane is a real Kubernetes: real apiserver validation, admission, RBAC and controllers,
and a node that really runs pods. Each test asserts on something only the real component produces."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.controlplane.testing import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

PY = "python"  # resolved through PATH in the pod: the project's venv comes first


def job(name: str, code: str, *, backoff: int = 0, deadline: int | None = None, **pod_spec) -> dict:
    spec: dict = {
        "backoffLimit": backoff,
        "template": {"spec": {"restartPolicy": "Never",
                              "containers": [{"name": "main", "image": "terrasnap-worker:test",
                                              "command": [PY, "-c", textwrap.dedent(code)]}],
                              **pod_spec}},
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def pod(name: str, command: list[str], **spec) -> dict:
    containers = spec.pop("containers", None) or [{"name": "main", "image": "terrasnap-worker:test",
                                                   "command": command}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": containers, **spec}}


def server_create(cluster: Cluster, obj: dict, ns: str):
    """Create with client-side validation off, so only the apiserver judges the object."""
    return cluster.kubectl("create", "--validate=false", "-f", "-", input=json.dumps(obj), namespace=ns, check=False)


def job_condition(cluster: Cluster, ns: str, name: str, ctype: str) -> dict | None:
    j = cluster.get("job", name, namespace=ns)
    return next((c for c in j["status"].get("conditions") or [] if c["type"] == ctype and c["status"] == "True"),
                None)


def job_pods(cluster: Cluster, ns: str, name: str) -> list[dict]:
    return cluster.get("pods", "-l", f"batch.kubernetes.io/job-name={name}", namespace=ns)["items"]


def pod_phase(cluster: Cluster, ns: str, name: str) -> str:
    return cluster.get("pod", name, namespace=ns)["status"].get("phase", "")


def container_pid(p: dict) -> int:
    cid = p["status"]["containerStatuses"][0]["containerID"]
    assert cid.startswith("process://"), cid
    return int(cid.removeprefix("process://"))


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def not_found(cluster: Cluster, *args: str, namespace: str | None = None) -> bool:
    """True once `kubectl get ARGS` answers NotFound (any other failure is not proof of deletion)."""
    p = cluster.kubectl("get", *args, namespace=namespace, check=False)
    return p.returncode != 0 and "NotFound" in p.stderr


def terminated(p: dict, i: int = 0) -> dict:
    return p["status"]["containerStatuses"][i]["state"]["terminated"]


# ---------------------------------------------------------------------------------------------------------


def test_cluster_is_the_real_thing(cluster: Cluster, k8s_client, kubeconfig: str) -> None:
    from kubernetes import client

    assert os.environ["KUBECONFIG"] == kubeconfig == cluster.kubeconfig
    assert client.CoreV1Api(k8s_client).read_node(cluster.node_name).status.node_info.kubelet_version == cluster.version
    v = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert v["serverVersion"]["gitVersion"] == cluster.version
    assert v["clientVersion"]["gitVersion"] == cluster.version  # our own kubectl, not the machine's
    node = cluster.get("node", cluster.node_name)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert not node["spec"].get("taints")
    # admission chain: PodSecurity is on (a namespace label is enforced, see test_pod_security_restricted)
    # and RBAC is the authorizer: an unauthenticated request is refused
    p = cluster.kubectl("--as=system:anonymous", "get", "pods", "-A", check=False)
    assert p.returncode != 0 and "forbidden" in p.stderr.lower()


CRD_GROUP = "cp.test.terrasnap.io"


def widget_crd(plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": plural[:-1].capitalize(),
                      "listKind": plural[:-1].capitalize() + "List"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "min": {"type": "integer"},
                            "max": {"type": "integer"},
                        },
                        "x-kubernetes-validations": [
                            {"rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                             "message": "min must not exceed max"},
                        ],
                    }, "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }},
            }],
        },
    }


@pytest.fixture
def widget_kind(cluster: Cluster):
    plural = f"widgets{uuid.uuid4().hex[:6]}"
    crd = widget_crd(plural)
    cluster.apply(crd)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=30s")
    kind = crd["spec"]["names"]["kind"]
    # discovery may lag a moment behind Established
    wait_for(lambda: cluster.kubectl("get", f"{plural}.{CRD_GROUP}", "-A", check=False).returncode == 0, 30,
             what="CRD discovery")
    yield plural, kind
    cluster.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false", check=False)


def test_crd_schema_and_cel_rules_enforced_by_apiserver(cluster: Cluster, namespace: str, widget_kind) -> None:
    plural, kind = widget_kind
    api = f"{CRD_GROUP}/v1"
    ok = {"apiVersion": api, "kind": kind, "metadata": {"name": "good"}, "spec": {"size": 3, "min": 1, "max": 2}}
    cluster.apply(ok, namespace=namespace)
    assert cluster.get(f"{plural}.{CRD_GROUP}", "good", namespace=namespace)["spec"]["size"] == 3

    bad_schema = {"apiVersion": api, "kind": kind, "metadata": {"name": "bad-schema"}, "spec": {"size": "big"}}
    p = server_create(cluster, bad_schema, namespace)
    assert p.returncode != 0
    assert f'{kind} "bad-schema" is invalid' in p.stderr, p.stderr
    assert 'spec.size: Invalid value: "string": spec.size in body must be of type integer' in p.stderr, p.stderr

    too_small = {"apiVersion": api, "kind": kind, "metadata": {"name": "too-small"}, "spec": {"size": 0}}
    p = server_create(cluster, too_small, namespace)
    assert p.returncode != 0 and "should be greater than or equal to 1" in p.stderr, p.stderr

    bad_cel = {"apiVersion": api, "kind": kind, "metadata": {"name": "bad-cel"}, "spec": {"size": 1, "min": 5, "max": 2}}
    p = server_create(cluster, bad_cel, namespace)
    assert p.returncode != 0 and "min must not exceed max" in p.stderr, p.stderr

    names = {i["metadata"]["name"] for i in cluster.get(f"{plural}.{CRD_GROUP}", namespace=namespace)["items"]}
    assert names == {"good"}


def test_job_completes_with_termination_message(cluster: Cluster, namespace: str) -> None:
    code = """
        import json, os, sys
        print("hello from", os.environ["POD_NAME"], flush=True)
        with open("/dev/termination-log", "w") as f:
            json.dump({"answer": 42, "pod": os.environ["POD_NAME"]}, f)
    """
    j = job("answer", code)
    j["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    cluster.apply(j, namespace=namespace)
    wait_for(lambda: job_condition(cluster, namespace, "answer", "Complete"), 60, what="Job Complete")

    jo = cluster.get("job", "answer", "--show-managed-fields", namespace=namespace)
    assert jo["status"]["succeeded"] == 1
    # the Complete condition was written by the real Job controller, through the status subresource
    managers = {(m["manager"], m.get("subresource")) for m in jo["metadata"]["managedFields"]}
    assert ("kube-controller-manager", "status") in managers, managers

    (p,) = job_pods(cluster, namespace, "answer")
    assert p["status"]["phase"] == "Succeeded"
    t = terminated(p)
    assert t["exitCode"] == 0 and t["reason"] == "Completed"
    assert json.loads(t["message"]) == {"answer": 42, "pod": p["metadata"]["name"]}
    # kubectl logs goes apiserver -> the node's kubelet endpoint
    logs = cluster.kubectl("logs", "job/answer", namespace=namespace).stdout
    assert logs == f"hello from {p['metadata']['name']}\n"


def test_job_backoff_limit_fails_after_two_pods(cluster: Cluster, namespace: str) -> None:
    cluster.apply(job("fails", "import sys; print('failing'); sys.exit(3)", backoff=1), namespace=namespace)
    cond = wait_for(lambda: job_condition(cluster, namespace, "fails", "Failed"), 90, what="Job Failed")
    assert cond["reason"] == "BackoffLimitExceeded"
    pods = job_pods(cluster, namespace, "fails")
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["phase"] == "Failed"
        t = terminated(p)
        assert t["exitCode"] == 3 and t["reason"] == "Error"
    assert cluster.get("job", "fails", namespace=namespace)["status"]["failed"] == 2


def test_job_active_deadline_kills_sleeping_pod(cluster: Cluster, namespace: str) -> None:
    cluster.apply(job("sleepy", "import time; time.sleep(600)", deadline=8), namespace=namespace)
    p = wait_for(lambda: next((p for p in job_pods(cluster, namespace, "sleepy")
                               if p["status"].get("phase") == "Running"), None), 30, what="pod Running")
    pid = container_pid(p)
    assert not process_gone(pid)
    cond = wait_for(lambda: job_condition(cluster, namespace, "sleepy", "Failed"), 60, what="Job Failed")
    assert cond["reason"] == "DeadlineExceeded"
    # the Job controller deletes the pod; the node kills its process
    wait_for(lambda: process_gone(pid), 30, what=f"process {pid} killed")
    wait_for(lambda: not job_pods(cluster, namespace, "sleepy"), 30, what="pod removed")


def test_pod_active_deadline_seconds(cluster: Cluster, namespace: str) -> None:
    cluster.apply(pod("deadline", ["sleep", "600"], activeDeadlineSeconds=3), namespace=namespace)
    p = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Failed" else None)(
        cluster.get("pod", "deadline", namespace=namespace)), 30, what="pod Failed")
    assert p["status"]["reason"] == "DeadlineExceeded"
    assert process_gone(container_pid(p))


def test_pod_deletion_kills_process_group(cluster: Cluster, namespace: str) -> None:
    # a shell that starts a child: both must go when the pod is deleted
    cluster.apply(pod("victim", ["sh", "-c", "sleep 600 & wait"], terminationGracePeriodSeconds=5),
                  namespace=namespace)
    p = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Running" else None)(
        cluster.get("pod", "victim", namespace=namespace)), 30, what="pod Running")
    pid = container_pid(p)
    children = wait_for(lambda: psutil.Process(pid).children(recursive=True), 10, what="child process")
    cluster.kubectl("delete", "pod", "victim", "--timeout=30s", namespace=namespace)
    assert process_gone(pid)
    assert all(process_gone(c.pid) for c in children)


@pytest.fixture(scope="module")
def scheduled_cronjob(cluster: Cluster):
    """A CronJob created at the start of the module; test_cronjob_runs_on_schedule (last) checks on it."""
    ns = f"cron-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", namespace=ns, check=False).returncode == 0, 30)
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "every-minute"},
          "spec": {"schedule": "* * * * *", "timeZone": "Europe/Berlin", "successfulJobsHistoryLimit": 2,
                   "jobTemplate": {"spec": job("x", "print('tick')")["spec"]}}}
    cluster.apply(cj, namespace=ns)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module", autouse=True)
def _start_cronjob_early(scheduled_cronjob):
    return scheduled_cronjob


def test_cronjob_job_from_cronjob(cluster: Cluster, namespace: str) -> None:
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
          "spec": {"schedule": "0 3 * * *", "timeZone": "America/New_York",
                   "jobTemplate": {"spec": job("x", "print('manual run')")["spec"]}}}
    cluster.apply(cj, namespace=namespace)
    cluster.kubectl("create", "job", "--from=cronjob/nightly", "nightly-manual", namespace=namespace)
    wait_for(lambda: job_condition(cluster, namespace, "nightly-manual", "Complete"), 60, what="Job Complete")
    j = cluster.get("job", "nightly-manual", namespace=namespace)
    assert j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert j["metadata"]["ownerReferences"][0]["kind"] == "CronJob"


def test_serviceaccount_rbac(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", namespace=namespace)
    cluster.kubectl("create", "serviceaccount", "runner", namespace=namespace)
    cluster.kubectl("create", "role", "job-runner", "--verb=create,get,list", "--resource=jobs.batch",
                    namespace=namespace)
    cluster.kubectl("create", "rolebinding", "runner-jobs", "--role=job-runner",
                    f"--serviceaccount={namespace}:runner", namespace=namespace)

    def kubeconfig_for(sa: str) -> str:
        # a token signed by the apiserver's service-account key (TokenRequest), no client certificate
        token = cluster.kubectl("create", "token", sa, namespace=namespace).stdout.strip()
        ca = cluster.info["state"] + "/pki/ca.crt"
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "sa",
               "clusters": [{"name": "c", "cluster": {"server": cluster.server, "certificate-authority": ca}}],
               "users": [{"name": sa, "user": {"token": token}}],
               "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa, "namespace": namespace}}]}
        path = tmp_path / f"{sa}.kubeconfig"
        path.write_text(json.dumps(cfg))
        return str(path)

    manifest = json.dumps(job("rbac", "print('ok')"))
    kc = str(cluster.bin_dir / "kubectl")
    denied = subprocess.run([kc, "--kubeconfig", kubeconfig_for("nobody"), "create", "-f", "-"], input=manifest,
                            capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0
    assert (f'User "system:serviceaccount:{namespace}:nobody" cannot create resource "jobs" in API group "batch"'
            in denied.stderr), denied.stderr
    allowed = subprocess.run([kc, "--kubeconfig", kubeconfig_for("runner"), "create", "-f", "-"], input=manifest,
                             capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    assert cluster.get("job", "rbac", namespace=namespace)["metadata"]["name"] == "rbac"
    # the runner may not do what its Role does not grant
    p = subprocess.run([kc, "--kubeconfig", kubeconfig_for("runner"), "delete", "job", "rbac"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "forbidden" in p.stderr


def test_pod_uses_in_cluster_config_with_its_service_account(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", namespace=namespace)
    cluster.kubectl("create", "role", "cm-reader", "--verb=get", "--resource=configmaps", namespace=namespace)
    cluster.kubectl("create", "rolebinding", "reader", "--role=cm-reader", f"--serviceaccount={namespace}:reader",
                    namespace=namespace)
    cluster.kubectl("create", "configmap", "settings", "--from-literal=color=teal", namespace=namespace)
    code = f"""
        import json
        from kubernetes import client, config
        config.load_incluster_config()
        v1 = client.CoreV1Api()
        cm = v1.read_namespaced_config_map("settings", "{namespace}")
        try:
            v1.list_namespaced_secret("{namespace}")
            secrets = "allowed"
        except client.ApiException as e:
            secrets = e.status
        open("/dev/termination-log", "w").write(json.dumps({{"color": cm.data["color"], "secrets": secrets}}))
    """
    cluster.apply(job("incluster", code, serviceAccountName="reader"), namespace=namespace)
    wait_for(lambda: job_condition(cluster, namespace, "incluster", "Complete")
             or job_condition(cluster, namespace, "incluster", "Failed"), 60, what="Job finished")
    (p,) = job_pods(cluster, namespace, "incluster")
    assert json.loads(terminated(p)["message"]) == {"color": "teal", "secrets": 403}


def test_owner_references_garbage_collected(cluster: Cluster, namespace: str, widget_kind) -> None:
    plural, kind = widget_kind
    cluster.apply({"apiVersion": f"{CRD_GROUP}/v1", "kind": kind, "metadata": {"name": "parent"},
                   "spec": {"size": 1}}, namespace=namespace)
    parent = cluster.get(f"{plural}.{CRD_GROUP}", "parent", namespace=namespace)
    child = job("child", "import time; time.sleep(600)")
    child["metadata"]["ownerReferences"] = [{
        "apiVersion": f"{CRD_GROUP}/v1", "kind": kind, "name": "parent", "uid": parent["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}]
    cluster.apply(child, namespace=namespace)
    p = wait_for(lambda: next((p for p in job_pods(cluster, namespace, "child")
                               if p["status"].get("phase") == "Running"), None), 30, what="child pod Running")
    pid = container_pid(p)
    cluster.kubectl("delete", f"{plural}.{CRD_GROUP}", "parent", "--wait=false", namespace=namespace)
    wait_for(lambda: not_found(cluster, "job", "child", namespace=namespace), 60, what="Job garbage-collected")
    wait_for(lambda: not job_pods(cluster, namespace, "child"), 60, what="pods garbage-collected")
    wait_for(lambda: process_gone(pid), 30, what="child process killed")


def test_volumes_env_and_workdir_inside_the_process(cluster: Cluster, namespace: str) -> None:
    secret_value = uuid.uuid4().hex
    cluster.kubectl("create", "secret", "generic", "creds", f"--from-literal=token={secret_value}",
                    namespace=namespace)
    cluster.kubectl("create", "configmap", "conf", "--from-literal=mode=strict", "--from-literal=level=3",
                    namespace=namespace)
    mount_root = f"/etc/terrasnap-test-{uuid.uuid4().hex[:6]}"  # does not exist on the host
    code = f"""
        import json, os
        r = {{}}
        r["secret_file"] = open("{mount_root}/secret/token").read()
        r["secret_env"] = os.environ["TOKEN"]
        r["config_file"] = open("{mount_root}/config/mode").read()
        r["config_env"] = os.environ["LEVEL"]
        r["pod"] = os.environ["MY_POD"] + "/" + os.environ["MY_NS"]
        r["cwd"] = os.getcwd()
        r["expanded"] = os.environ["GREETING"]
        with open("/scratch/out.txt", "w") as f:
            f.write("scratch works")
        r["scratch"] = open("/scratch/out.txt").read()
        r["mounts"] = [l.split()[4] for l in open("/proc/self/mountinfo")
                       if l.split()[4] in ("{mount_root}/secret", "{mount_root}/config", "/scratch")]
        try:
            open("{mount_root}/secret/new", "w")
            r["secret_ro"] = False
        except OSError as e:
            r["secret_ro"] = e.errno
        open("/dev/termination-log", "w").write(json.dumps(r))
    """
    p = pod("vols", [], volumes=[
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "conf", "configMap": {"name": "conf"}},
        {"name": "scratch", "emptyDir": {}},
    ], containers=[{
        "name": "main", "image": "terrasnap-worker:test", "command": [PY, "-c", textwrap.dedent(code)],
        "workingDir": "/scratch/work",
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "level"}}},
            {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "GREETING", "value": "level=$(LEVEL)"},
        ],
        "volumeMounts": [
            {"name": "creds", "mountPath": f"{mount_root}/secret"},
            {"name": "conf", "mountPath": f"{mount_root}/config"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }])
    cluster.apply(p, namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "vols") in ("Succeeded", "Failed"), 60, what="pod finished")
    po = cluster.get("pod", "vols", namespace=namespace)
    t = terminated(po)
    assert t["exitCode"] == 0, (t, cluster.kubectl("logs", "vols", namespace=namespace, check=False).stdout)
    r = json.loads(t["message"])
    assert r == {
        "secret_file": secret_value, "secret_env": secret_value, "config_file": "strict", "config_env": "3",
        "pod": f"vols/{namespace}", "cwd": "/scratch/work", "expanded": "level=3", "scratch": "scratch works",
        "mounts": [f"{mount_root}/secret", f"{mount_root}/config", "/scratch"], "secret_ro": 30,  # EROFS
    }
    # the mounts lived in the pod's private mount namespace only; the host is untouched
    assert not Path(mount_root).exists()
    assert not Path("/scratch").exists()


def test_persistent_volume_claim_shared_between_pods(cluster: Cluster, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
                  namespace=namespace)
    pvc = wait_for(lambda: (lambda c: c if c["status"].get("phase") == "Bound" else None)(
        cluster.get("pvc", "data", namespace=namespace)), 30, what="PVC Bound")
    assert pvc["spec"]["storageClassName"] == "standard"  # the DefaultStorageClass admission plugin
    vol = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mnt = [{"name": "data", "mountPath": "/data"}]
    writer = pod("writer", [], volumes=vol, containers=[{
        "name": "main", "image": "x", "command": ["sh", "-c", "echo persisted > /data/f"], "volumeMounts": mnt}])
    cluster.apply(writer, namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "writer") == "Succeeded", 30, what="writer Succeeded")
    reader = pod("reader", [], volumes=vol, containers=[{
        "name": "main", "image": "x", "command": ["sh", "-c", "cat /data/f > /dev/termination-log"],
        "volumeMounts": mnt}])
    cluster.apply(reader, namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "reader") == "Succeeded", 30, what="reader Succeeded")
    assert terminated(cluster.get("pod", "reader", namespace=namespace))["message"] == "persisted\n"


def test_host_path_reaches_the_host_and_the_container_layer_does_not(cluster: Cluster, namespace: str,
                                                                    tmp_path: Path) -> None:
    host_dir = tmp_path / "exchange"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from the host")
    stray = Path("/tmp") / f"terrasnap-stray-{uuid.uuid4().hex[:8]}"
    cmd = (f"cat /exchange/in.txt > /exchange/out.txt && echo ' and back' >> /exchange/out.txt && "
           f"echo lost > {stray}")
    cluster.apply(pod("hostpath", [], volumes=[{"name": "x", "hostPath": {"path": str(host_dir), "type": "Directory"}}],
                      containers=[{"name": "main", "image": "x", "command": ["sh", "-c", cmd],
                                   "volumeMounts": [{"name": "x", "mountPath": "/exchange"}]}]),
                  namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "hostpath") in ("Succeeded", "Failed"), 30, what="pod finished")
    assert pod_phase(cluster, namespace, "hostpath") == "Succeeded"
    assert (host_dir / "out.txt").read_text() == "from the host and back\n"
    # outside its volumes a container writes to its own layer, which the host never sees
    assert not stray.exists()


def test_init_container_and_restart_on_failure(cluster: Cluster, namespace: str) -> None:
    p = pod("init", [], restartPolicy="OnFailure", volumes=[{"name": "w", "emptyDir": {}}],
            initContainers=[{"name": "prep", "image": "x", "command": ["sh", "-c", "echo prepared > /w/state"],
                             "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
            containers=[{"name": "main", "image": "x", "volumeMounts": [{"name": "w", "mountPath": "/w"}],
                         # fails on its first run, succeeds on the restart
                         "command": ["sh", "-c", "if [ -f /w/ran ]; then echo second run; "
                                                 "cat /w/state > /dev/termination-log; "
                                                 "else echo first run; touch /w/ran; exit 1; fi"]}])
    cluster.apply(p, namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "init") == "Succeeded", 60, what="pod Succeeded")
    po = cluster.get("pod", "init", namespace=namespace)
    st = po["status"]["containerStatuses"][0]
    assert st["restartCount"] == 1
    assert st["lastState"]["terminated"]["exitCode"] == 1
    assert st["state"]["terminated"]["message"] == "prepared\n"
    assert po["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # logs of the current and the previous run, through the kubelet endpoint
    assert cluster.kubectl("logs", "init", "-c", "main", namespace=namespace).stdout == "second run\n"
    assert cluster.kubectl("logs", "init", "-c", "main", "-p", namespace=namespace).stdout == "first run\n"


def test_ttl_after_finished_removes_job_and_pods(cluster: Cluster, namespace: str) -> None:
    j = job("short-lived", "print('bye')")
    j["spec"]["ttlSecondsAfterFinished"] = 1
    cluster.apply(j, namespace=namespace)
    uid = cluster.get("job", "short-lived", namespace=namespace)["metadata"]["uid"]
    wait_for(lambda: not_found(cluster, "job", "short-lived", namespace=namespace), 60,
             what="Job deleted by the ttl-after-finished controller")
    wait_for(lambda: not cluster.get("pods", "-l", f"batch.kubernetes.io/controller-uid={uid}",
                                     namespace=namespace)["items"], 60, what="pods garbage-collected")


def test_namespace_deletion_stops_running_pods(cluster: Cluster) -> None:
    ns = f"doomed-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", namespace=ns, check=False).returncode == 0, 30)
    cluster.apply(pod("runner", ["sleep", "600"], terminationGracePeriodSeconds=3), namespace=ns)
    p = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Running" else None)(
        cluster.get("pod", "runner", namespace=ns)), 30, what="pod Running")
    pid = container_pid(p)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(lambda: not_found(cluster, "namespace", ns), 90, what="namespace finalized by the namespace controller")
    assert process_gone(pid)


def test_pod_security_restricted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    root = pod("root", ["id", "-u"])
    p = cluster.apply(root, namespace=namespace, check=False)
    assert p.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in p.stderr, p.stderr
    assert "runAsNonRoot != true" in p.stderr

    code = """
        import json, os, terrasnap, kubernetes
        open("/dev/termination-log", "w").write(json.dumps(
            {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()), "home_ok": True}))
    """
    ok = pod("compliant", [PY, "-c", textwrap.dedent(code)], securityContext={
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"}})
    ok["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
    cluster.apply(ok, namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "compliant") in ("Succeeded", "Failed"), 60, what="pod finished")
    po = cluster.get("pod", "compliant", namespace=namespace)
    t = terminated(po)
    assert t["exitCode"] == 0, cluster.kubectl("logs", "compliant", namespace=namespace, check=False).stdout
    assert json.loads(t["message"]) == {"uid": 1000, "gid": 3000, "groups": [2000], "home_ok": True}


def test_cordon_and_node_name(cluster: Cluster, namespace: str) -> None:
    # a pod for another node is never run here
    cluster.apply(pod("elsewhere", ["true"], nodeName="some-other-node"), namespace=namespace)
    cluster.kubectl("cordon", cluster.node_name)
    try:
        cluster.apply(pod("waits", ["true"]), namespace=namespace)
        time.sleep(3)
        w = cluster.get("pod", "waits", namespace=namespace)
        assert not w["spec"].get("nodeName") and w["status"]["phase"] == "Pending"
    finally:
        cluster.kubectl("uncordon", cluster.node_name)
    wait_for(lambda: pod_phase(cluster, namespace, "waits") == "Succeeded", 30, what="pod runs after uncordon")
    e = cluster.get("pod", "elsewhere", namespace=namespace)
    assert e["status"].get("phase") == "Pending" and not e["status"].get("containerStatuses")


def test_pod_waits_for_a_missing_secret(cluster: Cluster, namespace: str) -> None:
    p = pod("patient", [], containers=[{
        "name": "main", "image": "x", "command": ["sh", "-c", 'printf %s "$PASSWORD" > /dev/termination-log'],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "late", "key": "password"}}}]}])
    cluster.apply(p, namespace=namespace)

    def waiting_reason():
        st = cluster.get("pod", "patient", namespace=namespace)["status"].get("containerStatuses") or [{}]
        return st[0].get("state", {}).get("waiting", {}).get("reason")

    assert wait_for(lambda: waiting_reason() == "CreateContainerConfigError", 30, what="config error")
    assert pod_phase(cluster, namespace, "patient") == "Pending"
    cluster.kubectl("create", "secret", "generic", "late", "--from-literal=password=s3cret", namespace=namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "patient") == "Succeeded", 30, what="pod Succeeded")
    assert terminated(cluster.get("pod", "patient", namespace=namespace))["message"] == "s3cret"


def test_cronjob_runs_on_schedule(cluster: Cluster, scheduled_cronjob: str) -> None:
    """Last in the module: the CronJob was created when the module started."""
    ns = scheduled_cronjob

    def scheduled_job_complete():
        jobs = cluster.get("jobs", namespace=ns)["items"]
        return [j for j in jobs if j["metadata"].get("ownerReferences", [{}])[0].get("name") == "every-minute"
                and any(c["type"] == "Complete" and c["status"] == "True"
                        for c in j["status"].get("conditions") or [])]

    done = wait_for(scheduled_job_complete, 100, interval=1, what="a scheduled Job to complete")
    assert "cronjob.kubernetes.io/instantiate" not in (done[0]["metadata"].get("annotations") or {})
    cj = cluster.get("cronjob", "every-minute", namespace=ns)
    assert cj["status"].get("lastScheduleTime")
