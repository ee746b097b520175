"""Geometry rules on in-memory geometries (rules.check_batch): one batch, exact counts and messages."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import CRS

from terrasnap.engine.validate.findings import Collector
from terrasnap.engine.validate.policy import Policy
from terrasnap.engine.validate.rules import (
    LayerContext,
    LayerStats,
    check_batch,
    finish_layer,
    make_transformer,
)

BOWTIE = "POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))"
SQUARE = "POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))"
# a ring with its first and last points different: GEOS refuses to build it, so only WKB can carry it
UNCLOSED_WKB = (
    bytes.fromhex("01030000000100000004000000")
    + np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype="<f8").tobytes()
)


def run(
    geoms: list[object],
    mode: str = "reject",
    *,
    src: str = "EPSG:4326",
    target: str = "EPSG:4326",
    offset: int = 0,
    promote: int | None = None,
    footprint: object = None,
    rules: dict[str, str] | None = None,
):
    policy = Policy(invalid_geometry=mode, target_crs=target, rules=rules or {})  # type: ignore[arg-type]
    src_crs = CRS.from_user_input(src)
    ctx = LayerContext(
        policy, src_crs.is_geographic, make_transformer(src_crs, policy.target), promote, footprint
    )
    wkb = np.array(
        [g if (g is None or isinstance(g, bytes)) else shapely.from_wkt(g).wkb for g in geoms], dtype=object
    )
    stats = LayerStats()
    col = Collector("labels/a.geojson", policy=policy)
    keep, out, _changed = check_batch(wkb, offset, ctx, stats, col)
    finish_layer(ctx, stats, col)
    return keep, out, stats, col.finish()


def messages(findings) -> list[str]:
    return [f.message for f in findings]


def test_clean_batch_has_no_findings() -> None:
    keep, _out, stats, findings = run([SQUARE, "POLYGON ((2 2, 3 2, 3 4, 2 2))"])
    assert keep.tolist() == [True, True]
    assert findings == []
    assert stats.written == 2 and stats.invalid == 0 and stats.features == 2
    assert stats.bbox == [0.0, 0.0, 3.0, 4.0]
    assert dict(stats.types_out) == {"Polygon": 2}


def test_bowtie_reject_is_an_error_with_reason_and_location() -> None:
    keep, _, stats, findings = run([SQUARE, BOWTIE], offset=16)
    assert keep.tolist() == [True, False]
    assert messages(findings) == [
        "labels/a.geojson: feature 17: Self-intersection at or near point (0.5 0.5) (is_valid)"
    ]
    assert findings[0].severity == "error" and findings[0].feature == 17
    assert (
        stats.invalid == 1 and stats.rejected == 1 and dict(stats.invalid_reasons) == {"Self-intersection": 1}
    )


def test_bowtie_repair_keeps_both_lobes() -> None:
    keep, out, stats, findings = run([BOWTIE], "repair")
    assert keep.tolist() == [True]
    g = out[0]
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2
    assert g.area == pytest.approx(0.5)  # buffer(0) would give 0.25: one lobe lost
    assert stats.repaired == 1 and stats.area_before == 0.0 and stats.area_after == pytest.approx(0.5)
    assert dict(stats.type_changes) == {"Polygon->MultiPolygon": 1}
    assert [f.severity for f in findings] == ["warning"]
    assert findings[0].message == (
        "labels/a.geojson: feature 0: Self-intersection at or near point (0.5 0.5): repaired with make_valid: "
        "Polygon area 0 -> MultiPolygon area 0.5 (repaired)"
    )


def test_bowtie_skip_drops_and_counts() -> None:
    keep, _, stats, findings = run([BOWTIE, SQUARE], "skip")
    assert keep.tolist() == [False, True]
    assert stats.skipped == 1 and stats.written == 1 and stats.rejected == 0
    assert [(f.rule, f.severity, f.feature) for f in findings] == [("skipped", "warning", 0)]
    assert "Self-intersection" in findings[0].message


def test_repair_keeps_only_polygonal_parts_of_a_collection() -> None:
    spike = "POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0, 0 -5, 0 0))"  # make_valid -> polygon + dangling line
    assert shapely.make_valid(shapely.from_wkt(spike)).geom_type == "GeometryCollection"
    keep, out, stats, _ = run([spike], "repair")
    assert keep.tolist() == [True]
    assert out[0].geom_type == "Polygon" and out[0].area == pytest.approx(100)
    assert stats.repaired == 1 and dict(stats.type_changes) == {}


def test_repair_that_collapses_drops_with_warning() -> None:
    keep, _, stats, findings = run(["POLYGON ((0 0, 1 0, 2 0, 0 0))"], "repair")
    assert keep.tolist() == [False]
    assert stats.collapsed == 1
    assert (
        findings[0].rule == "repair-collapsed"
        and "make_valid left no polygon geometry" in findings[0].message
    )


def test_nan_coordinate_is_an_error_even_under_repair() -> None:
    nan_poly = (
        bytes.fromhex("01030000000100000004000000")
        + np.array([[0, 0], [np.nan, 0], [1, 1], [0, 0]], dtype="<f8").tobytes()
    )
    for mode in ("reject", "repair"):
        keep, _, stats, findings = run([nan_poly, SQUARE], mode)
        assert keep.tolist() == [False, True]
        assert messages(findings) == [
            "labels/a.geojson: feature 0: non-finite coordinate (nan 0) (coord-nonfinite)"
        ]
        assert findings[0].severity == "error"
    keep, _, stats, findings = run([nan_poly], "skip")
    assert keep.tolist() == [False] and stats.skipped == 1 and findings[0].severity == "warning"


def test_infinite_coordinate() -> None:
    _, _, _, findings = run([shapely.Point(np.inf, 1).wkb])
    assert messages(findings) == [
        "labels/a.geojson: feature 0: non-finite coordinate (inf 1) (coord-nonfinite)"
    ]


def test_latitude_out_of_range_in_geographic_crs() -> None:
    keep, _, stats, findings = run(["POINT (10 95)", "POINT (-181 0)", "POINT (180 90)"])
    assert keep.tolist() == [False, False, True]
    assert messages(findings) == [
        "labels/a.geojson: feature 0: coordinate (10 95) outside lon/lat range [-180, 180] x [-90, 90] (coord-range)",
        "labels/a.geojson: feature 1: coordinate (-181 0) outside lon/lat range [-180, 180] x [-90, 90] (coord-range)",
    ]
    assert dict(stats.invalid_reasons) == {"Coordinate out of range": 2}


def test_projected_crs_has_no_lonlat_range_check() -> None:
    keep, out, _, findings = run(["POINT (500000 5000000)"], src="EPSG:32633")
    assert keep.tolist() == [True] and findings == []
    assert out[0].x == pytest.approx(15.0) and out[0].y == pytest.approx(45.1536, abs=1e-3)


def test_null_and_empty_geometries_are_dropped_with_warnings() -> None:
    keep, _, stats, findings = run([None, "POLYGON EMPTY", SQUARE])
    assert keep.tolist() == [False, False, True]
    assert stats.null == 1 and stats.empty == 1 and stats.written == 1
    assert messages(findings) == [
        "labels/a.geojson: feature 0: null geometry; dropped from the normalized output (geometry-null)",
        "labels/a.geojson: feature 1: empty geometry; dropped from the normalized output (geometry-empty)",
    ]
    assert {f.severity for f in findings} == {"warning"}


def test_unclosed_ring_reject_repair_skip() -> None:
    with pytest.raises(shapely.errors.GEOSException):
        shapely.from_wkb(UNCLOSED_WKB)
    keep, _, _, findings = run([UNCLOSED_WKB])
    assert keep.tolist() == [False]
    assert messages(findings) == [
        "labels/a.geojson: feature 0: polygon ring is not closed (first and last points differ) (ring-unclosed)"
    ]
    keep, out, stats, findings = run([UNCLOSED_WKB], "repair")
    assert keep.tolist() == [True] and out[0].equals(shapely.from_wkt(SQUARE)) and stats.repaired == 1
    assert findings[0].severity == "warning"
    keep, _, stats, _ = run([UNCLOSED_WKB], "skip")
    assert keep.tolist() == [False] and stats.skipped == 1


def test_too_short_ring() -> None:
    _, _, stats, findings = run(["POLYGON ((0 0, 1 0, 0 0))"])
    assert [(f.rule, f.severity) for f in findings] == [("ring-too-short", "error")]
    assert "Too few points" in findings[0].message
    assert dict(stats.invalid_reasons) == {"Too few points in geometry component": 1}


def test_mixed_geometry_families_warn_but_polygon_multipolygon_does_not() -> None:
    _, _, _, findings = run([SQUARE, "POINT (0 0)"])
    assert messages(findings) == [
        "labels/a.geojson: mixed geometry types: Point (1), Polygon (1) (geometry-mixed)"
    ]
    _, _, _, findings = run([SQUARE, "MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)))"])
    assert findings == []


def test_promotion_to_multi_for_declared_multi_layers() -> None:
    keep, out, stats, _ = run([SQUARE, "MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)))"], promote=6)
    assert [g.geom_type for g in out[keep]] == ["MultiPolygon", "MultiPolygon"]
    assert dict(stats.types_out) == {"MultiPolygon": 2}


def test_reprojection_to_target() -> None:
    _keep, out, stats, _ = run(["POINT (1 1)"], target="EPSG:3857")
    assert out[0].x == pytest.approx(111319.49, abs=0.01)
    assert stats.bbox is not None and stats.bbox[0] == pytest.approx(111319.49, abs=0.01)


def test_reprojection_to_non_finite_is_an_error() -> None:
    # the far side of the globe has no image in an orthographic projection
    keep, _, _, findings = run(["POINT (0 0)", "POINT (180 0)"], target="+proj=ortho +lat_0=0 +lon_0=0")
    assert keep.tolist() == [True, False]
    assert [(f.rule, f.feature) for f in findings] == [("reproject", 1)]
    assert "reprojecting (180 0) to +proj=ortho" in findings[0].message
    assert "non-finite" in findings[0].message


def test_findings_are_capped_but_counts_are_exact() -> None:
    _keep, _, stats, findings = run([BOWTIE] * 25)
    assert stats.invalid == 25
    per_feature = [f for f in findings if f.feature is not None]
    summary = [f for f in findings if f.feature is None]
    assert len(per_feature) == 10 and [f.feature for f in per_feature] == list(range(10))
    assert len(summary) == 1 and summary[0].count == 15
    assert "15 more feature(s) fail is_valid (first of them: feature 10)" in summary[0].message
    assert sum(f.count for f in findings) == 25


def test_footprint_counts_features_outside() -> None:
    fp = shapely.box(0, 0, 2, 2)
    shapely.prepare(fp)
    _, _, stats, findings = run([SQUARE, "POINT (5 5)", "POINT (1 1)"], footprint=fp)
    assert stats.outside_footprint == 1
    assert (
        messages(findings)[-1]
        == "labels/a.geojson: 1 of 3 features lie outside the imagery footprint (footprint)"
    )
    assert findings[-1].count == 1


def test_unclosed_and_self_intersecting_counts_once() -> None:
    # an unclosed bow-tie: closing the ring (parse) still leaves a self-intersection (is_valid)
    wkb = bytes.fromhex("01030000000100000004000000") + np.array(
        [[0, 0], [1, 1], [1, 0], [0, 1]], dtype="<f8").tobytes()
    keep, out, stats, findings = run([wkb], "repair")
    assert keep.tolist() == [True] and out[0].area == pytest.approx(0.5)
    assert stats.invalid == 1 and stats.repaired == 1
    assert dict(stats.invalid_reasons) == {"Unclosed ring": 1, "Self-intersection": 1}
    assert [f.rule for f in findings] == ["ring-unclosed", "repaired"]


def test_is_valid_at_warning_keeps_the_geometry_as_it_came_and_off_says_nothing() -> None:
    keep, out, stats, findings = run([SQUARE, BOWTIE], rules={"is_valid": "warning"})
    assert keep.tolist() == [True, True] and stats.rejected == 0 and stats.invalid == 1
    assert [(f.rule, f.severity) for f in findings] == [("is_valid", "warning")]
    assert shapely.equals_exact(out[1], shapely.from_wkt(BOWTIE))  # unchanged, not repaired
    keep, _, stats, findings = run([SQUARE, BOWTIE], rules={"is_valid": "off"})
    assert keep.tolist() == [True, True] and findings == [] and stats.invalid == 1  # still counted in stats


def test_a_rule_raised_to_error_rejects_the_feature() -> None:
    keep, _, _, findings = run([SQUARE, None], rules={"geometry-null": "error"})
    assert [(f.rule, f.severity) for f in findings] == [("geometry-null", "error")]
    assert keep.tolist() == [True, False]
    _, _, _, findings = run([BOWTIE], "repair", rules={"repaired": "error"})
    assert [(f.rule, f.severity) for f in findings] == [("repaired", "error")]


def test_a_non_downgradable_rule_stays_an_error() -> None:
    with pytest.raises(ValueError, match="cannot be set to warning"):
        run([UNCLOSED_WKB], rules={"ring-unclosed": "warning"})
    keep, _, _, findings = run([UNCLOSED_WKB])
    assert keep.tolist() == [False] and [(f.rule, f.severity) for f in findings] == [("ring-unclosed", "error")]
