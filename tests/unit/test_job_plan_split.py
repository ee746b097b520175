"""The snapshot Job's pod in three containers: each gets only the secrets its step needs."""

from __future__ import annotations

from typing import Any

from terrasnap.api.models import StoreSpec
from terrasnap.planner import job as jobplan
from terrasnap.planner.job import plan_job
from tests.unit.test_planner_job import CONFIG, snapshot

STORE = StoreSpec.from_dict({"url": "gs://acme/dvc", "credentials": {"secretRef": {"name": "gc-sa"},
                                                                     "snapshotSecretRef": {"name": "store-sa"}}})


def _pod(source: dict[str, Any]) -> dict[str, Any]:
    snap = snapshot(source=source)
    pod: dict[str, Any] = plan_job(snap, "main", STORE, CONFIG).manifest["spec"]["template"]["spec"]
    return pod


def _secrets(pod: dict[str, Any], container: dict[str, Any]) -> set[str]:
    """Secret names a container can read: mounted volumes and env references."""
    vols = {v["name"]: v for v in pod["volumes"]}
    names = {vols[m["name"]]["secret"]["secretName"] for m in container["volumeMounts"]
             if "secret" in vols[m["name"]]}
    names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env") or [] if "valueFrom" in e}
    return names


def _env(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env") or []}


def test_fetch_pipeline_snapshot_each_with_only_their_own_secrets() -> None:
    git = {"git": {"url": "https://git.example/r.git", "revision": "main",
                   "credentialsSecret": {"name": "git-token", "key": "token"},
                   "dvcRemotes": [{"name": "storage", "credentialsSecret": {"name": "team-gcs"}}]}}
    pod = _pod(git)
    fetch, pipeline = pod["initContainers"]
    (main,) = pod["containers"]
    assert [fetch["name"], pipeline["name"], main["name"]] == ["fetch", "pipeline", "snapshot"]
    assert _secrets(pod, fetch) == {"git-token", "team-gcs"}
    assert _secrets(pod, pipeline) == set()
    assert _secrets(pod, main) == {"store-sa"}
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in _env(fetch) | _env(pipeline)
    assert not {"TERRASNAP_STORE_ENDPOINT", "TERRASNAP_GIT_TOKEN", jobplan.DVC_REMOTES_ENV} & _env(pipeline)
    assert pod["automountServiceAccountToken"] is False
    # the pipeline sees the workspace only; the fetch state and the snapshot's own directory are out of its reach
    assert {m["name"] for m in pipeline["volumeMounts"]} == {"work"}
    state = {m["name"]: m for m in main["volumeMounts"]}
    assert state["state"]["readOnly"] is True and "private" in state
    assert {m["name"] for m in fetch["volumeMounts"]} >= {"work", "state"}
    assert "private" not in {m["name"] for m in fetch["volumeMounts"]}
    # every step reports to its own termination message; the result is the snapshot container's
    assert all(c["terminationMessagePath"] == "/dev/termination-log" for c in (fetch, pipeline, main))
    assert main["args"][:3] == ["snapshot", "--prepared", jobplan.STATE_FILE]


def test_a_bucket_source_reads_with_its_own_key_in_the_fetch_container_only() -> None:
    pod = _pod({"bucket": {"url": "gs://raw/tiles/", "credentialsSecret": {"name": "raw-key", "key": "sa.json"}}})
    (fetch,) = pod["initContainers"]  # a bucket is never a DVC project: no pipeline step
    (main,) = pod["containers"]
    assert _secrets(pod, fetch) == {"raw-key"}
    assert _secrets(pod, main) == {"store-sa"}
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["TERRASNAP_SOURCE_CREDENTIALS"] == f"{jobplan.SOURCE_CREDENTIALS_DIR}/credentials.json"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env


def test_a_failing_step_of_any_container_follows_the_exit_code_contract() -> None:
    plan = plan_job(snapshot(), "main", STORE, CONFIG)
    rules = plan.manifest["spec"]["podFailurePolicy"]["rules"]
    fail = {r["onExitCodes"]["containerName"] for r in rules if r["action"] == "FailJob"}
    count = {r["onExitCodes"]["containerName"] for r in rules if r["action"] == "Count" and "onExitCodes" in r}
    assert fail == count == {"fetch", "pipeline", "snapshot"}
    assert all(r["onExitCodes"]["values"] == [1, 2] for r in rules if r["action"] == "FailJob")
