"""The engine's validation policy, built from the one schema in `terrasnap.api.policy`.

`Policy.from_spec` takes exactly the CRD's `spec.validation` object (the same document a `--policy` file
and the DVC stage's policy.json hold). The policy is part of the snapshot's identity (same bytes + same
policy -> same snapshotID), so `to_dict()` is canonical: every field and every rule's level, defaults
filled in, sorted keys. A policy with its defaults spelled out is equal to one left empty.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pyproj import CRS
from pyproj.exceptions import CRSError

from terrasnap.api import policy as schema
from terrasnap.api.policy import Level, PolicyError, Severity

InvalidGeometry = Literal["reject", "repair", "skip"]
INVALID_GEOMETRY_CHOICES = schema.INVALID_GEOMETRY_CHOICES
LEVEL_CHOICES = schema.LEVELS
_DEFAULTS = {f.name: f.default for f in schema.FIELDS}


def _check_crs(value: str, what: str) -> str:
    try:
        CRS.from_user_input(value)
    except CRSError as exc:
        raise PolicyError(f"{what}: {value!r} is not a CRS pyproj understands ({exc})") from None
    return value


@dataclass(frozen=True)
class Policy:
    target_crs: str = _DEFAULTS["targetCRS"]
    invalid_geometry: InvalidGeometry = _DEFAULTS["invalidGeometry"]  # type: ignore[assignment]
    # "reject", or "assume:<CRS>" (e.g. assume:EPSG:32633): use that CRS for layers that declare none.
    missing_crs: str = _DEFAULTS["missingCRS"]
    # rule -> level; only the rules to change need be given: every rule's level is filled in here.
    rules: Mapping[str, Level] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_crs(self.target_crs, "targetCRS")
        self.parse_invalid_geometry(self.invalid_geometry)
        self.parse_missing_crs(self.missing_crs)
        # a plain dict (picklable for the worker processes), complete and sorted
        object.__setattr__(self, "rules", schema.resolve_levels(self.rules))

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items())))

    # -- parsing (also used by the CLI so a bad flag fails with the same message) ------------------
    @staticmethod
    def parse_invalid_geometry(value: str) -> InvalidGeometry:
        if value not in INVALID_GEOMETRY_CHOICES:
            raise PolicyError(f"invalidGeometry must be one of {', '.join(INVALID_GEOMETRY_CHOICES)}, not {value!r}")
        return value  # type: ignore[return-value]

    @staticmethod
    def parse_missing_crs(value: str) -> str | None:
        """None for "reject", else the CRS to assume; PolicyError (a ValueError) for anything else."""
        assumed = schema.assumed_crs(value)
        return None if assumed is None else _check_crs(assumed, "missingCRS assume")

    # -- levels ---------------------------------------------------------------------------------------
    def level(self, rule: str) -> Level:
        try:
            return self.rules[rule]
        except KeyError:
            raise KeyError(f"rule {rule!r} is not in the rule table (terrasnap.api.policy.RULES)") from None

    def severity(self, rule: str, hint: bool = False) -> Severity | None:
        """A finding's severity under this policy: the rule's level, or None (off: not emitted).
        A hint (a note beside the rule's real verdict, e.g. "assuming EPSG:32633") is at most a warning."""
        level = self.level(rule)
        if level == "off":
            return None
        return "warning" if hint else level  # type: ignore[return-value]

    @property
    def assumed_crs(self) -> str | None:
        return self.parse_missing_crs(self.missing_crs)

    @property
    def target(self) -> CRS:
        return _crs(self.target_crs)

    # -- the spec's form ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Canonical `spec.validation` form (sorted keys, every rule) for the snapshotID, reports and policy.json."""
        return {
            "invalidGeometry": self.invalid_geometry,
            "missingCRS": self.missing_crs,
            "rules": dict(sorted(self.rules.items())),
            "targetCRS": self.target_crs,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Policy:
        """From a `spec.validation` object (CRD field names); missing fields take their defaults."""
        spec = spec or {}
        schema.check_spec_fields(spec)
        return cls(
            target_crs=spec.get("targetCRS") or _DEFAULTS["targetCRS"],
            invalid_geometry=cls.parse_invalid_geometry(spec.get("invalidGeometry") or _DEFAULTS["invalidGeometry"]),
            missing_crs=spec.get("missingCRS") or _DEFAULTS["missingCRS"],
            rules=schema.resolve_levels(spec.get(schema.RULES_FIELD)),
        )

    from_dict = from_spec  # policy.json holds to_dict()'s output, which is a spec


@functools.lru_cache(maxsize=32)
def _crs(text: str) -> CRS:
    # asked for per file and per layer (~0.1 ms to build); a pyproj CRS is not changed by its users
    return CRS.from_user_input(text)
