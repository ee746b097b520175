"""planner.store_status: (status, outcome, now) → SnapshotStore status + Events, without a cluster."""

from __future__ import annotations

from terrasnap.planner import store_status as ss

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"
OK = ss.configured("terrasnap-system", "terrasnap-gc-main", "0 3 * * *", suspended=False)


def by_type(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_a_configured_store_is_ready_with_its_cronjob_and_announces_it_once() -> None:
    new = ss.store_status(None, 1, OK, T0)
    assert new["observedGeneration"] == 1
    assert new["cronJob"] == {"namespace": "terrasnap-system", "name": "terrasnap-gc-main"}
    conditions = by_type(new)
    assert set(conditions) == {"Ready"}
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["reason"] == "Configured"
    assert conditions["Ready"]["message"] == "GC CronJob terrasnap-system/terrasnap-gc-main scheduled '0 3 * * *'"
    (event,) = ss.store_events({}, new)
    assert (event.type, event.reason) == ("Normal", "Configured")
    assert ss.store_events(new, ss.store_status(new, 1, OK, T1)) == []


def test_a_failure_stalls_the_store_with_a_warning_and_recovery_clears_it() -> None:
    ready = ss.store_status(None, 1, OK, T0)
    failed = ss.store_status(ready, 2, ss.credentials_not_found("creds", "gcs", "sa.json"), T1)
    conditions = by_type(failed)
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["lastTransitionTime"] == T1
    assert conditions["Stalled"]["reason"] == "CredentialsNotFound"
    assert "creds/gcs" in conditions["Stalled"]["message"] and "'sa.json'" in conditions["Stalled"]["message"]
    assert failed["cronJob"] == ready["cronJob"]  # the CronJob made earlier is still there
    (warning,) = ss.store_events(ready, failed)
    assert (warning.type, warning.reason) == ("Warning", "CredentialsNotFound")

    recovered = ss.store_status(failed, 2, OK, T2)
    assert set(by_type(recovered)) == {"Ready"}
    assert by_type(recovered)["Ready"]["lastTransitionTime"] == T2
    assert [e.reason for e in ss.store_events(failed, recovered)] == ["Configured"]


def test_a_new_message_with_the_same_reason_is_no_news_but_a_new_reason_is() -> None:
    a = ss.store_status(None, 1, ss.invalid_spec("gc.schedule: bad"), T0)
    b = ss.store_status(a, 2, ss.invalid_spec("gc.keep.last: bad"), T1)
    assert by_type(b)["Ready"]["message"] == "gc.keep.last: bad"
    assert by_type(b)["Ready"]["lastTransitionTime"] == T0
    assert ss.store_events(a, b) == []
    c = ss.store_status(b, 2, ss.credentials_not_found(None, "gcs", "k"), T2)
    assert [(e.type, e.reason) for e in ss.store_events(b, c)] == [("Warning", "CredentialsNotFound")]
    assert "Secret gcs has" in by_type(c)["Ready"]["message"]


def test_fields_the_gc_run_writes_are_kept_and_the_input_is_not_mutated() -> None:
    old = {"lastGC": {"result": "Succeeded", "deleted": 3}, "observedGeneration": 1, "conditions": []}
    snapshot = repr(old)
    new = ss.store_status(old, 2, OK, T0)
    assert new["lastGC"] == {"result": "Succeeded", "deleted": 3}
    assert repr(old) == snapshot


def test_a_suspended_cronjob_says_so() -> None:
    outcome = ss.configured("ns", "gc", "*/5 * * * *", suspended=True)
    assert outcome.message.endswith("scheduled '*/5 * * * *' (suspended)")
