"""Policy: defaults, canonical form (it feeds the snapshotID), clear errors for bad values."""

from __future__ import annotations

import json

import pytest

from terrasnap.engine.validate import Policy


def test_defaults_and_canonical_dict() -> None:
    p = Policy()
    d = p.to_dict()
    assert list(d) == sorted(d)
    assert d == {
        "invalid_geometry": "reject",
        "missing_crs": "reject",
        "mixed_crs": "error",
        "require_cog": "warn",
        "require_nodata": "warn",
        "require_same_grid": True,
        "target_crs": "EPSG:4326",
    }
    # same policy -> same serialization; a different one -> different
    assert json.dumps(Policy().to_dict()) == json.dumps(d)
    assert Policy(invalid_geometry="repair").to_dict() != d
    assert Policy.from_dict(d) == p


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"invalid_geometry": "fix"}, "invalid_geometry must be one of reject, repair, skip, not 'fix'"),
        ({"missing_crs": "assume"}, "missing_crs must be 'reject' or 'assume:<CRS>'"),
        ({"missing_crs": "EPSG:4326"}, "missing_crs must be 'reject' or 'assume:<CRS>'"),
        ({"missing_crs": "assume:EPSG:999999"}, "missing_crs assume: 'EPSG:999999' is not a CRS"),
        ({"target_crs": "EPSG:nope"}, "target CRS: 'EPSG:nope' is not a CRS"),
        ({"require_nodata": "maybe"}, "require_nodata must be one of error, warn, ignore"),
        ({"mixed_crs": "fatal"}, "mixed_crs must be one of error, warn, ignore"),
    ],
)
def test_bad_values_raise_clear_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_parse_missing_crs() -> None:
    assert Policy.parse_missing_crs("reject") is None
    assert Policy.parse_missing_crs("assume:EPSG:32633") == "EPSG:32633"
    assert Policy(missing_crs="assume:EPSG:3035").assumed_crs == "EPSG:3035"


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown policy field"):
        Policy.from_dict({"target_crs": "EPSG:4326", "bogus": 1})
