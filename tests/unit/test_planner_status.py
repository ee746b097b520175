"""planner.status: (status, Job, termination message) → status + Events."""

from __future__ import annotations

import json
from typing import Any

from terrasnap.api import conditions as cond
from terrasnap.planner import status as st

SID = "sha256:" + "ab" * 32
SID2 = "sha256:" + "cd" * 32
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"


def job(name: str = "b-1-abcde", generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"terrasnap.io/generation": str(generation)}},
        "status": status,
    }


def ok_message(sid: str = SID, commit: str | None = "c0ffee") -> str:
    return json.dumps(
        {
            "ok": True, "snapshotID": sid,
            "manifest": "gs://b/terrasnap/manifests/ns/n/x/manifest.parquet",
            "metadata": "gs://b/.../metadata.json", "lock": "gs://b/.../dvc.lock", "stac": "gs://b/.../collection.json",
            "source": {"commit": commit},
            "summary": {"files": 40, "features": 1000, "rasters": 4, "bytes": 714, "repaired": 3, "rejected": 0, "warnings": 1},
        }
    )  # fmt: skip


def fail_message(reason: str = "ValidationFailed", message: str = "3 invalid geometries in a.geojson") -> str:
    return json.dumps({"ok": False, "error": {"reason": reason, "message": message}, "summary": {"files": 2}})


def types(status: dict[str, Any]) -> list[str]:
    return [c["type"] for c in status["conditions"]]


def ready(status: dict[str, Any]) -> dict[str, Any]:
    condition = cond.get_condition(status["conditions"], "Ready")
    assert condition is not None
    return condition


def test_job_view_states() -> None:
    assert st.JobView.from_job(job()).state == "pending"
    assert st.JobView.from_job(job(active=1, startTime=T0)).state == "running"
    assert st.JobView.from_job(job(active=1, ready=0)).state == "pending"  # pod not scheduled yet
    assert st.JobView.from_job(job(active=1, ready=1)).state == "running"
    done = st.JobView.from_job(
        job(conditions=[{"type": "Complete", "status": "True"}], startTime=T0, completionTime=T1)
    )
    assert (done.state, done.started_at, done.completed_at, done.finished) == ("succeeded", T0, T1, True)
    failed = st.JobView.from_job(
        job(
            failed=4,
            conditions=[
                {"type": "FailureTarget", "status": "True"},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": T2,
                },
            ],
        )
    )
    assert (failed.state, failed.reason, failed.completed_at, failed.failed_pods) == (
        "failed", "BackoffLimitExceeded", T2, 4,
    )  # fmt: skip
    assert st.JobView.from_job({"metadata": {"name": "x"}}).generation is None


def test_parse_result() -> None:
    result = st.parse_result(ok_message())
    assert result is not None and result.ok and result.snapshot_id == SID
    assert result.manifest["uri"].endswith("manifest.parquet") and result.manifest["stac"].endswith(".json")
    assert result.summary["files"] == 40 and result.commit == "c0ffee"
    failure = st.parse_result(fail_message())
    assert failure is not None and not failure.ok and failure.reason == "ValidationFailed"
    assert failure.summary == {"files": 2}
    for junk in (None, "", "not json", "[]", '{"ok": "yes"}', "Error: OOMKilled"):
        assert st.parse_result(junk) is None
    bad_id = st.parse_result(json.dumps({"ok": True, "snapshotID": "md5:1", "manifest": "u"}))
    assert bad_id is not None and not bad_id.ok and bad_id.reason == "InvalidResult"


def test_planned_is_pending_and_idempotent() -> None:
    status = st.planned({}, 1, "b-1-abcde", T0)
    assert status["phase"] == "Pending" and status["job"] == "b-1-abcde" and status["observedGeneration"] == 1
    assert types(status) == ["Ready", "Reconciling"]
    assert ready(status)["status"] == "Unknown"
    assert st.planned(status, 1, "b-1-abcde", T1) == status  # resume/re-apply: nothing changes
    running = st.observed(status, 1, st.JobView.from_job(job(active=1, startTime=T0)), None, T1)
    assert st.planned(running, 1, "b-1-abcde", T2)["phase"] == "Running"


