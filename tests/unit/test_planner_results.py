"""planner.results: only a pod the Job controls, only canonical URIs, only failures from init containers."""

from __future__ import annotations

import json
from typing import Any

from terrasnap.api import contract
from terrasnap.planner import results
from terrasnap.planner import status as st

UID = "0f1e2d3c-job"
NS, NAME, STORE = "team-a", "buildings", "gs://shared/dvc"
SID = "sha256:" + "cd" * 32
URIS = contract.snapshot_uris(STORE, NS, NAME, SID)


def ok(**override: str) -> str:
    doc: dict[str, Any] = {"ok": True, "snapshotID": SID, **URIS, "summary": {"files": 3}}
    doc.update(override)
    return json.dumps(doc)


def failed(reason: str, message: str = "boom") -> str:
    return json.dumps({"ok": False, "error": {"reason": reason, "message": message}})


def pod(*containers: tuple[str, str, str], uid: str = UID, owned: bool = True, init: tuple[str, ...] = ()
        ) -> dict[str, Any]:
    """A pod as the Job controller makes it; `containers`: (name, message, finishedAt)."""
    def status(name: str, message: str, when: str) -> dict[str, Any]:
        return {"name": name, "state": {"terminated": {"exitCode": 0, "message": message, "finishedAt": when}}}
    refs = [{"kind": "Job", "name": "j", "uid": UID, "controller": True}] if owned else []
    return {
        "metadata": {"name": "p", "labels": {"job-name": "j", "batch.kubernetes.io/controller-uid": uid},
                     "ownerReferences": refs},
        "status": {
            "initContainerStatuses": [status(*c) for c in containers if c[0] in init],
            "containerStatuses": [status(*c) for c in containers if c[0] not in init],
        },
    }  # fmt: skip


def trusted(*pods: dict[str, Any], store: str | None = STORE) -> st.EngineResult | None:
    return results.trusted_result(list(pods), UID, main="snapshot", init=("fetch", "pipeline"),
                                  store_url=store, namespace=NS, name=NAME)


def test_the_canonical_result_of_the_jobs_own_pod_is_accepted() -> None:
    result = trusted(pod(("snapshot", ok(), "2026-01-01T00:00:02Z")))
    assert result is not None and result.ok and result.manifest["uri"] == URIS["manifest"]
    # a trailing slash on the store URL names the same folder
    assert contract.snapshot_uris(STORE + "/", NS, NAME, SID) == URIS


def test_a_pod_that_only_carries_the_jobs_labels_is_ignored() -> None:
    forged = pod(("snapshot", ok(manifest=URIS["manifest"].replace(NS, "team-b")), "2026-01-01T00:00:09Z"),
                 owned=False)
    assert trusted(forged) is None
    # a controller reference to the Job but another uid in the label: not the Job's pod either
    assert trusted(pod(("snapshot", ok(), "2026-01-01T00:00:09Z"), uid="other")) is None
    real = pod(("snapshot", ok(), "2026-01-01T00:00:02Z"))
    result = trusted(forged, real)
    assert result is not None and result.ok and result.manifest["uri"] == URIS["manifest"]


def test_a_uri_that_is_not_this_snapshots_is_an_invalid_result() -> None:
    for key, uri in (
        ("manifest", URIS["manifest"].replace(f"/{NS}/", "/team-b/")),  # another namespace's snapshot
        ("manifest", "gs://elsewhere/terrasnap/manifests/team-a/buildings/" + "cd" * 32 + "/manifest.parquet"),
        ("manifest", URIS["manifest"] + "\n"),
        ("metadata", URIS["metadata"].replace("metadata.json", "x/../metadata.json")),
        ("stac", "https://evil.example/collection.json"),
        ("manifest", URIS["manifest"].replace("cd" * 32, "ef" * 32)),  # another snapshotID's folder
    ):
        result = trusted(pod(("snapshot", ok(**{key: uri}), "2026-01-01T00:00:02Z")))
        assert result is not None and not result.ok and result.reason == "InvalidResult", (key, uri)
        assert key in (result.message or "")


def test_init_containers_may_only_report_failures() -> None:
    result = trusted(pod(("pipeline", ok(), "2026-01-01T00:00:05Z"), init=("pipeline",)))
    assert result is not None and not result.ok and result.reason == "InvalidResult"

    result = trusted(pod(("pipeline", failed("Pwned", "stage x"), "2026-01-01T00:00:05Z"), init=("pipeline",)))
    assert result is not None and (result.reason, result.message) == ("EngineFailed", "pipeline: stage x")

    result = trusted(pod(("fetch", failed("GitError"), "2026-01-01T00:00:05Z"), init=("fetch",)))
    assert result is not None and result.reason == "GitError"


def test_the_newest_message_wins_and_other_containers_are_not_read() -> None:
    newer = pod(("snapshot", ok(), "2026-01-01T00:00:09Z"))
    older = pod(("snapshot", failed("DVCError"), "2026-01-01T00:00:01Z"))
    result = trusted(older, newer)
    assert result is not None and result.ok
    assert trusted(pod(("sidecar", ok(), "2026-01-01T00:00:09Z"))) is None


def test_without_its_store_a_success_cannot_be_checked() -> None:
    result = trusted(pod(("snapshot", ok(), "2026-01-01T00:00:02Z")), store=None)
    assert result is not None and not result.ok and result.reason == "InvalidResult"


def test_an_invalid_result_never_reaches_the_status_manifest_or_history() -> None:
    job = st.JobView(name="j", generation=1, state="succeeded", completed_at="2026-01-01T00:00:03Z")
    bad = trusted(pod(("snapshot", ok(manifest=URIS["manifest"].replace(NS, "team-b")), "2026-01-01T00:00:02Z")))
    new = st.observed({"history": []}, 1, job, bad, "2026-01-01T00:00:04Z")
    assert new["phase"] == "Failed" and "manifest" not in new and new["history"] == []
    ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidResult"
