"""api/contract.py is the one statement of the engine↔operator contract: everything else takes it from there."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import terrasnap.engine
from terrasnap import cli
from terrasnap.api import contract
from terrasnap.api.config import OperatorConfig
from terrasnap.api.durations import parse_duration
from terrasnap.api.models import SnapshotSpec, SpecError, StoreSpec
from terrasnap.engine.errors import TerrasnapError, UsageError
from terrasnap.engine.source import parse_source
from terrasnap.planner import status
from terrasnap.planner.cronjob import plan_gc_cronjob
from terrasnap.planner.job import pod_failure_policy

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def _crd(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CRDS / f"terrasnap.io_{name}.yaml").read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _all_errors() -> set[type[TerrasnapError]]:
    for mod in pkgutil.walk_packages(terrasnap.engine.__path__, "terrasnap.engine."):
        importlib.import_module(mod.name)
    found: set[type[TerrasnapError]] = set()
    todo: list[type[TerrasnapError]] = [TerrasnapError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


# -- reasons and exit codes ------------------------------------------------------------------------------


def test_every_engine_error_has_a_reason_and_exit_code_of_the_contract() -> None:
    errors = _all_errors()
    assert len(errors) >= 10  # the walk found the GC's errors too
    for cls in errors:
        assert cls.reason in contract.REASONS, cls
        assert cls.exit_code == contract.REASONS[cls.reason], cls
    assert {cls.reason for cls in errors} == set(contract.REASONS)  # and the contract lists no unused reason


def test_an_error_with_a_reason_outside_the_contract_cannot_be_defined() -> None:
    with pytest.raises(TypeError, match="not a reason"):
        type("Invented", (TerrasnapError,), {"reason": "SomethingNew"})


def test_no_module_restates_an_exit_code_or_a_reason() -> None:
    """No `exit_code = 3`, no `sys.exit(3)`, no `reason = "GitError"` literal outside the contract."""
    reasons = set(contract.REASONS)
    found = []
    for path in sorted((ROOT / "operator" / "terrasnap").rglob("*.py")):
        if path.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if "exit_code" in names or ("reason" in names and node.value.value in reasons):
                    found.append(f"{path.name}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value != 0):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_the_jobs_pod_failure_policy_uses_the_contracts_exit_codes() -> None:
    rules = {r["action"]: r for r in pod_failure_policy()["rules"]}
    fail, count = rules["FailJob"]["onExitCodes"]["values"], rules["Count"]["onExitCodes"]["values"]
    assert fail == [contract.EXIT_REJECTED, contract.EXIT_USAGE]
    assert count == [contract.EXIT_INFRASTRUCTURE]
    # every non-zero exit the engine can have is either final or retried, never both
    assert set(fail) | set(count) == set(contract.REASONS.values()) and not set(fail) & set(count)


# -- the result document -----------------------------------------------------------------------------------


def test_the_summary_keys_are_one_list_for_engine_status_and_crd() -> None:
    from terrasnap.engine import snapshot

    assert snapshot.Summary is contract.Summary
    assert status.SUMMARY_KEYS is contract.SUMMARY_KEYS
    assert tuple(contract.Summary().to_dict()) == contract.SUMMARY_KEYS
    declared = _crd("datasetsnapshots")["properties"]["status"]["properties"]["summary"]["properties"]
    assert set(declared) == set(contract.SUMMARY_KEYS)


def test_a_result_cut_to_the_limit_is_still_read_by_the_operator() -> None:
    assert cli.RESULT_LIMIT == contract.RESULT_LIMIT
    summary = contract.Summary(files=3, features=10).to_dict()
    doc = {"ok": False, "error": {"reason": contract.VALIDATION_FAILED, "message": "bad geometry; " * 2000},
           "summary": summary, "stats": {"bytesHashed": 1}, "source": {"commit": None}}
    text = cli.compact_result(doc)
    assert len(text.encode()) <= contract.RESULT_LIMIT
    assert set(json.loads(text)) <= set(contract.RESULT_KEYS)
    got = status.parse_result(text)
    assert got is not None and got.reason == contract.VALIDATION_FAILED and dict(got.summary) == summary


def test_a_successful_result_names_its_files_by_the_contracts_keys() -> None:
    doc: dict[str, Any] = {"ok": True, "snapshotID": "sha256:" + "a" * 64, "source": {"commit": None},
           **{k: f"file:///s/{k}" for k in contract.RESULT_URI_KEYS}, "summary": contract.Summary().to_dict()}
    got = status.parse_result(cli.compact_result(doc))
    assert got is not None and got.ok
    assert sorted(got.manifest.values()) == sorted(doc[k] for k in contract.RESULT_URI_KEYS)


# -- source and store URLs -------------------------------------------------------------------------------


def _spec_accepts(git: dict[str, str]) -> bool:
    try:
        SnapshotSpec.from_dict({"store": "s", "source": {"git": {"revision": "main", **git}}})
    except SpecError:
        return False
    return True


def _engine_accepts(url: str, path: str = "") -> bool:
    try:
        parse_source(f"git+{url}@main" + (f"#subdirectory={path}" if path else ""))
    except UsageError:
        return False
    return True


@pytest.mark.parametrize("url", ["https://example.org/r.git", "http://git.local/r", "file:///srv/r",
                                 "ssh://git@example.org/r.git", "git://example.org/r", "ftp://x/r", "/srv/r"])
def test_operator_and_engine_take_the_same_git_urls(url: str) -> None:
    expected = url.startswith(tuple(f"{s}://" for s in contract.GIT_SCHEMES))
    assert _spec_accepts({"url": url}) is expected
    assert _engine_accepts(url) is expected


@pytest.mark.parametrize("path", ["data", "data/labels", "/data/", "../etc", "data/../../etc", "a..b", "x/.."])
def test_operator_and_engine_take_the_same_subdirectories(path: str) -> None:
    expected = ".." not in path
    assert _spec_accepts({"url": "https://example.org/r.git", "path": path}) is expected
    assert _engine_accepts("https://example.org/r.git", path) is expected


def _cel_prefixes(rule: str) -> set[str]:
    return set(re.findall(r"startsWith\('([a-z0-9]+://)/?'\)", rule))


def test_the_crds_url_rules_name_the_contracts_schemes() -> None:
    source = _crd("datasetsnapshots")["properties"]["spec"]["properties"]["source"]["properties"]
    git_rule = source["git"]["properties"]["url"]["x-kubernetes-validations"][0]["rule"]
    bucket_rule = source["bucket"]["properties"]["url"]["x-kubernetes-validations"][0]["rule"]
    store_rule = _crd("snapshotstores")["properties"]["spec"]["properties"]["url"]["x-kubernetes-validations"][0]
    assert _cel_prefixes(git_rule) == {f"{s}://" for s in contract.GIT_SCHEMES}
    assert _cel_prefixes(bucket_rule) == {f"{s}://" for s in contract.BUCKET_SCHEMES}
    assert set(re.findall(r"startsWith\('([a-z0-9]+:///?)'\)", store_rule["rule"])) == set(contract.STORE_PREFIXES)
    assert {p.split(":")[0] for p in contract.STORE_PREFIXES} == set(contract.STORE_SCHEMES)
    for where in (source["git"]["properties"]["path"], source["volume"]["properties"]["path"]):
        assert where["x-kubernetes-validations"][0]["rule"] == '!self.contains("..")'  # as check_subpath


def test_operator_and_engine_take_the_same_bucket_sources() -> None:
    for url, ok in (("gs://raw/annotations/", True), ("s3://raw/x/", True), ("azure://raw/x/", True),
                    ("azure://Raw/x/", False), ("ftp://raw/x/", False)):
        try:
            SnapshotSpec.from_dict({"store": "s", "source": {"bucket": {"url": url}}})
            spec_ok = True
        except SpecError:
            spec_ok = False
        try:
            engine_ok = parse_source(url).kind == "bucket"
        except UsageError:
            engine_ok = False
        assert spec_ok is engine_ok is ok, url


# -- durations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0s", "24h", "90d", "2w", "15m", "1h30m", "1.5h", "24", "h", " 24h", "-1h", "", "24h\n"])
def test_one_duration_grammar_for_the_crd_and_the_gc(text: str) -> None:
    pattern = _crd("snapshotstores")["properties"]["spec"]["properties"]["gc"]["properties"]["gracePeriod"]["pattern"]
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    # the apiserver's `$` (Go regexp) is the end of the text; Python's also matches before a final newline
    assert parsed is (re.search(pattern.replace("$", r"\Z"), text) is not None)


def test_the_gc_cronjob_passes_a_grace_the_command_accepts() -> None:
    store: dict[str, Any] = {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore",
             "metadata": {"name": "main", "uid": "u-1"},
             "spec": {"url": "gs://b/dvc", "gc": {"gracePeriod": "36h"}}}
    plan = plan_gc_cronjob(store, OperatorConfig())
    args = plan.manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    grace = args[args.index("--grace") + 1]
    assert parse_duration(grace).total_seconds() == 36 * 3600
    assert StoreSpec.from_dict(store["spec"]).gc.grace_period == grace


# -- issue 15: apply-time refusals, the same in Python ---------------------------------------------------


def test_the_store_url_limit_is_the_crds() -> None:
    assert _crd("snapshotstores")["properties"]["spec"]["properties"]["url"]["maxLength"] == contract.STORE_URL_MAX
    # four canonical URIs of the longest store, namespace and name fit the termination message
    uris = contract.snapshot_uris("gs://" + "b" * (contract.STORE_URL_MAX - 5), "n" * 63, "m" * 63, "sha256:" + "0" * 64)
    assert len(json.dumps(uris)) < contract.RESULT_LIMIT - 1000


@pytest.mark.parametrize("url, problem", [
    ("https://example.com/r.git\nx", "whitespace"),
    ("https://example.com/r .git", "whitespace"),
    ("https://bob:hunter2@example.com/r.git", "user:password"),
    ("https://ghp_token@example.com/r.git", "user:password"),
])  # fmt: skip
def test_git_urls_with_newlines_or_userinfo_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        contract.check_spec_git_url(url)
    assert contract.check_spec_git_url("https://example.com/a@b.git")  # an @ in the path is not userinfo


def test_store_urls_are_bounded_and_plain() -> None:
    with pytest.raises(ValueError, match="at most"):
        contract.check_store_url("gs://b/" + "p" * contract.STORE_URL_MAX)
    with pytest.raises(ValueError, match="whitespace"):
        contract.check_store_url("gs://b/p\n")


@pytest.mark.parametrize("text, value", [("500m", "0.5"), ("1Gi", str(2**30)), ("2", "2"), ("1e3", "1000"),
                                         ("1.5k", "1500"), (4, "4")])
def test_quantities(text: object, value: str) -> None:
    from decimal import Decimal

    assert contract.parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("bad", ["-1", "1Xi", "", "1 Gi", True])
def test_negative_or_malformed_quantities_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        contract.parse_quantity(bad)


def test_a_request_above_its_limit_and_http_with_a_token_are_refused_by_the_models() -> None:
    from terrasnap.api.models import SnapshotSpec, SpecError

    base = {"store": "main", "source": {"git": {"url": "https://example.com/r.git", "revision": "main"}}}
    with pytest.raises(SpecError, match=r"requests\.memory must be at most"):
        SnapshotSpec.from_dict({**base, "resources": {"requests": {"memory": "8Gi"}, "limits": {"memory": "1Gi"}}})
    with pytest.raises(SpecError, match="non-negative"):
        SnapshotSpec.from_dict({**base, "resources": {"requests": {"cpu": "-1"}}})
    assert SnapshotSpec.from_dict({**base, "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}})
    with pytest.raises(SpecError, match="plain http"):
        SnapshotSpec.from_dict({**base, "source": {"git": {"url": "http://example.com/r.git", "revision": "main",
                                                           "credentialsSecret": {"name": "t"}}}})


def test_durations_cannot_overflow() -> None:
    from datetime import UTC, datetime

    longest = parse_duration("99999w")
    assert datetime.now(UTC) - longest  # no OverflowError
    with pytest.raises(ValueError):
        parse_duration("999999w")


@pytest.mark.parametrize("container", ["abc", "raw-data", "a1b2", "ab", "Abc", "a--b", "-ab", "ab-", "a_b",
                                       "a" * 63, "a" * 64, "x.y"])
def test_the_crds_and_the_contract_take_the_same_azure_containers(container: str) -> None:
    rules = [r["rule"] for r in
             _crd("snapshotstores")["properties"]["spec"]["properties"]["url"]["x-kubernetes-validations"]]
    rule = next(r for r in rules if "azure://[a-z0-9]" in r)
    must, must_not = re.findall(r"self\.matches\('([^']+)'\)", rule)
    url = f"azure://{container}/dvc"
    cel_ok = re.search(must, url) is not None and re.search(must_not, url) is None
    try:
        contract.check_store_url(url)
        contract_ok = True
    except ValueError:
        contract_ok = False
    assert cel_ok is contract_ok
    assert contract_ok is (3 <= len(container) <= 63 and container.islower() and "--" not in container
                           and container[0] != "-" and container[-1] != "-" and container.replace("-", "").isalnum())