def test_full_success_path() -> None:
    pending = st.planned({}, 1, "b-1-abcde", T0)
    running = st.observed(pending, 1, st.JobView.from_job(job(active=1, startTime=T0)), None, T1)
    assert running["phase"] == "Running" and running["startedAt"] == T0
    assert cond.get_condition(running["conditions"], "Reconciling")["reason"] == "JobRunning"  # type: ignore[index]
    done_job = st.JobView.from_job(
        job(conditions=[{"type": "Complete", "status": "True"}], startTime=T0, completionTime=T2)
    )
    done = st.observed(running, 1, done_job, st.parse_result(ok_message()), T2)
    assert done["phase"] == "Succeeded"
    assert types(done) == ["Ready"]
    assert ready(done)["status"] == "True" and ready(done)["reason"] == "Snapshotted"
    assert ready(done)["observedGeneration"] == 1
    assert ready(done)["lastTransitionTime"] == T2
    assert done["snapshotID"] == SID and done["shortID"] == "ab" * 6
    assert done["manifest"]["uri"].endswith("manifest.parquet")
    assert done["summary"] == {
        "files": 40,
        "features": 1000,
        "rasters": 4,
        "bytes": 714,
        "repaired": 3,
        "rejected": 0,
        "warnings": 1,
    }
    assert done["source"] == {"commit": "c0ffee"}
    assert done["completedAt"] == T2
    assert done["history"] == [
        {
            "snapshotID": SID,
            "manifest": done["manifest"]["uri"],
            "generation": 1,
            "commit": "c0ffee",
            "completedAt": T2,
        }
    ]
    # the same event seen again (operator restart, re-list) changes nothing
    assert st.observed(done, 1, done_job, st.parse_result(ok_message()), "2027-01-01T00:00:00Z") == done
    assert st.is_settled(done, 1, "b-1-abcde") and not st.is_settled(done, 2, "b-2-xxxxx")


def test_new_generation_keeps_last_artifact_and_builds_history() -> None:
    done_job = st.JobView.from_job(
        job(conditions=[{"type": "Complete", "status": "True"}], completionTime=T1)
    )
    first = st.observed(st.planned({}, 1, "b-1-abcde", T0), 1, done_job, st.parse_result(ok_message()), T1)
    second_pending = st.planned(first, 2, "b-2-fffff", T2)
    assert second_pending["phase"] == "Pending" and second_pending["snapshotID"] == SID  # Flux-style artifact
    assert ready(second_pending)["status"] == "Unknown" and ready(second_pending)["observedGeneration"] == 2
    assert "completedAt" not in second_pending
    job2 = st.JobView.from_job(
        job("b-2-fffff", 2, conditions=[{"type": "Complete", "status": "True"}], completionTime=T2)
    )
    second = st.observed(second_pending, 2, job2, st.parse_result(ok_message(SID2, "beef")), T2)
    assert second["snapshotID"] == SID2
    assert [h["snapshotID"] for h in second["history"]] == [SID2, SID]
    assert [h["generation"] for h in second["history"]] == [2, 1]


def test_history_bounded_and_deduplicated() -> None:
    history: list[dict[str, Any]] = []
    for i in range(30):
        history = st.add_history(history, {"snapshotID": f"sha256:{i:064x}", "generation": i})
    assert len(history) == 20 and history[0]["generation"] == 29
    again = st.add_history(history, {"snapshotID": history[5]["snapshotID"], "generation": 30})
    assert len(again) == 20 and again[0]["generation"] == 30
    assert [h["snapshotID"] for h in again].count(history[5]["snapshotID"]) == 1


def test_validation_failure_is_stalled_with_engine_reason() -> None:
    pending = st.planned({}, 1, "b-1-abcde", T0)
    failed_job = st.JobView.from_job(
        job(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                   "message": "Container snapshot for pod x failed with exit code 1"}])
    )  # fmt: skip
    failed = st.observed(pending, 1, failed_job, st.parse_result(fail_message()), T1)
    assert failed["phase"] == "Failed"
    assert types(failed) == ["Ready", "Stalled"]
    assert ready(failed)["status"] == "False"
    assert ready(failed)["reason"] == "ValidationFailed"
    assert "3 invalid geometries" in ready(failed)["message"]
    assert failed["summary"]["files"] == 2
    assert "snapshotID" not in failed
    (event,) = st.events(pending, failed)
    assert (event.type, event.reason) == ("Warning", "ValidationFailed")


