"""The validation policy: what counts as an error, what gets repaired, where everything is reprojected.

The policy is part of the snapshot's identity (same bytes + same policy -> same snapshotID), so
`to_dict()` is canonical: every field, sorted keys, normalised values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Literal

from pyproj import CRS
from pyproj.exceptions import CRSError

InvalidGeometry = Literal["reject", "repair", "skip"]
Level = Literal["error", "warn", "ignore"]

INVALID_GEOMETRY_CHOICES: tuple[str, ...] = ("reject", "repair", "skip")
LEVEL_CHOICES: tuple[str, ...] = ("error", "warn", "ignore")
_ASSUME_RE = re.compile(r"^assume:(.+)$")


def _check_crs(value: str, what: str) -> str:
    try:
        CRS.from_user_input(value)
    except CRSError as exc:
        raise ValueError(f"{what}: {value!r} is not a CRS pyproj understands ({exc})") from None
    return value


@dataclass(frozen=True)
class Policy:
    target_crs: str = "EPSG:4326"
    invalid_geometry: InvalidGeometry = "reject"
    # "reject", or "assume:<CRS>" (e.g. assume:EPSG:32633): use that CRS for layers that declare none.
    missing_crs: str = "reject"
    # Vector layers in different CRSs: everything is reprojected anyway, but mixed inputs usually mean
    # a labelling mistake, so it is an error unless the user says otherwise.
    mixed_crs: Level = "error"
    require_same_grid: bool = True
    require_nodata: Level = "warn"
    require_cog: Level = "warn"

    def __post_init__(self) -> None:
        _check_crs(self.target_crs, "target CRS")
        self.parse_invalid_geometry(self.invalid_geometry)
        self.parse_missing_crs(self.missing_crs)
        for name in ("mixed_crs", "require_nodata", "require_cog"):
            self.parse_level(getattr(self, name), name)
        if not isinstance(self.require_same_grid, bool):
            raise ValueError(f"require_same_grid must be true or false, not {self.require_same_grid!r}")

    # -- parsing (also used by the CLI so a bad flag fails with the same message) ------------------
    @staticmethod
    def parse_invalid_geometry(value: str) -> InvalidGeometry:
        if value not in INVALID_GEOMETRY_CHOICES:
            raise ValueError(
                f"invalid_geometry must be one of {', '.join(INVALID_GEOMETRY_CHOICES)}, not {value!r}"
            )
        return value  # type: ignore[return-value]

    @staticmethod
    def parse_missing_crs(value: str) -> str | None:
        """None for "reject", else the CRS to assume; ValueError for anything else."""
        if value == "reject":
            return None
        m = _ASSUME_RE.match(value or "")
        if not m:
            raise ValueError(f"missing_crs must be 'reject' or 'assume:<CRS>' (e.g. assume:EPSG:4326), not {value!r}")
        return _check_crs(m.group(1), "missing_crs assume")

    @staticmethod
    def parse_level(value: str, name: str = "level") -> Level:
        if value not in LEVEL_CHOICES:
            raise ValueError(f"{name} must be one of {', '.join(LEVEL_CHOICES)}, not {value!r}")
        return value  # type: ignore[return-value]

    @property
    def assumed_crs(self) -> str | None:
        return self.parse_missing_crs(self.missing_crs)

    @property
    def target(self) -> CRS:
        return CRS.from_user_input(self.target_crs)

    def to_dict(self) -> dict[str, Any]:
        """Canonical form (sorted keys) for the snapshotID and reports."""
        return {f.name: getattr(self, f.name) for f in sorted(fields(self), key=lambda f: f.name)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown policy field(s): {', '.join(unknown)}")
        return cls(**data)
