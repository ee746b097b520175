"""The Helm chart without a cluster: lint, rendering with default and non-default values, RBAC and security."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.chart import helmtool as h

pytestmark = pytest.mark.helm

REPO = h.REPO
SYSTEM = "terrasnap-system"

# What the operator does (operator/terrasnap/controller/handlers.py) — the chart must grant exactly this.
OPERATOR_CLUSTER_RULES = {
    ("terrasnap.io", "datasetsnapshots"): {"get", "list", "watch", "patch"},
    ("terrasnap.io", "snapshotstores"): {"get", "list", "watch", "patch"},
    ("terrasnap.io", "datasetsnapshots/status"): {"patch"},
    ("terrasnap.io", "snapshotstores/status"): {"patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "pods"): {"list"},
    ("", "serviceaccounts"): {"create"},
    ("", "events"): {"create"},
    ("", "namespaces"): {"get", "list", "watch"},  # labels, for SnapshotStores' allowedNamespaces
}
GC_CLUSTER_RULES = {
    ("terrasnap.io", "datasetsnapshots"): {"list"},
    ("terrasnap.io", "snapshotstores"): {"get"},
    ("terrasnap.io", "snapshotstores/status"): {"patch"},
}


def grants(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) → verbs, for rules without resourceNames."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        if rule.get("resourceNames"):
            continue
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def all_rules(objs: list[dict]) -> list[dict]:
    return [r for o in objs if o["kind"] in ("Role", "ClusterRole") for r in o.get("rules", [])]


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return h.template()


# --- one source for the CRDs ----------------------------------------------------------------------------


def test_chart_crds_are_byte_equal_copies_of_crds_folder():
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (h.CHART / "crds").glob("terrasnap.io_*.yaml")}
    assert source, "no CRDs in crds/"
    assert chart.keys() == source.keys(), "run: bash charts/sync-crds.sh"
    for name, data in source.items():
        assert chart[name] == data, f"charts/terrasnap/crds/{name} differs from crds/{name}: run bash charts/sync-crds.sh"


def test_rendered_crds_come_from_the_chart_crds_folder():
    objs = h.template(include_crds=True)
    names = {o["metadata"]["name"] for o in h.by_kind(objs, "CustomResourceDefinition")}
    assert names == {"datasetsnapshots.terrasnap.io", "snapshotstores.terrasnap.io", "clusterkopfpeerings.kopf.dev"}
    assert not h.by_kind(h.template(), "CustomResourceDefinition"), "CRDs belong in crds/, not templates/"


# --- lint -----------------------------------------------------------------------------------------------


def test_helm_lint_strict():
    out = h.run("lint", "--strict", str(h.CHART), "--namespace", SYSTEM)
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_helm_lint_strict_non_default_values():
    h.run("lint", "--strict", str(h.CHART), "--namespace", SYSTEM, *h.values_args(NON_DEFAULT))


# --- the operator workload ------------------------------------------------------------------------------


def _restricted(pod_spec: dict) -> None:
    """Pod Security Standards `restricted`, plus a read-only root filesystem."""
    psc = pod_spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")
    for c in pod_spec["containers"] + pod_spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc.get("privileged") is not True
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    for v in pod_spec.get("volumes", []):
        assert "hostPath" not in v


def test_default_render_operator_deployment(default):
    dep = h.one(default, "Deployment", "terrasnap")
    assert not h.by_kind(default, "StatefulSet")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    _restricted(pod)
    assert pod["serviceAccountName"] == "terrasnap"
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/terrasnap/operator:0.1.0"
    assert c["args"][0] == "operator"
    assert "--liveness=http://0.0.0.0:8081/healthz" in c["args"]
    assert not any(a.startswith("--peering") for a in c["args"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    env = {e["name"]: e for e in c["env"]}
    assert env["TERRASNAP_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["TERRASNAP_WORKER_IMAGE"]["value"] == "ghcr.io/terrasnap/worker:0.1.0"
    assert env["TERRASNAP_WORKER_SERVICE_ACCOUNT"]["value"] == "terrasnap-worker"
    assert env["TERRASNAP_GC_SERVICE_ACCOUNT"]["value"] == "terrasnap-gc"
    # the worker image only, and no insecure git sources: the chart never sets the development flag
    assert "TERRASNAP_ALLOWED_IMAGES" not in env and "TERRASNAP_ALLOW_INSECURE_SOURCES" not in env
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}


def test_env_names_match_the_operator_config():
    """Every TERRASNAP_* variable the chart sets is one the operator reads."""
    import inspect

    from terrasnap.api import config
    from terrasnap.controller import handlers, run

    known = "".join(inspect.getsource(m) for m in (config, handlers, run))
    dep = h.one(h.template({"operator": {"workers": 4}, "worker": {"allowedImages": ["a:*"]}}), "Deployment")
    for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
        if e["name"].startswith("TERRASNAP_"):
            assert f'"{e["name"]}"' in known, f"{e['name']} is not read by the operator"


def test_default_render_service_accounts_and_no_example_store(default):
    sas = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in h.by_kind(default, "ServiceAccount")}
    assert sas == {(SYSTEM, "terrasnap"), (SYSTEM, "terrasnap-gc")}
    assert not h.by_kind(default, "SnapshotStore")
    assert not h.by_kind(default, "ServiceMonitor")
    assert not h.by_kind(default, "ClusterKopfPeering")
    svc = h.one(default, "Service", "terrasnap-metrics")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


# --- RBAC -----------------------------------------------------------------------------------------------


def test_no_wildcards_anywhere(default):
    for values in (None, NON_DEFAULT, {"replicaCount": 3}):
        for rule in all_rules(h.template(values)):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), rule
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_operator_cluster_role_is_exactly_what_the_operator_uses(default):
    role = h.one(default, "ClusterRole", "terrasnap-operator")
    assert grants(role["rules"]) == OPERATOR_CLUSTER_RULES
    binding = h.one(default, "ClusterRoleBinding", "terrasnap-operator")
    assert binding["roleRef"]["name"] == "terrasnap-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "terrasnap", "namespace": SYSTEM}]


def test_no_cluster_wide_secret_writes_unless_stores_share_credentials(default):
    """Snapshot pods get no copy of a store's key by default, so the operator needs no Secret writes outside
    its namespace; rbac.credentialCopies (for credentials.shareWithNamespaces) adds exactly create/delete."""
    cluster_roles = [o for o in default if o["kind"] == "ClusterRole"]
    assert not [r for o in cluster_roles for r in o["rules"] if "secrets" in r["resources"]]
    role = h.one(default, "Role", "terrasnap-operator")
    assert {"create", "delete"} <= grants(role["rules"])[("", "secrets")]
    sharing = h.one(h.template({"rbac": {"credentialCopies": True}}), "ClusterRole", "terrasnap-operator")
    assert grants(sharing["rules"]) == {**OPERATOR_CLUSTER_RULES, ("", "secrets"): {"create", "delete"}}


def test_operator_reads_secrets_only_in_its_namespace_by_default(default):
    secret_reads = [
        (o["kind"], o["metadata"].get("namespace"), r)
        for o in default if o["kind"] in ("Role", "ClusterRole")
        for r in o["rules"] if "secrets" in r["resources"] and {"get", "list", "watch"} & set(r["verbs"])
    ]
    assert secret_reads == [("Role", SYSTEM, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})]
    role = h.one(default, "Role", "terrasnap-operator")
    assert grants(role["rules"])[("batch", "cronjobs")] == {"get", "create", "patch"}


def test_store_secrets_narrow_secret_reads_to_named_secrets():
    objs = h.template({"rbac": {"storeSecrets": [{"name": "gcs-sa"}, {"name": "s3-key", "namespace": "vault"},
                                                 {"name": "other", "namespace": "vault"}]}})
    reads = {
        (o["metadata"]["namespace"], tuple(r.get("resourceNames", ["<all>"])))
        for o in objs if o["kind"] in ("Role", "ClusterRole")
        for r in o["rules"] if "secrets" in r["resources"] and "get" in r["verbs"]
    }
    assert reads == {(SYSTEM, ("gcs-sa",)), ("vault", ("s3-key", "other"))}
    binding = h.one(objs, "RoleBinding", "terrasnap-store-secrets")
    assert binding["metadata"]["namespace"] == "vault"
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "terrasnap", "namespace": SYSTEM}


def test_gc_service_account_can_only_list_snapshots_and_patch_store_status(default):
    role = h.one(default, "ClusterRole", "terrasnap-gc")
    assert grants(role["rules"]) == GC_CLUSTER_RULES
    events = h.one(default, "Role", "terrasnap-gc-events")
    assert events["metadata"]["namespace"] == "default"
    assert events["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    bound = [b for b in default if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
             and any(s["name"] == "terrasnap-gc" for s in b["subjects"])]
    assert {b["roleRef"]["name"] for b in bound} == {"terrasnap-gc", "terrasnap-gc-events"}


def test_worker_service_account_has_no_rights():
    objs = h.template({"worker": {"namespaces": ["ml-data", "team-b"],
                                  "serviceAccountAnnotations": {"iam.gke.io/gcp-service-account": "w@p.iam"}}})
    workers = [o for o in h.by_kind(objs, "ServiceAccount") if o["metadata"]["name"] == "terrasnap-worker"]
    assert {o["metadata"]["namespace"] for o in workers} == {"ml-data", "team-b"}
    for sa in workers:
        assert sa["automountServiceAccountToken"] is False
        assert sa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "w@p.iam"}
    for b in objs:
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert all(s["name"] != "terrasnap-worker" for s in b["subjects"]), b["metadata"]["name"]


def test_rbac_off_renders_no_roles():
    objs = h.template({"rbac": {"create": False}})
    assert not [o for o in objs if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


# --- non-default values ---------------------------------------------------------------------------------

NON_DEFAULT = {
    "image": {"repository": "registry.example/terrasnap/operator", "tag": "", "digest": "sha256:" + "a" * 64,
              "pullPolicy": "Always"},
    "worker": {"image": {"repository": "registry.example/terrasnap/worker", "tag": "0.2.0"},
               "ttlSecondsAfterFinished": 600, "backoffLimit": 1, "activeDeadlineSeconds": 7200,
               "allowedImages": ["registry.example/geo/*@sha256:*", "registry.example/ml/worker:1"]},
    "fullnameOverride": "geo",
    "operator": {"verbose": True, "workers": 8},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "exampleStore": {"enabled": True, "name": "main", "url": "gs://acme-geo/dvc",
                     "credentialsSecret": {"name": "gcs-sa"}},
    "runAsUser": 10001,
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "podAnnotations": {"a": "b"},
}


def test_non_default_values():
    objs = h.template(NON_DEFAULT)
    dep = h.one(objs, "Deployment", "geo")
    pod = dep["spec"]["template"]["spec"]
    _restricted(pod)
    c = pod["containers"][0]
    assert c["image"] == "registry.example/terrasnap/operator@sha256:" + "a" * 64
    assert c["imagePullPolicy"] == "Always"
    assert "--verbose" in c["args"]
    assert pod["securityContext"]["runAsUser"] == 10001 and c["securityContext"]["runAsUser"] == 10001
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TERRASNAP_WORKER_IMAGE"] == "registry.example/terrasnap/worker:0.2.0"
    assert env["TERRASNAP_JOB_TTL_SECONDS"] == "600"
    assert env["TERRASNAP_JOB_BACKOFF_LIMIT"] == "1"
    assert env["TERRASNAP_WORKERS"] == "8"
    assert env["TERRASNAP_ALLOWED_IMAGES"] == "registry.example/geo/*@sha256:*,registry.example/ml/worker:1"
    assert env["TERRASNAP_GC_SERVICE_ACCOUNT"] == "geo-gc"
    assert c["resources"]["requests"]["cpu"] == "250m"
    sm = h.one(objs, "ServiceMonitor", "geo")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    store = h.one(objs, "SnapshotStore", "main")
    assert store["spec"]["credentials"]["secretRef"] == {"namespace": SYSTEM, "name": "gcs-sa", "key": "key.json"}
    assert store["spec"]["gc"]["keep"] == {"last": 5, "within": "90d"}


def test_more_replicas_run_a_kopf_peering_with_distinct_priorities():
    objs = h.template({"replicaCount": 3})
    assert not h.by_kind(objs, "Deployment")
    sts = h.one(objs, "StatefulSet", "terrasnap")
    assert sts["spec"]["replicas"] == 3
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=terrasnap" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    # the pod index (0, 1, 2) is the priority: distinct per replica
    assert env["TERRASNAP_PRIORITY"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']")
    assert h.one(objs, "ClusterKopfPeering", "terrasnap")
    rules = h.one(objs, "ClusterRole", "terrasnap-operator")["rules"]
    peering = [r for r in rules if r["apiGroups"] == ["kopf.dev"]]
    assert {v for r in peering for v in r["verbs"]} == {"get", "list", "watch", "patch"}
    assert sts["spec"]["serviceName"] == h.one(objs, "Service")["metadata"]["name"]
    pdb = h.one(objs, "PodDisruptionBudget", "terrasnap")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert not h.by_kind(h.template(), "PodDisruptionBudget")


def test_more_replicas_need_the_whole_cluster():
    p = h.run("template", "t", str(h.CHART), *h.values_args({"replicaCount": 2, "watchNamespaces": ["a"]}),
              check=False)
    assert p.returncode != 0 and "replicaCount > 1 needs the whole cluster" in p.stderr, p.stderr


@pytest.mark.parametrize("values, complaint", [
    ({"replicas": 2}, "replicas"),                                   # typo of replicaCount
    ({"image": {"repository": "x", "tga": "1"}}, "tga"),
    ({"worker": {"serviceAccount": "x"}}, "serviceAccount"),
    ({"rbac": {"storeSecret": []}}, "storeSecret"),
    ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
    ({"exampleStore": {"url": "http://bucket"}}, "url"),
    ({"runAsUser": 0}, "runAsUser"),
    ({"image": {"repository": "x", "digest": "latest"}}, "digest"),
])
def test_schema_rejects_typos_and_bad_values(values, complaint):
    p = h.run("template", "t", str(h.CHART), *h.values_args(values), check=False)
    assert p.returncode != 0, f"accepted {values}"
    assert "values don't meet the specifications of the schema" in p.stderr, p.stderr
    assert complaint in p.stderr, p.stderr


def test_schema_is_valid_json_and_closed_at_the_top():
    schema = json.loads((h.CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((h.CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


def test_chart_packages():
    out = Path(h.REPO / ".pytest_cache" / "helm-package")
    out.mkdir(parents=True, exist_ok=True)
    h.run("package", str(h.CHART), "--destination", str(out))
    import tarfile

    with tarfile.open(out / "terrasnap-0.1.0.tgz") as tgz:
        for crd in (REPO / "crds").glob("*.yaml"):  # the packaged chart carries the CRDs' exact bytes
            member = tgz.extractfile(f"terrasnap/crds/{crd.name}")
            assert member is not None and member.read() == crd.read_bytes(), crd.name