def test_infrastructure_failure_after_retries_uses_engine_reason_else_job_reason() -> None:
    failed_job = st.JobView.from_job(
        job(failed=4, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit"}])
    )  # fmt: skip
    with_result = st.observed(
        {}, 1, failed_job, st.parse_result(fail_message("StoreUnreachable", "gs://x: refused")), T1
    )
    assert ready(with_result)["reason"] == "StoreUnreachable"
    without = st.observed({}, 1, failed_job, None, T1)
    assert ready(without)["reason"] == "BackoffLimitExceeded"
    assert "backoff limit" in ready(without)["message"]
    deadline = st.JobView.from_job(
        job(conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    )
    assert ready(st.observed({}, 1, deadline, None, T1))["reason"] == "DeadlineExceeded"


def test_complete_job_without_result_fails() -> None:
    done_job = st.JobView.from_job(job(conditions=[{"type": "Complete", "status": "True"}]))
    status = st.observed({}, 1, done_job, None, T1)
    assert status["phase"] == "Failed" and ready(status)["reason"] == "InvalidResult"


def test_jobs_of_other_generations_change_nothing() -> None:
    current = st.planned({}, 2, "b-2-fffff", T0)
    old_job = st.JobView.from_job(job("b-1-abcde", 1, conditions=[{"type": "Complete", "status": "True"}]))
    assert st.observed(current, 2, old_job, st.parse_result(ok_message()), T1) == current


def test_invalid_and_recovery() -> None:
    invalid = st.invalid({}, 1, "StoreNotFound", "SnapshotStore 'main' does not exist", T0)
    assert invalid["phase"] == "Failed" and types(invalid) == ["Ready", "Stalled"]
    assert ready(invalid)["reason"] == "StoreNotFound"
    recovered = st.planned(invalid, 1, "b-1-abcde", T1)
    assert types(recovered) == ["Ready", "Reconciling"] and recovered["phase"] == "Pending"


def test_secrets_in_urls_are_redacted() -> None:
    msg = "git clone https://user:s3cr3t@git.example/r.git failed"
    failed = st.observed({}, 1, st.JobView.from_job(job(conditions=[{"type": "Failed", "status": "True"}])),
                         st.parse_result(fail_message("GitError", msg)), T1)  # fmt: skip
    assert "s3cr3t" not in json.dumps(failed)
    assert "https://***@git.example" in ready(failed)["message"]


def test_events_once_per_transition() -> None:
    pending = st.planned({}, 1, "b-1-abcde", T0)
    (created,) = st.events({}, pending)
    assert created.reason == "JobCreated" and created.type == "Normal"
    running = st.observed(pending, 1, st.JobView.from_job(job(active=1)), None, T1)
    assert [e.reason for e in st.events(pending, running)] == ["JobRunning"]
    assert st.events(running, running) == []
    done = st.observed(
        running, 1, st.JobView.from_job(job(conditions=[{"type": "Complete", "status": "True"}])),
        st.parse_result(ok_message()), T2,
    )  # fmt: skip
    (snap,) = st.events(running, done)
    assert snap.reason == "Snapshotted" and "manifest.parquet" in snap.message


def test_inputs_not_mutated() -> None:
    pending = st.planned({}, 1, "b-1-abcde", T0)
    frozen = json.dumps(pending, sort_keys=True)
    st.observed(pending, 1, st.JobView.from_job(job(active=1)), None, T1)
    st.invalid(pending, 1, "X", "y", T1)
    assert json.dumps(pending, sort_keys=True) == frozen


def test_retrying_job_stays_running_without_new_events() -> None:
    running = st.observed(st.planned({}, 1, "b-1-abcde", T0), 1, st.JobView.from_job(job(active=1)), None, T1)
    between = st.observed(running, 1, st.JobView.from_job(job(failed=1)), None, T2)
    assert between["phase"] == "Running"
    reconciling = cond.get_condition(between["conditions"], "Reconciling")
    assert reconciling is not None and reconciling["reason"] == "JobRetrying"
    assert "1 failed attempt" in reconciling["message"]
    assert st.events(running, between) == []
