"""planner: DatasetSnapshot → Job, names, credentials, Pod Security `restricted`."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from terrasnap.api.config import OperatorConfig
from terrasnap.api.models import SpecError, StoreSpec
from terrasnap.planner import names
from terrasnap.planner.job import plan_job
from terrasnap.planner.patch import merge_diff

CONFIG = OperatorConfig(
    namespace="terrasnap-system", worker_image="worker:1", worker_service_account="worker",
    allowed_images=("custom:*",),
)


def snapshot(name: str = "buildings", generation: int = 3, **spec_over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "store": "main",
        "source": {"git": {"url": "https://git.example/r.git", "revision": "main", "path": "data"}},
        "validation": {"targetCRS": "EPSG:3857", "invalidGeometry": "repair", "missingCRS": "reject"},
    }
    spec.update(spec_over)
    return {
        "apiVersion": "terrasnap.io/v1alpha1",
        "kind": "DatasetSnapshot",
        "metadata": {"name": name, "namespace": "ml-data", "uid": "uid-1", "generation": generation},
        "spec": spec,
    }


STORE = StoreSpec.from_dict({"url": "gs://acme/dvc", "endpoint": "http://127.0.0.1:4443"})


def test_job_name_is_deterministic_bounded_and_changes_with_generation_spec_and_uid() -> None:
    a = plan_job(snapshot(), "main", STORE, CONFIG)
    assert a.name == plan_job(snapshot(), "main", STORE, CONFIG).name
    assert a.name.startswith("buildings-3-") and len(a.name.split("-")[-1]) == names.HASH_LENGTH
    assert plan_job(snapshot(generation=4), "main", STORE, CONFIG).name != a.name
    other = snapshot()
    other["spec"]["source"]["git"]["revision"] = "v2"
    assert plan_job(other, "main", STORE, CONFIG).name != a.name
    recreated = snapshot()
    recreated["metadata"]["uid"] = "uid-2"
    assert plan_job(recreated, "main", STORE, CONFIG).name != a.name
    long = plan_job(snapshot(name="x" * 61 + ".y", generation=123456), "main", STORE, CONFIG)
    assert len(long.name) <= 63 and long.name.endswith("-123456-" + long.spec_hash)
    assert long.name[0].isalnum() and "." not in long.name


def test_job_labels_owner_and_command() -> None:
    plan = plan_job(snapshot(), "main", STORE, CONFIG)
    job = plan.manifest
    meta = job["metadata"]
    assert meta["namespace"] == "ml-data"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "terrasnap"
    assert meta["labels"]["terrasnap.io/snapshot"] == "buildings"
    assert meta["labels"]["terrasnap.io/generation"] == "3"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot", "name": "buildings",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["terrasnap"]
    fetch = job["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["args"][:3] == ["source", "fetch", "git+https://git.example/r.git@main#subdirectory=data"]
    assert container["args"] == [
        "snapshot", "--prepared", "/var/run/terrasnap/state/source.json",
        "--private", "/var/run/terrasnap/private",
        "--store", "gs://acme/dvc", "--endpoint", "http://127.0.0.1:4443",
        "--name", "buildings", "--namespace", "ml-data",
        "--target-crs", "EPSG:3857", "--invalid-geometry", "repair", "--missing-crs", "reject",
        "--result-file", "/dev/termination-log", "--workdir", "/workspace",
    ]  # fmt: skip
    assert container["terminationMessagePolicy"] == "File"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TERRASNAP_STORE_ENDPOINT"] == "http://127.0.0.1:4443"
    assert env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    assert container["image"] == "worker:1"
    assert (
        plan_job(snapshot(image="custom:2"), "main", STORE, CONFIG).manifest["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == "custom:2"
    )


def test_restricted_pod_security() -> None:
    pod = plan_job(snapshot(), "main", STORE, CONFIG).manifest["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "worker"
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/workspace"]]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/workspace"  # the only writable place
    allowed = {"emptyDir", "secret", "persistentVolumeClaim", "configMap", "projected", "downwardAPI", "name"}
    for volume in pod["volumes"]:
        assert set(volume) <= allowed  # restricted allows only these volume types


def test_job_limits_and_failure_policy() -> None:
    job = plan_job(snapshot(), "main", STORE, CONFIG).manifest["spec"]
    assert job["backoffLimit"] == CONFIG.backoff_limit
    assert job["activeDeadlineSeconds"] == CONFIG.active_deadline_seconds
    assert job["ttlSecondsAfterFinished"] == CONFIG.job_ttl_seconds
    rules = job["podFailurePolicy"]["rules"]
    by_action = {r["action"]: r for r in rules}
    assert by_action["FailJob"]["onExitCodes"]["values"] == [1, 2]
    assert by_action["Count"]["onExitCodes"]["values"] == [3]
    assert by_action["Ignore"]["onPodConditions"][0]["type"] == "DisruptionTarget"
    custom = plan_job(snapshot(backoffLimit=0, activeDeadlineSeconds=60), "main", STORE, CONFIG)
    assert custom.manifest["spec"]["backoffLimit"] == 0
    assert custom.manifest["spec"]["activeDeadlineSeconds"] == 60


@pytest.mark.parametrize("source", [
    {"git": {"url": "https://git.example/r.git", "revision": "main"}},
    {"bucket": {"url": "gs://raw/tiles/"}},
    {"volume": {"claimName": "annotations", "path": "/tiles"}},
])  # fmt: skip
def test_the_failure_policy_names_only_the_pods_containers(source: dict[str, Any]) -> None:
    """The API server refuses a rule for a container the pod lacks (a bucket source has no pipeline step)."""
    job = plan_job(snapshot(source=source), "main", STORE, CONFIG).manifest["spec"]
    pod = job["template"]["spec"]
    names_ = {c["name"] for c in pod["initContainers"] + pod["containers"]}
    named = {r["onExitCodes"]["containerName"] for r in job["podFailurePolicy"]["rules"] if "onExitCodes" in r}
    assert named == names_
    assert ("pipeline" in names_) == ("bucket" not in source)


def test_spec_image_must_be_allowed_by_the_operator() -> None:
    assert plan_job(snapshot(image="worker:1"), "main", STORE, CONFIG)  # the worker image itself
    with pytest.raises(SpecError, match="not allowed by the operator") as refused:
        plan_job(snapshot(image="evil.example/miner:latest"), "main", STORE, CONFIG)
    assert refused.value.reason == "ImageNotAllowed"
    allowing = dataclasses.replace(CONFIG, allowed_images=("registry.example/geo/*",))
    pod = plan_job(snapshot(image="registry.example/geo/w:2"), "main", STORE, allowing).manifest["spec"]["template"]
    assert {c["image"] for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]} == {"registry.example/geo/w:2"}


@pytest.mark.parametrize("url", ["file:///etc", "http://git.example/r.git"])
def test_insecure_git_urls_need_the_development_flag(url: str) -> None:
    source = {"git": {"url": url, "revision": "main"}}
    with pytest.raises(SpecError, match="TERRASNAP_ALLOW_INSECURE_SOURCES") as refused:
        plan_job(snapshot(source=source), "main", STORE, CONFIG)
    assert refused.value.reason == "InsecureSource"
    assert plan_job(snapshot(source=source), "main", STORE, dataclasses.replace(CONFIG, allow_insecure_sources=True))


def test_resources_default_and_override() -> None:
    default = plan_job(snapshot(), "main", STORE, CONFIG).manifest
    res = default["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
    big = plan_job(snapshot(resources={"requests": {"memory": "8Gi"}}), "main", STORE, CONFIG).manifest
    res = big["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "500m", "memory": "8Gi"}}  # no default limit below the request
    both = plan_job(
        snapshot(resources={"requests": {"cpu": 2}, "limits": {"cpu": 4}}), "main", STORE, CONFIG
    ).manifest["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert both == {"requests": {"cpu": 2, "memory": "1Gi"}, "limits": {"memory": "4Gi", "cpu": 4}}


def test_git_token_comes_from_a_secret_ref_never_a_value() -> None:
    snap = snapshot()
    snap["spec"]["source"]["git"]["credentialsSecret"] = {"name": "git-token", "key": "token"}
    container = plan_job(snap, "main", STORE, CONFIG).manifest["spec"]["template"]["spec"]["initContainers"][0]
    (token,) = [e for e in container["env"] if e["name"] == "TERRASNAP_GIT_TOKEN"]
    assert token == {
        "name": "TERRASNAP_GIT_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "git-token", "key": "token"}},
    }


SHARING = {"url": "gs://acme/dvc", "credentials": {"secretRef": {"name": "gcs-sa"}, "shareWithNamespaces": True},
           "allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "geo"}}}}


def test_the_gc_key_never_reaches_a_snapshot_pod_unless_the_store_shares_it() -> None:
    store = StoreSpec.from_dict({"url": "gs://acme/dvc", "credentials": {"secretRef": {"name": "gcs-sa"}}})
    plan = plan_job(snapshot(), "main", store, CONFIG)
    pod = plan.manifest["spec"]["template"]["spec"]
    assert plan.secret_copy is None and not [v for v in pod["volumes"] if "secret" in v]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in {e["name"] for c in pod["containers"] for e in c["env"]}


@pytest.mark.parametrize("spec", [
    {**SHARING, "allowedNamespaces": {"from": "All"}},
    {**SHARING, "allowedNamespaces": {}},
    {**SHARING, "credentials": {"shareWithNamespaces": True}},
    {**SHARING, "credentials": {**SHARING["credentials"], "snapshotSecretRef": {"name": "x"}}},
])  # fmt: skip
def test_sharing_the_key_needs_a_selector(spec: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="shareWithNamespaces"):
        StoreSpec.from_dict(spec)


def test_store_credentials_copied_when_the_store_shares_them() -> None:
    plan = plan_job(snapshot(), "main", StoreSpec.from_dict(SHARING), CONFIG)
    assert plan.secret_copy is not None
    assert plan.secret_copy.source_namespace == "terrasnap-system"
    assert plan.secret_copy.namespace == "ml-data"
    assert plan.secret_copy.name == names.store_secret_name(plan.name)
    pod = plan.manifest["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["store-credentials"]["secret"]["secretName"] == plan.secret_copy.name
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/terrasnap/store/credentials.json"
    assert "TERRASNAP_STORE_ENDPOINT" not in env
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "store-credentials")
    assert mount["readOnly"] is True


def test_snapshot_credentials_come_from_the_snapshots_own_namespace() -> None:
    store = StoreSpec.from_dict({"url": "gs://a/b", "credentials": {
        "secretRef": {"name": "gc-key"}, "snapshotSecretRef": {"name": "sa", "key": "k.json"}}})  # fmt: skip
    plan = plan_job(snapshot(), "main", store, CONFIG)
    assert plan.secret_copy is None
    pod = plan.manifest["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "store-credentials"]
    assert volume["secret"]["secretName"] == "sa"
    assert volume["secret"]["items"] == [{"key": "k.json", "path": "credentials.json"}]
    assert "store-credentials" not in {m["name"] for c in pod["initContainers"] for m in c["volumeMounts"]}


def test_volume_source_mounted_read_only() -> None:
    plan = plan_job(
        snapshot(source={"volume": {"claimName": "annotations", "path": "/tiles"}}), "main", STORE, CONFIG
    )
    pod = plan.manifest["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "source"]
    assert volume["persistentVolumeClaim"] == {"claimName": "annotations", "readOnly": True}
    (mount,) = [m for m in pod["initContainers"][0]["volumeMounts"] if m["name"] == "source"]
    assert mount == {"name": "source", "mountPath": "/source", "readOnly": True}
    assert pod["initContainers"][0]["args"][2] == "/source/tiles"


def test_invalid_spec_raises() -> None:
    with pytest.raises(SpecError):
        plan_job(snapshot(source={}), "main", STORE, CONFIG)


def test_plan_is_pure() -> None:
    snap = snapshot()
    before = copy.deepcopy(snap)
    plan = plan_job(snap, "main", STORE, CONFIG)
    assert snap == before
    json.dumps(plan.manifest)  # plain JSON


def test_merge_diff() -> None:
    old = {"a": 1, "b": {"c": 1, "d": 2}, "l": [1, 2], "gone": True}
    new = {"a": 1, "b": {"c": 1, "d": 3}, "l": [1], "n": None}
    assert merge_diff(old, new) == {"b": {"d": 3}, "l": [1], "n": None, "gone": None}
    assert merge_diff(new, new) == {}


def test_retry_annotation_gives_the_same_generation_a_new_job() -> None:
    plain = plan_job(snapshot(), "main", STORE, CONFIG)
    retried = snapshot()
    retried["metadata"]["annotations"] = {"terrasnap.io/retry": "1700000000"}
    first = plan_job(retried, "main", STORE, CONFIG)
    assert first.name != plain.name and first.name.startswith("buildings-3-")
    assert first.name == plan_job(retried, "main", STORE, CONFIG).name
    retried["metadata"]["annotations"]["terrasnap.io/retry"] = "1700000001"
    assert plan_job(retried, "main", STORE, CONFIG).name != first.name


def test_an_s3_store_gets_aws_credentials_file_and_region_the_way_aws_clients_read_them() -> None:
    store = StoreSpec.from_dict({"url": "s3://acme/dvc", "region": "eu-west-1", "credentials": {
        "secretRef": {"name": "gc"}, "snapshotSecretRef": {"name": "aws-writer", "key": "credentials"}}})  # fmt: skip
    pod = plan_job(snapshot(), "main", store, CONFIG).manifest["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/var/run/secrets/terrasnap/store/credentials.json"
    assert env["AWS_REGION"] == "eu-west-1" and "GOOGLE_APPLICATION_CREDENTIALS" not in env
    with pytest.raises(SpecError, match="s3:// stores only"):
        StoreSpec.from_dict({"url": "gs://acme/dvc", "region": "eu-west-1"})


def test_an_azure_store_gets_its_login_file_and_account_the_way_the_engine_reads_them() -> None:
    store = StoreSpec.from_dict({"url": "azure://acme/dvc", "accountName": "acmedata", "credentials": {
        "secretRef": {"name": "gc"}, "snapshotSecretRef": {"name": "azure-writer", "key": "connection"}}})  # fmt: skip
    pod = plan_job(snapshot(), "main", store, CONFIG).manifest["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TERRASNAP_AZURE_CREDENTIALS"] == "/var/run/secrets/terrasnap/store/credentials.json"
    assert env["AZURE_STORAGE_ACCOUNT"] == "acmedata"
    assert not {"GOOGLE_APPLICATION_CREDENTIALS", "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION"} & set(env)
    with pytest.raises(SpecError, match="azure:// stores only"):
        StoreSpec.from_dict({"url": "s3://acme/dvc", "accountName": "acmedata"})
