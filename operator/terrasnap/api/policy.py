"""The validation policy, written once: its fields, defaults, choices and the rule table.

Pure (no third-party imports). The CRD's `spec.validation` schema (`validation_schema()`), the CLI's
policy options, `api.models.ValidationPolicy` and the engine's `Policy` all come from here, and
tests/unit/test_policy_schema.py checks each of them against it field by field.

A policy document is exactly the CRD's `spec.validation` object, with the same (camelCase) names:

    {"targetCRS": "EPSG:4326", "invalidGeometry": "repair", "missingCRS": "reject",
     "rules": {"crs-mixed": "warning", "raster-cog": "off"}}

Every finding names its rule; a rule's level (`error | warning | off`, as in ruff and eslint) decides
what its findings are: an error rejects the snapshot, a warning is reported and counted, off is neither
reported nor counted. A rule whose downgrade would let a snapshot publish with data lost or altered
without a word refuses to go below its default, and says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["error", "warning", "off"]
Severity = Literal["error", "warning"]  # a finding's: a level that is not off
LEVELS: tuple[Level, ...] = ("error", "warning", "off")
_RANK = {"off": 0, "warning": 1, "error": 2}


class PolicyError(ValueError):
    """A policy value the engine cannot use; the message names the field (or rule) and the valid values."""


@dataclass(frozen=True)
class Field:
    """One scalar field of `spec.validation`."""

    name: str  # the CRD / policy-file name
    flag: str  # the CLI option
    default: str
    description: str
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # what the CRD (and api.models) accept; the engine also accepts any pyproj CRS


FIELDS: tuple[Field, ...] = (
    Field("targetCRS", "--target-crs", "EPSG:4326",
          "CRS every vector layer is normalized to, as EPSG:<code>.", pattern=r"^EPSG:[0-9]+$"),
    Field("invalidGeometry", "--invalid-geometry", "reject",
          "What to do with invalid geometries - reject the snapshot, repair them (recorded in the manifest), "
          "or skip the features.", choices=("reject", "repair", "skip")),
    Field("missingCRS", "--missing-crs", "reject",
          "What to do with layers that declare no CRS - reject, or assume:EPSG:<code>.",
          pattern=r"^(reject|assume:EPSG:[0-9]+)$"),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
RULES_FIELD = "rules"
RULE_FLAG = "--rule"
POLICY_FILE_FLAG = "--policy"
SPEC_FIELDS: tuple[str, ...] = (*(f.name for f in FIELDS), RULES_FIELD)
INVALID_GEOMETRY_CHOICES: tuple[str, ...] = FIELD_BY_NAME["invalidGeometry"].choices or ()


@dataclass(frozen=True)
class Rule:
    name: str
    default: Level
    checks: str  # one line: what the rule finds
    scope: Literal["vector", "raster", "set", "source"]
    downgradable: bool = True
    # For a rule that refuses a downgrade: why. For the others: what a lower level means for the data.
    note: str = ""

    def allowed(self) -> tuple[Level, ...]:
        """The levels this rule may be set to (its default and above, unless it is downgradable)."""
        if self.downgradable:
            return LEVELS
        return tuple(lv for lv in LEVELS if _RANK[lv] >= _RANK[self.default])


_REPAIR_RECORD = ("these findings are the only per-feature record of what invalidGeometry did to the data; "
                  "they can be raised to error (a CI gate), not hidden")

RULES: tuple[Rule, ...] = (
    # -- every file -----------------------------------------------------------------------------
    Rule("parse", "error", "unreadable, empty or malformed file (the parser's message, line and column)", "source",
         False, "nothing of the file could be read: it would be published unvalidated and missing from normalized/"),
    Rule("internal", "error", "validation crashed on this file (the exception says why)", "source",
         False, "the file was not validated at all: a downgrade would publish whatever it holds"),
    Rule("source", "error", "the source tree itself is refused (symlinks that leave it, no files)", "source",
         False, "files outside the source, or none, are never snapshotted"),
    Rule("format-mismatch", "error",
         "content that is not the format its extension names (an OGR VRT named .geojson, a GDAL VRT named .tif)",
         "source", False,
         "GDAL would open it by content with another driver, and a VRT reads any file the process can: "
         "the file is never opened, so nothing of it could be validated or normalized"),
    Rule("external-reference", "error",
         "a file that makes the reader fetch or open something else (a GeoJSON `crs` link, a path with '!')",
         "source", False,
         "following it would read files outside the source or reach the network; the file is not opened"),
    # -- vector layers --------------------------------------------------------------------------
    Rule("not-geoparquet", "warning", "a .parquet without `geo` metadata: a table, kept raw, not normalized",
         "vector", note="the table is kept as a raw file either way"),
    Rule("no-geometry", "warning", "a layer without a geometry column: kept raw, not normalized", "vector",
         note="the layer is kept as a raw file either way"),
    Rule("crs-missing", "error", "a layer without a CRS (missingCRS: reject); a warning when missingCRS assumes one",
         "vector", False,
         "a layer without a CRS cannot be reprojected, so it would be missing from normalized/; "
         "say which CRS it is with missingCRS: assume:EPSG:<code>"),
    Rule("crs-mixed", "error", "vector layers in different CRSs across files", "set",
         note="every layer is reprojected to targetCRS anyway; mixed inputs often mean a labelling mistake"),
    Rule("rfc7946-crs", "error",
         "a GeoJSON declaring a projected CRS in the legacy `crs` member (RFC 7946 GeoJSON is WGS84 lon/lat); "
         "notes (warnings) for a harmless legacy member or projected-looking coordinates without one",
         "vector", note="at warning the declared CRS is used (as GDAL does) and the layer is reprojected"),
    Rule("coord-nonfinite", "error", "NaN/Inf coordinate (also NaN/Infinity literals anywhere in a GeoJSON)",
         "vector", False,
         "a non-finite coordinate cannot be written or reprojected (GDAL reads a NaN point as empty, silently "
         "losing it); invalidGeometry: skip drops such features, counted"),
    Rule("coord-range", "error", "lon/lat outside [-180, 180] x [-90, 90] in a geographic CRS", "vector", False,
         "such a coordinate is no place on Earth: reprojecting it gives wrong or non-finite coordinates; "
         "declare the layer's real CRS, or invalidGeometry: skip drops the features, counted"),
    Rule("wkb", "error", "a geometry whose WKB cannot be parsed", "vector", False,
         "an unparseable geometry can only be lost; invalidGeometry: skip drops it, counted"),
    Rule("ring-unclosed", "error", "a polygon ring whose first and last points differ", "vector", False,
         "GEOS cannot build an unclosed ring, so the feature could only be dropped silently; "
         "invalidGeometry: repair closes the ring, skip drops the feature, counted"),
    Rule("ring-too-short", "error", "a polygon ring with fewer than 4 points", "vector",
         note="at warning or off the geometry is kept exactly as it is in the source (still invalid)"),
    Rule("is_valid", "error", "OGC validity (GEOS's reason and location), under invalidGeometry: reject", "vector",
         note="at warning or off invalid geometries are kept exactly as they are in the source"),
    Rule("repaired", "warning", "a geometry repaired with make_valid (area and type before/after)", "vector",
         False, _REPAIR_RECORD),
    Rule("repair-collapsed", "warning", "make_valid left nothing of the feature's own dimension: dropped",
         "vector", False, _REPAIR_RECORD),
    Rule("skipped", "warning", "a feature dropped under invalidGeometry: skip", "vector", False, _REPAIR_RECORD),
    Rule("geometry-null", "warning", "a null geometry: dropped from the normalized output (it carries no shape)",
         "vector", note="the feature is dropped either way and counted in the summary"),
    Rule("geometry-empty", "warning", "an empty geometry: dropped from the normalized output", "vector",
         note="the feature is dropped either way and counted in the summary"),
    Rule("geometry-mixed", "warning", "several geometry families in one layer (Polygon+MultiPolygon is one)",
         "vector"),
    Rule("reproject", "error", "no transformation to targetCRS, or non-finite results", "vector", False,
         "the features cannot be written in targetCRS: normalized/ would lose them or hold garbage"),
    Rule("footprint", "warning", "labels outside the union of the imagery footprints", "set"),
    # -- rasters (headers only) -----------------------------------------------------------------
    Rule("raster-crs-missing", "error", "a raster without a CRS (a warning when missingCRS assumes one)", "raster",
         note="at warning the raster is kept as it is and left out of the grid and footprint checks"),
    Rule("raster-transform", "error", "a missing, identity or degenerate geotransform (GCP-only rasters too)",
         "raster", note="at warning the raster is kept as it is and left out of the grid and footprint checks"),
    Rule("raster-rotated", "warning", "a rotated or sheared geotransform", "raster"),
    Rule("raster-nodata", "warning", "nodata is not set", "raster"),
    Rule("raster-truncated", "error",
         "a GeoTIFF whose tile/strip byte ranges run past the end of the file (an interrupted upload), or "
         "whose blocks fail to decode under raster-decode", "raster", False,
         "the missing pixels would be published as if they were data"),
    Rule("raster-decode", "off",
         "decode every block of every band (a full read of the pixels; off: headers and TIFF tags only); "
         "a block that fails is a raster-truncated error", "raster",
         note="at warning or error every block is decoded; the level of a failed block is raster-truncated's"),
    Rule("raster-cog", "warning", "not a Cloud-Optimized GeoTIFF: not tiled, no overviews, or a non-COG layout",
         "raster"),
    Rule("raster-grid", "error",
         "rasters not on one pixel grid (CRS, pixel size, origins a whole number of pixels apart)", "set",
         note="at warning the report lists the grids and which files share each (e.g. one per UTM zone)"),
    Rule("raster-consistency", "warning", "dtype or band count differs between rasters", "set"),
)
RULE_BY_NAME = {r.name: r for r in RULES}
RULE_NAMES: tuple[str, ...] = tuple(sorted(RULE_BY_NAME))


def default_levels() -> dict[str, Level]:
    return {r.name: r.default for r in sorted(RULES, key=lambda r: r.name)}


def parse_level(rule: str, level: Any, where: str = RULES_FIELD) -> Level:
    """One rule's level, checked: a known rule, a known level, and no downgrade a rule refuses."""
    spec = RULE_BY_NAME.get(rule) if isinstance(rule, str) else None
    if spec is None:
        raise PolicyError(f"{where}: unknown rule {rule!r}; valid rules: {', '.join(RULE_NAMES)}")
    if level is False:  # YAML 1.1 (kubectl, PyYAML) reads an unquoted off as the boolean false
        raise PolicyError(f"{where}.{rule}: level must be one of {', '.join(LEVELS)}, not false "
                          '(in YAML write "off" in quotes: an unquoted off is the boolean false)')
    if level not in LEVELS:
        raise PolicyError(f"{where}.{rule}: level must be one of {', '.join(LEVELS)}, not {level!r}")
    if level not in spec.allowed():
        raise PolicyError(f"{where}.{rule}: cannot be set to {level} (allowed: {', '.join(spec.allowed())}): "
                          f"{spec.note}")
    return level  # type: ignore[no-any-return]


