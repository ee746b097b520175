"""api: specs with defaults, conditions, durations, and the CRDs themselves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from terrasnap.api import conditions as cond
from terrasnap.api.config import OperatorConfig
from terrasnap.api.durations import parse_duration
from terrasnap.api.models import SnapshotSpec, SpecError, StoreSpec

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "24", "1.5h", "h", "-1d", "24 h", "1y"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def git_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "store": "main",
        "source": {"git": {"url": "https://example.com/r.git", "revision": "main", "path": "data/"}},
    }
    spec.update(over)
    return spec


def test_snapshot_spec_defaults() -> None:
    spec = SnapshotSpec.from_dict(git_spec())
    assert spec.source.kind == "git"
    assert spec.source.argument() == "git+https://example.com/r.git@main#subdirectory=data"
    assert spec.validation.target_crs == "EPSG:4326"
    assert spec.validation.invalid_geometry == "reject"
    assert spec.validation.missing_crs == "reject"
    assert spec.backoff_limit is None and spec.active_deadline_seconds is None


def test_source_arguments() -> None:
    bucket = SnapshotSpec.from_dict({"store": "s", "source": {"bucket": {"url": "gs://raw/a/"}}})
    assert bucket.source.argument() == "gs://raw/a/"
    volume = SnapshotSpec.from_dict(
        {"store": "s", "source": {"volume": {"claimName": "pvc", "path": "/d/x/"}}}
    )
    assert volume.source.argument() == "/source/d/x"
    root = SnapshotSpec.from_dict({"store": "s", "source": {"volume": {"claimName": "pvc"}}})
    assert root.source.argument() == "/source"
    nopath = SnapshotSpec.from_dict({"store": "s", "source": {"git": {"url": "file:///r", "revision": "v1"}}})
    assert nopath.source.argument() == "git+file:///r@v1"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"store": "s", "source": {}}, "exactly one"),
        (
            {"store": "s", "source": {"bucket": {"url": "gs://a"}, "volume": {"claimName": "c"}}},
            "exactly one",
        ),
        ({"store": "s", "source": {"git": {"url": "ssh://x", "revision": "m"}}}, "https://"),
        ({"store": "s", "source": {"git": {"url": "https://x", "revision": ""}}}, "revision"),
        ({"store": "s", "source": {"git": {"url": "https://x", "revision": "a b"}}}, "whitespace"),
        ({"store": "s", "source": {"git": {"url": "https://x", "revision": "m", "path": "../x"}}}, ".."),
        ({"store": "s", "source": {"bucket": {"url": "http://x"}}}, "gs://"),
        ({"source": {"bucket": {"url": "gs://x"}}}, "store"),
        (git_spec(validation={"targetCRS": "4326"}), "targetCRS"),
        (git_spec(validation={"invalidGeometry": "fix"}), "invalidGeometry"),
        (git_spec(validation={"missingCRS": "assume:4326"}), "missingCRS"),
        (git_spec(backoffLimit=50), "backoffLimit"),
        (git_spec(activeDeadlineSeconds=0), "activeDeadlineSeconds"),
    ],
)
def test_snapshot_spec_errors(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        SnapshotSpec.from_dict(spec)


def test_store_spec() -> None:
    store = StoreSpec.from_dict({"url": "gs://b/p", "credentials": {"secretRef": {"name": "sa"}}})
    assert store.credentials is not None and store.credentials.key == "key.json"
    assert store.credentials.namespace is None
    assert store.gc.schedule == "0 3 * * *" and store.gc.grace_period == "24h"
    assert store.gc.keep.last == 5 and store.gc.keep.within == "90d"
    assert (
        StoreSpec.from_dict({"url": "file:///tmp/x", "gc": {"schedule": "@hourly"}}).gc.schedule == "@hourly"
    )
    for bad, needle in (
        ({"url": "ftp://x"}, "url"),
        ({"url": "azure://Bad_Container/x"}, "azure container"),
        ({"url": "azure://a--b/x"}, "azure container"),
        ({"url": "gs://b", "accountName": "acct"}, "accountName"),
        ({"url": "azure://cont/x", "accountName": "Not-Valid"}, "accountName"),
        ({"url": "file://relative"}, "url"),
        ({"url": "gs://b", "endpoint": "localhost:1"}, "endpoint"),
        ({"url": "gs://b", "gc": {"gracePeriod": "1 day"}}, "gracePeriod"),
        ({"url": "gs://b", "gc": {"schedule": "daily"}}, "schedule"),
        ({"url": "gs://b", "gc": {"keep": {"last": 0}}}, "keep.last"),
    ):
        with pytest.raises(SpecError, match=needle):
            StoreSpec.from_dict(bad)


def test_config_from_env() -> None:
    config = OperatorConfig.from_env({"TERRASNAP_NAMESPACE": "ops", "TERRASNAP_WORKER_IMAGE": "img:1"})
    assert config.namespace == "ops" and config.worker_image == "img:1"
    assert OperatorConfig.from_env({}).namespace == "terrasnap-system"


# --- conditions ------------------------------------------------------------------------------------------


def test_set_condition_keeps_transition_time_while_status_unchanged() -> None:
    first = cond.set_condition([], "Ready", False, "Progressing", "a", 1, "2026-01-01T00:00:00Z")
    second = cond.set_condition(first, "Ready", False, "Other", "b", 2, "2026-01-02T00:00:00Z")
    assert second[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert second[0]["reason"] == "Other" and second[0]["observedGeneration"] == 2
    third = cond.set_condition(second, "Ready", True, "Done", "c", 2, "2026-01-03T00:00:00Z")
    assert third[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert first[0]["reason"] == "Progressing", "input must not be mutated"


def test_kstatus_ready_always_reconciling_and_stalled_only_while_true() -> None:
    when = "2026-01-01T00:00:00Z"
    running = cond.kstatus(
        [], generation=3, when=when, ready="Unknown",
        ready_reason=cond.Reason("Progressing", "x"), reconciling=cond.Reason("JobRunning", "y"),
    )  # fmt: skip
    assert [c["type"] for c in running] == ["Ready", "Reconciling"]
    done = cond.kstatus(
        running, generation=3, when=when, ready=True, ready_reason=cond.Reason("Snapshotted", "z")
    )
    assert [c["type"] for c in done] == ["Ready"]
    failed = cond.kstatus(
        done, generation=4, when=when, ready=False,
        ready_reason=cond.Reason("ValidationFailed", "m"), stalled=cond.Reason("ValidationFailed", "m"),
    )  # fmt: skip
    assert [c["type"] for c in failed] == ["Ready", "Stalled"]
    assert all(c["observedGeneration"] == 4 for c in failed)


def test_reasons_are_cleaned_to_the_crd_pattern() -> None:
    assert cond.clean_reason("ValidationFailed") == "ValidationFailed"
    assert cond.clean_reason("Deadline Exceeded!") == "DeadlineExceeded"
    assert cond.clean_reason("") == "Unknown"
    with pytest.raises(ValueError):
        cond.set_condition([], "Ready", "yes", "R", "m", 1, "t")


# --- the CRDs --------------------------------------------------------------------------------------------


def load_crd(name: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / f"terrasnap.io_{name}.yaml").read_text())


def walk(schema: dict[str, Any], path: str) -> list[str]:
    """Paths of schema properties that lack a description (kubectl explain shows them empty)."""
    missing = []
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}"
        if key in ("apiVersion", "kind", "metadata") and path == "":
            continue
        if not sub.get("description"):
            missing.append(here)
        missing += walk(sub, here)
        if sub.get("type") == "array":
            missing += walk(sub.get("items") or {}, here + "[]")
    return missing


@pytest.mark.parametrize("name", ["datasetsnapshots", "snapshotstores"])
def test_crd_fields_all_described(name: str) -> None:
    crd = load_crd(name)
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert walk(schema, "") == []
    assert version["subresources"] == {"status": {}}
    assert "status" in schema["properties"] and "spec" in schema["properties"]


def test_datasetsnapshot_crd_names_and_columns() -> None:
    crd = load_crd("datasetsnapshots")
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["dsnap"] and names["categories"] == ["terrasnap"]
    assert crd["spec"]["scope"] == "Namespaced"
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns)[:5] == ["Ready", "Phase", "Snapshot", "Files", "Age"]
    assert columns["Manifest"]["priority"] == 1 and columns["Job"]["priority"] == 1
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for column in columns.values():
        path = column["jsonPath"]
        if path.startswith(".status."):
            assert path.split(".")[2].split("[")[0] in status, path
    assert status["history"]["maxItems"] == 20
    assert load_crd("snapshotstores")["spec"]["scope"] == "Cluster"


def test_status_written_by_the_planner_is_declared() -> None:
    """Undeclared status fields are pruned by the apiserver: every key the planner writes must exist."""
    from terrasnap.planner import status as st

    schema = load_crd("datasetsnapshots")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    declared = schema["properties"]["status"]["properties"]
    job = st.JobView(name="j", generation=1, state="succeeded", started_at="a", completed_at="b")
    result = st.EngineResult(
        ok=True, snapshot_id="sha256:" + "a" * 64,
        manifest={"uri": "u", "metadata": "m", "lock": "l", "stac": "s"}, commit="c", summary={"files": 1},
    )  # fmt: skip
    status = st.observed(st.planned({}, 1, "j", "t"), 1, job, result, "t")
    assert set(status) <= set(declared), set(status) - set(declared)
    assert set(status["manifest"]) <= set(declared["manifest"]["properties"])
    assert set(status["summary"]) <= set(declared["summary"]["properties"])
    assert set(status["history"][0]) <= set(declared["history"]["items"]["properties"])
    for condition in status["conditions"]:
        assert set(condition) <= set(declared["conditions"]["items"]["properties"])


def test_label_selectors() -> None:
    from terrasnap.api.selectors import matches

    labels = {"a": "1", "b": "2"}
    assert matches(labels, None) and matches(labels, "")
    assert matches(labels, "a=1") and matches(labels, "a==1,b")
    assert not matches(labels, "a=2") and not matches(labels, "c")
    assert matches(labels, "!c") and not matches(labels, "!a")
    assert matches(labels, "a!=2") and not matches(labels, "a!=1")
    assert matches({}, "!terrasnap.io/test-run") and not matches({}, "terrasnap.io/test-run=x")
