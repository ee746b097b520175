"""The engine's Policy: built from a spec.validation object, canonical (it feeds the snapshotID), clear errors."""

from __future__ import annotations

import json

import pytest

from terrasnap.api import policy as schema
from terrasnap.engine.manifest import FileRow, snapshot_id
from terrasnap.engine.validate import Policy


def test_defaults_and_canonical_dict() -> None:
    d = Policy().to_dict()
    assert list(d) == sorted(d) == ["invalidGeometry", "missingCRS", "rules", "targetCRS"]
    assert d["targetCRS"] == "EPSG:4326" and d["invalidGeometry"] == "reject" and d["missingCRS"] == "reject"
    assert d["rules"] == {r.name: r.default for r in schema.RULES} and list(d["rules"]) == sorted(d["rules"])
    assert d["rules"]["crs-mixed"] == "error" and d["rules"]["raster-cog"] == "warning"
    assert Policy.from_spec(d) == Policy() and Policy.from_dict(d) == Policy()
    assert Policy(invalid_geometry="repair").to_dict() != d


def test_a_policy_with_its_defaults_spelled_out_is_the_policy_left_empty() -> None:
    empty = Policy.from_spec({})
    spelled = Policy.from_spec({
        "targetCRS": "EPSG:4326", "invalidGeometry": "reject", "missingCRS": "reject",
        "rules": {r.name: r.default for r in schema.RULES},
    })
    some = Policy.from_spec({"rules": {"crs-mixed": "error", "raster-cog": "warning"}})
    assert empty == spelled == some == Policy()
    assert json.dumps(empty.to_dict()) == json.dumps(spelled.to_dict()) == json.dumps(some.to_dict())
    rows = [FileRow("raw/a.geojson", "raw", "vector", 1, "0" * 64, "0" * 32)]
    assert snapshot_id(rows, empty.to_dict()) == snapshot_id(rows, spelled.to_dict())
    # and a real change of policy is a different id
    lenient = Policy.from_spec({"rules": {"crs-mixed": "warning"}})
    assert snapshot_id(rows, lenient.to_dict()) != snapshot_id(rows, empty.to_dict())


def test_severity_follows_the_rule_level() -> None:
    p = Policy(rules={"crs-mixed": "warning", "raster-cog": "off", "raster-nodata": "error"})
    assert p.severity("crs-mixed") == "warning"
    assert p.severity("raster-cog") is None  # off: not emitted
    assert p.severity("raster-nodata") == "error"
    assert p.severity("parse") == "error"
    # a hint (a note beside the verdict) is at most a warning, and silent when the rule is off
    assert p.severity("rfc7946-crs", hint=True) == "warning" and p.severity("raster-cog", hint=True) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"invalidGeometry": "fix"}, "invalidGeometry must be one of reject, repair, skip, not 'fix'"),
        ({"missingCRS": "assume"}, "missingCRS must be 'reject' or 'assume:<CRS>'"),
        ({"missingCRS": "EPSG:4326"}, "missingCRS must be 'reject' or 'assume:<CRS>'"),
        ({"missingCRS": "assume:EPSG:999999"}, "missingCRS assume: 'EPSG:999999' is not a CRS"),
        ({"targetCRS": "EPSG:nope"}, "targetCRS: 'EPSG:nope' is not a CRS"),
        ({"rules": {"crs-mix": "warning"}}, "unknown rule 'crs-mix'; valid rules: coord-nonfinite, coord-range"),
        ({"rules": {"raster-nodata": "maybe"}}, "rules.raster-nodata: level must be one of error, warning, off"),
        ({"rules": {"raster-cog": False}}, 'write "off" in quotes'),
        ({"rules": {"parse": "warning"}}, "rules.parse: cannot be set to warning (allowed: error): nothing of"),
        ({"rules": {"coord-nonfinite": "off"}}, "rules.coord-nonfinite: cannot be set to off"),
        ({"rules": {"repaired": "off"}}, "rules.repaired: cannot be set to off (allowed: error, warning)"),
        ({"rules": ["crs-mixed"]}, "rules must be an object"),
        ({"target_crs": "EPSG:4326"}, "unknown field(s) target_crs; valid fields: targetCRS, invalidGeometry"),
    ],
)
def test_bad_values_raise_clear_errors(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        Policy.from_spec(spec)
    assert message in str(exc.value)


def test_non_downgradable_rules_may_be_raised() -> None:
    assert Policy(rules={"repaired": "error"}).severity("repaired") == "error"
    assert Policy(rules={"parse": "error"}) == Policy()


def test_parse_missing_crs() -> None:
    assert Policy.parse_missing_crs("reject") is None
    assert Policy.parse_missing_crs("assume:EPSG:32633") == "EPSG:32633"
    assert Policy(missing_crs="assume:EPSG:3035").assumed_crs == "EPSG:3035"


def test_the_policy_travels_to_worker_processes() -> None:
    import pickle

    p = Policy(rules={"crs-mixed": "warning"})
    assert pickle.loads(pickle.dumps(p)) == p and hash(p) == hash(Policy.from_spec(p.to_dict()))