def resolve_levels(rules: Mapping[str, Any] | None, where: str = RULES_FIELD) -> dict[str, Level]:
    """Every rule's level (defaults filled in, sorted by name); raises PolicyError for a bad entry."""
    if rules is not None and not isinstance(rules, Mapping):
        raise PolicyError(f"{where} must be an object of rule: level")
    levels = default_levels()
    for rule, level in sorted((rules or {}).items(), key=lambda kv: str(kv[0])):
        levels[rule] = parse_level(rule, level, where)
    return levels


def parse_rule_flag(text: str) -> tuple[str, Level]:
    """`RULE=LEVEL` (the CLI's --rule) -> (rule, level)."""
    rule, sep, level = text.partition("=")
    if not sep:
        raise PolicyError(f"{RULE_FLAG} {text!r}: expected RULE=LEVEL (e.g. crs-mixed=warning); "
                          f"levels: {', '.join(LEVELS)}")
    rule, level = rule.strip(), level.strip()
    return rule, parse_level(rule, level, RULE_FLAG)


_ASSUME = re.compile(r"^assume:(.+)$")


def assumed_crs(missing_crs: str) -> str | None:
    """None for `reject`, else the CRS to assume (not checked against pyproj: the engine does that)."""
    if missing_crs == "reject":
        return None
    m = _ASSUME.match(missing_crs or "")
    if not m:
        raise PolicyError(f"missingCRS must be 'reject' or 'assume:<CRS>' (e.g. assume:EPSG:4326), "
                          f"not {missing_crs!r}")
    return m.group(1)


def check_spec_fields(spec: Mapping[str, Any], where: str = "validation") -> None:
    """Unknown fields and non-string scalars in a `spec.validation` object."""
    if not isinstance(spec, Mapping):
        raise PolicyError(f"{where} must be an object")
    unknown = sorted(str(k) for k in spec if k not in SPEC_FIELDS)
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(SPEC_FIELDS)}")
    for f in FIELDS:
        value = spec.get(f.name)
        if value is not None and not isinstance(value, str):
            raise PolicyError(f"{where}.{f.name} must be a string, not {value!r}")
        if value is not None and f.choices and value not in f.choices:
            raise PolicyError(f"{where}.{f.name} must be one of {', '.join(f.choices)}, not {value!r}")


# --- the CRD's schema, generated --------------------------------------------------------------------

def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def validation_schema() -> dict[str, Any]:
    """The CRD's `spec.validation` schema (crds/terrasnap.io_datasetsnapshots.yaml holds exactly this)."""
    props: dict[str, Any] = {}
    for f in FIELDS:
        p: dict[str, Any] = {"type": "string", "description": f.description, "default": f.default}
        if f.choices:
            p["enum"] = list(f.choices)
        if f.pattern:
            p["pattern"] = f.pattern
        props[f.name] = p
    checks = [{"rule": f"self.all(k, k in {_cel_list(RULE_NAMES)})",
               "message": f"unknown rule; valid rules: {', '.join(RULE_NAMES)}"}]
    for r in sorted(RULES, key=lambda r: r.name):
        if not r.downgradable:
            checks.append({"rule": f'!("{r.name}" in self) || self["{r.name}"] in {_cel_list(r.allowed())}',
                           "message": f"rule {r.name} cannot be set below {r.default}: {r.note}"})
    props[RULES_FIELD] = {
        "type": "object",
        "description": ("Level of each validation rule: error (rejects the snapshot), warning (reported and "
                        "counted) or off (in YAML write \"off\" in quotes: a bare off is the boolean false). Unlisted "
                        "rules keep their defaults; `terrasnap rules` prints the table."),
        "maxProperties": len(RULES),
        "additionalProperties": {"type": "string", "enum": list(LEVELS)},
        "x-kubernetes-validations": checks,
    }
    return {
        "type": "object",
        "description": "The validation policy. The same data under the same policy gives the same snapshot ID.",
        "default": {},
        "properties": props,
    }


def rule_table() -> list[dict[str, Any]]:
    """The rule table as `terrasnap rules --json` prints it."""
    return [{"name": r.name, "default": r.default, "downgradable": r.downgradable, "scope": r.scope,
             "levels": list(r.allowed()), "checks": r.checks, "note": r.note} for r in RULES]
