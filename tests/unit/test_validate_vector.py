"""validate_vector on real files of every supported format, written to tmp_path by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely

from terrasnap.engine.validate import Policy, VectorResult, check_vector_set, validate_vector
from terrasnap.engine.validate import vector as vector_mod

BOWTIE = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
SQUARE = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]


def feature(geometry: dict[str, Any] | None, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def poly(ring: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring]}


def write_geojson(path: Path, features: list[dict[str, Any]], **top: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", **top, "features": features}))
    return path


def rules(result: VectorResult) -> list[tuple[str, str]]:
    return sorted((f.rule, f.severity) for f in result.findings)


def test_clean_geojson_passes_and_records_metadata(tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "labels" / "a.geojson", [feature(poly(SQUARE), cls="house")])
    r = validate_vector(src, Policy(), "labels/a.geojson", tmp_path / "out" / "a.parquet")
    assert r.ok and r.findings == [] and r.format == "GeoJSON"
    la = r.layers[0]
    assert la.features == 1 and la.written == 1 and la.epsg == 4326
    assert la.crs_wkt is not None and la.crs_wkt.startswith("GEOGCRS[")
    assert json.loads(la.crs_projjson or "")["id"] == {"authority": "EPSG", "code": 4326}
    assert la.geometry_types == ["Polygon"] and la.bbox == [0.0, 0.0, 1.0, 1.0]
    assert la.output_relpath == "labels/a.geojson.parquet"
    df = gpd.read_parquet(la.output)
    assert df.crs.to_epsg() == 4326 and list(df["cls"]) == ["house"]


def test_malformed_json(tmp_path: Path) -> None:
    src = tmp_path / "bad.geojson"
    src.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature",')
    r = validate_vector(src, Policy(), "labels/bad.geojson")
    assert not r.ok
    assert [f.message for f in r.findings] == [
        "labels/bad.geojson: malformed JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 63 (char 62) (parse)"
    ]


def test_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "empty.geojson"
    src.write_bytes(b"")
    r = validate_vector(src, Policy(), "empty.geojson", tmp_path / "o.parquet")
    assert [f.message for f in r.findings] == ["empty.geojson: empty file (0 bytes) (parse)"]
    assert not (tmp_path / "o.parquet").exists()


def test_unreadable_file(tmp_path: Path) -> None:
    r = validate_vector(tmp_path / "missing.gpkg", Policy(), "missing.gpkg")
    assert rules(r) == [("parse", "error")] and "unreadable" in r.findings[0].message


def test_not_a_vector_file(tmp_path: Path) -> None:
    src = tmp_path / "x.gpkg"
    src.write_bytes(b"this is not a geopackage")
    r = validate_vector(src, Policy(), "x.gpkg")
    assert rules(r) == [("format-mismatch", "error")]
    assert r.findings[0].message.startswith("x.gpkg: content is text starting 'this is not a geopackage', not the GPKG")


def _shapefile_without_crs(tmp_path: Path) -> Path:
    df = gpd.GeoDataFrame({"v": [1]}, geometry=[shapely.box(500000, 5000000, 500010, 5000010)], crs=None)
    path = tmp_path / "nocrs.shp"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        df.to_file(path, engine="pyogrio")
    assert not path.with_suffix(".prj").exists()
    return path


def test_missing_crs_reject(tmp_path: Path) -> None:
    src = _shapefile_without_crs(tmp_path)
    r = validate_vector(src, Policy(), "labels/nocrs.shp", tmp_path / "out.parquet")
    assert rules(r) == [("crs-missing", "error")]
    assert (
        "labels/nocrs.shp: no CRS" in r.findings[0].message and "missingCRS=reject" in r.findings[0].message
    )
    assert r.layers[0].epsg is None and r.layers[0].crs_wkt is None
    assert not (tmp_path / "out.parquet").exists()


def test_missing_crs_assume(tmp_path: Path) -> None:
    src = _shapefile_without_crs(tmp_path)
    r = validate_vector(src, Policy(missing_crs="assume:EPSG:32633"), "nocrs.shp", tmp_path / "out.parquet")
    assert r.ok and rules(r) == [("crs-missing", "warning")]
    assert "assuming EPSG:32633" in r.findings[0].message
    la = r.layers[0]
    assert la.epsg == 32633 and la.crs_origin == "assumed"
    df = gpd.read_parquet(tmp_path / "out.parquet")
    assert df.crs.to_epsg() == 4326
    assert df.geometry.iloc[0].centroid.x == pytest.approx(15.0, abs=1e-3)  # UTM 33N central meridian


def test_nan_coordinates(tmp_path: Path) -> None:
    src = tmp_path / "nan.geojson"
    src.write_text(
        '{"type":"FeatureCollection","features":[' + json.dumps(feature(poly(SQUARE))) + ","
        '{"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":'
        "[[[0,0],[NaN,0],[1,1],[0,0]]]}}]}"
    )
    r = validate_vector(src, Policy(invalid_geometry="repair"), "nan.geojson", tmp_path / "o.parquet")
    at = src.read_bytes().index(b"[NaN")
    assert [f.message for f in r.findings] == [
        f"nan.geojson: 1 NaN/Infinity number literal(s), first at byte {at}: not JSON (RFC 8259), and GDAL reads "
        "such a point as an empty geometry, silently losing it (coord-nonfinite)"
    ]
    assert not r.ok and not (tmp_path / "o.parquet").exists()


def test_nan_point_is_not_silently_dropped(tmp_path: Path) -> None:
    # GDAL turns [NaN, 1] into POINT EMPTY: without the literal scan it would only be an "empty" warning
    src = tmp_path / "p.geojson"
    src.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"NaN"},'
                   '"geometry":{"type":"Point","coordinates":[NaN, 1]}}]}')
    r = validate_vector(src, Policy(), "p.geojson")
    assert rules(r) == [("coord-nonfinite", "error")] and "1 NaN/Infinity number literal(s)" in r.findings[0].message
    ok = write_geojson(tmp_path / "q.geojson", [feature({"type": "Point", "coordinates": [0, 1]}, name="NaN")])
    assert validate_vector(ok, Policy(), "q.geojson").findings == []  # a "NaN" string is not a literal
    assert not r.ok


def test_out_of_range_latitude(tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "lat.geojson", [feature({"type": "Point", "coordinates": [12.5, 91.0]})])
    r = validate_vector(src, Policy(), "lat.geojson")
    assert [f.message for f in r.findings] == [
        "lat.geojson: feature 0: coordinate (12.5 91) outside lon/lat range [-180, 180] x [-90, 90] (coord-range)"
    ]


@pytest.mark.parametrize("mode", ["reject", "repair", "skip"])
def test_bowtie_file(tmp_path: Path, mode: str) -> None:
    src = write_geojson(tmp_path / "b.geojson", [feature(poly(SQUARE), i=0), feature(poly(BOWTIE), i=1)])
    out = tmp_path / "b.parquet"
    r = validate_vector(src, Policy(invalid_geometry=mode), "labels/b.geojson", out)  # type: ignore[arg-type]
    la = r.layers[0]
    assert la.invalid == 1 and la.invalid_reasons == {"Self-intersection": 1}
    if mode == "reject":
        assert [f.message for f in r.findings] == [
            "labels/b.geojson: feature 1: Self-intersection at or near point (0.5 0.5) (is_valid)"
        ]
        assert not r.ok and not out.exists()
        return
    assert r.ok
    df = gpd.read_parquet(out)
    if mode == "repair":
        assert rules(r) == [("repaired", "warning")]
        # the repaired bow-tie is a MultiPolygon, so the layer's one Polygon is promoted to match
        assert la.repaired == 1 and la.type_changes == {"Polygon->MultiPolygon": 1, "promoted to multi": 1}
        assert la.area_before == 0.0 and la.area_after == pytest.approx(0.5)
        assert list(df["i"]) == [0, 1]
        g = df.geometry.iloc[1]
        assert g.geom_type == "MultiPolygon" and g.area == pytest.approx(0.5)  # both lobes
        assert la.geometry_types == ["MultiPolygon"]
        assert list(df.geometry.geom_type) == ["MultiPolygon", "MultiPolygon"]
        assert df.geometry.iloc[0].area == pytest.approx(1.0)
    else:
        assert rules(r) == [("skipped", "warning")] and la.skipped == 1 and la.written == 1
        assert list(df["i"]) == [0]


def test_unclosed_ring_file(tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "u.geojson", [feature(poly([[0, 0], [1, 0], [1, 1], [0, 1]]))])
    r = validate_vector(src, Policy(), "u.geojson")
    assert [f.message for f in r.findings] == [
        "u.geojson: feature 0: polygon ring is not closed (first and last points differ) (ring-unclosed)"
    ]
    r = validate_vector(src, Policy(invalid_geometry="repair"), "u.geojson", tmp_path / "u.parquet")
    assert r.ok and r.layers[0].repaired == 1
    assert gpd.read_parquet(tmp_path / "u.parquet").geometry.iloc[0].area == pytest.approx(1.0)


def test_null_geometry_file(tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "n.geojson", [feature(None, i=0), feature(poly(SQUARE), i=1)])
    r = validate_vector(src, Policy(), "n.geojson", tmp_path / "n.parquet")
    assert r.ok and rules(r) == [("geometry-null", "warning")]
    assert (
        r.findings[0].message
        == "n.geojson: feature 0: null geometry; dropped from the normalized output (geometry-null)"
    )
    assert r.layers[0].null == 1 and r.layers[0].written == 1
    assert list(gpd.read_parquet(tmp_path / "n.parquet")["i"]) == [1]


def test_mixed_types(tmp_path: Path) -> None:
    src = write_geojson(
        tmp_path / "m.geojson", [feature(poly(SQUARE)), feature({"type": "Point", "coordinates": [0, 0]})]
    )
    r = validate_vector(src, Policy(), "m.geojson")
    assert r.ok and [f.message for f in r.findings] == [
        "m.geojson: mixed geometry types: Point (1), Polygon (1) (geometry-mixed)"
    ]
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE]]}
    src2 = write_geojson(tmp_path / "m2.geojson", [feature(poly(SQUARE)), feature(multi)])
    r2 = validate_vector(src2, Policy(), "m2.geojson", tmp_path / "m2.parquet")
    assert r2.findings == [] and r2.layers[0].geometry_types == ["MultiPolygon"]  # promoted: one type
    assert r2.layers[0].type_changes == {"promoted to multi": 1}
    assert list(gpd.read_parquet(tmp_path / "m2.parquet").geometry.geom_type) == ["MultiPolygon"] * 2


@pytest.mark.parametrize("name", ["urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326"])
def test_rfc7946_legacy_wgs84_crs_member_is_a_warning(tmp_path: Path, name: str) -> None:
    crs = {"type": "name", "properties": {"name": name}}
    src = write_geojson(tmp_path / "c.geojson", [feature(poly(SQUARE))], crs=crs)
    r = validate_vector(src, Policy(), "c.geojson")
    assert r.ok
    assert [f.message for f in r.findings] == [
        f"c.geojson: legacy 'crs' member ({name}) is not part of RFC 7946 GeoJSON (always WGS84); ignored (rfc7946-crs)"
    ]


def test_rfc7946_projected_crs_member_is_an_error(tmp_path: Path) -> None:
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}
    ring = [[0, 0], [1e6, 0], [1e6, 1e6], [0, 0]]
    src = write_geojson(tmp_path / "p.geojson", [feature(poly(ring))], crs=crs)
    r = validate_vector(src, Policy(), "p.geojson", tmp_path / "p.parquet")
    assert rules(r) == [("rfc7946-crs", "error")]
    assert "declares urn:ogc:def:crs:EPSG::3857 through the legacy 'crs' member" in r.findings[0].message
    assert "coordinates look projected (x 0..1000000, y 0..1000000)" in r.findings[0].message
    assert r.layers[0].epsg == 3857 and not (tmp_path / "p.parquet").exists()
    # rfc7946-crs=warning: the declared CRS is used and the layer reprojected to the target
    r = validate_vector(src, Policy(rules={"rfc7946-crs": "warning"}), "p.geojson", tmp_path / "p.parquet")
    assert rules(r) == [("rfc7946-crs", "warning")] and r.ok
    assert r.layers[0].target_epsg == 4326 and (tmp_path / "p.parquet").exists()
    lon_lat = gpd.read_parquet(tmp_path / "p.parquet").total_bounds
    assert 0 <= lon_lat[0] < lon_lat[2] < 9 and 0 <= lon_lat[1] < lon_lat[3] < 9  # 1e6 m is about 8.98 degrees
    r = validate_vector(src, Policy(rules={"rfc7946-crs": "off"}), "p.geojson")
    assert r.findings == []


def test_projected_coordinates_without_crs_member(tmp_path: Path) -> None:
    ring = [[500000, 5000000], [500010, 5000000], [500010, 5000010], [500000, 5000000]]
    src = write_geojson(tmp_path / "utm.geojson", [feature(poly(ring))])
    r = validate_vector(src, Policy(), "utm.geojson")
    assert rules(r) == [("coord-range", "error"), ("rfc7946-crs", "warning")]
    assert ("utm.geojson: coordinates look projected (x 500000..500010, y 5000000..5000010) but RFC 7946 GeoJSON "
            "is always WGS84 lon/lat: reproject the file to EPSG:4326 (rfc7946-crs)") in [f.message for f in r.findings]


def test_crs_member_found_after_features_in_big_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_mod, "_HEAD_BYTES", 256)
    monkeypatch.setattr(vector_mod, "_TAIL_BYTES", 200)
    feats = [feature(poly(SQUARE), name="crs") for _ in range(20)]
    body = {
        "type": "FeatureCollection",
        "features": feats,
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
    }
    src = tmp_path / "late.geojson"
    src.write_text(json.dumps(body))
    assert vector_mod.geojson_crs_member(str(src))[0] is True
    del body["crs"]
    src.write_text(json.dumps(body))
    assert vector_mod.geojson_crs_member(str(src)) == (False, None)
    body["crs"] = {"type": "name", "properties": {"name": "EPSG:4326"}}
    src.write_text(json.dumps({"crs": body.pop("crs"), **body}))
    assert vector_mod.geojson_crs_member(str(src)) == (
        True,
        {"type": "name", "properties": {"name": "EPSG:4326"}},
    )


def test_geopackage_every_layer(tmp_path: Path) -> None:
    src = tmp_path / "d.gpkg"
    gpd.GeoDataFrame({"k": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_file(src, layer="roads")
    gpd.GeoDataFrame(
        {"k": [2, 3]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.from_geojson(json.dumps(poly(BOWTIE)))],
        crs=4326,
    ).to_file(src, layer="fields")
    r = validate_vector(src, Policy(invalid_geometry="repair"), "d.gpkg", tmp_path / "n" / "d.gpkg.parquet")
    assert r.ok and r.format == "GPKG"
    by = {la.name: la for la in r.layers}
    assert set(by) == {"roads", "fields"}
    assert by["fields"].repaired == 1 and by["roads"].repaired == 0
    assert by["fields"].output_relpath == "d.gpkg.fields.parquet"
    assert len(gpd.read_parquet(tmp_path / "n" / "d.gpkg.fields.parquet")) == 2
    assert len(gpd.read_parquet(tmp_path / "n" / "d.gpkg.roads.parquet")) == 1
    assert r.findings[0].message.startswith("d.gpkg (layer fields): feature 1: Self-intersection")
    assert r.summary()["features"] == 3 and r.summary()["repaired"] == 1


@pytest.mark.parametrize(("ext", "driver"), [(".fgb", "FlatGeobuf"), (".shp", "ESRI Shapefile")])
def test_other_ogr_formats(tmp_path: Path, ext: str, driver: str) -> None:
    src = tmp_path / f"f{ext}"
    gpd.GeoDataFrame(
        {"k": [1, 2]}, geometry=[shapely.box(500000, 5000000, 500010, 5000010)] * 2, crs=32633
    ).to_file(src, driver=driver)
    r = validate_vector(src, Policy(), f"f{ext}", tmp_path / "f.parquet")
    assert r.ok and r.layers[0].epsg == 32633 and r.layers[0].written == 2
    assert gpd.read_parquet(tmp_path / "f.parquet").crs.to_epsg() == 4326


def test_geoparquet_input(tmp_path: Path) -> None:
    src = tmp_path / "g.parquet"
    gpd.GeoDataFrame(
        {"k": [1, 2]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.from_geojson(json.dumps(poly(BOWTIE)))],
        crs=3035,
    ).to_parquet(src, write_covering_bbox=True)
    r = validate_vector(src, Policy(), "g.parquet")
    assert r.format == "GeoParquet" and r.layers[0].epsg == 3035
    assert [f.message for f in r.findings] == [
        "g.parquet: feature 1: Self-intersection at or near point (0.5 0.5) (is_valid)"
    ]


def test_geoparquet_with_unknown_crs_is_missing_crs(tmp_path: Path) -> None:
    src = tmp_path / "g.parquet"
    gpd.GeoDataFrame({"k": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=None).to_parquet(src)
    r = validate_vector(src, Policy(), "g.parquet")
    assert rules(r) == [("crs-missing", "error")]


def test_plain_parquet_is_a_warning_not_a_layer(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1]}), src)
    r = validate_vector(src, Policy(), "t.parquet", tmp_path / "o.parquet")
    assert r.ok and r.layers == []
    assert [f.message for f in r.findings] == [
        "t.parquet: no 'geo' metadata: a plain Parquet table, not a GeoParquet layer; kept as a raw file, "
        "not normalized (not-geoparquet)"]
    assert not (tmp_path / "o.parquet").exists()


def test_geoparquet_native_encoding(tmp_path: Path) -> None:
    src = tmp_path / "n.parquet"
    gpd.GeoDataFrame({"k": [1, 2]}, geometry=[shapely.box(0, 0, 1, 1), shapely.from_geojson(json.dumps(poly(BOWTIE)))],
                     crs=4326).to_parquet(src, geometry_encoding="geoarrow")
    r = validate_vector(src, Policy(invalid_geometry="repair"), "n.parquet", tmp_path / "o.parquet")
    assert r.ok and r.layers[0].repaired == 1 and r.layers[0].written == 2
    assert gpd.read_parquet(tmp_path / "o.parquet").geometry.iloc[1].area == pytest.approx(0.5)


def test_empty_feature_collection(tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "e.geojson", [])
    r = validate_vector(src, Policy(), "e.geojson", tmp_path / "e.parquet")
    assert r.ok and r.layers[0].features == 0 and r.layers[0].bbox is None
    df = gpd.read_parquet(tmp_path / "e.parquet")
    assert len(df) == 0


def test_streaming_across_batches(tmp_path: Path) -> None:
    feats = [
        feature(poly([[i / 10, 0], [i / 10 + 0.1, 0], [i / 10 + 0.1, 1], [i / 10, 0]]), i=i)
        for i in range(1050)
    ]
    feats[1037] = feature(poly(BOWTIE), i=1037)
    feats[5] = feature(None, i=5)
    src = write_geojson(tmp_path / "big.geojson", feats)
    out = tmp_path / "big.parquet"
    r = validate_vector(src, Policy(invalid_geometry="repair"), "big.geojson", out, batch_size=100)
    la = r.layers[0]
    assert la.features == 1050 and la.written == 1049 and la.null == 1 and la.repaired == 1
    assert [f.feature for f in r.findings if f.rule == "repaired"] == [1037]
    assert [f.feature for f in r.findings if f.rule == "geometry-null"] == [5]
    import pyarrow.parquet as pq

    assert pq.ParquetFile(out).num_row_groups == 11  # one per batch: streamed, not collected
    df = gpd.read_parquet(out)
    assert len(df) == 1049 and df["i"].iloc[1036] == 1037
    assert df.geometry.iloc[1036].area == pytest.approx(0.5)


def test_check_vector_set_mixed_crs(tmp_path: Path) -> None:
    a = write_geojson(tmp_path / "a.geojson", [feature(poly(SQUARE))])
    b = write_geojson(tmp_path / "b.geojson", [feature(poly(SQUARE))])
    c = tmp_path / "c.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(500000, 5000000, 500010, 5000010)], crs=32633).to_file(c)
    results = [validate_vector(p, Policy(), p.name) for p in (c, a, b)]
    findings = check_vector_set(results, Policy())
    assert [(f.rule, f.severity, f.path) for f in findings] == [("crs-mixed", "error", "c.gpkg")]
    assert findings[0].message == (
        "c.gpkg: CRS EPSG:32633 differs from a.geojson's EPSG:4326 (2 of the layers "
        "use that); mixed CRSs across files (crs-mixed)"
    )
    assert [f.severity for f in check_vector_set(results, Policy(rules={"crs-mixed": "warning"}))] == ["warning"]
    assert check_vector_set(results, Policy(rules={"crs-mixed": "off"})) == []
    assert check_vector_set(results[1:], Policy()) == []


def _tricky_features(n: int) -> list[dict[str, Any]]:
    feats = []
    for i in range(n):
        props: dict[str, Any] = {"i": i, "note": 'has {"type": "Feature"} inside, and , {'}
        if i >= n // 2:
            props["late"] = i * 0.5  # a field that only the second half has
        if i % 7 == 0:
            props["nested"] = {"type": "Feature", "geometry": None, "properties": {}}  # Feature-shaped value
        feats.append(feature(poly([[i / 100, 0], [i / 100 + 0.01, 0], [i / 100 + 0.01, 0.01], [i / 100, 0]]), **props))
    feats[33] = feature(poly(BOWTIE), i=33)
    feats[40] = feature(None, i=40)
    return feats


def test_chunked_geojson_reads_the_same_as_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
    src = write_geojson(tmp_path / "t.geojson", _tricky_features(300), crs=crs)
    policy = Policy(invalid_geometry="repair")
    whole = validate_vector(src, policy, "t.geojson", tmp_path / "whole.parquet", batch_size=64)
    monkeypatch.setattr(vector_mod, "GEOJSON_CHUNKED_MIN_BYTES", 0)
    monkeypatch.setattr(vector_mod, "GEOJSON_RUN_BYTES", 3000)  # many runs of a few features
    runs = list(vector_mod.feature_runs(str(src), vector_mod.features_start(str(src)) or 0, 3000))
    assert len(runs) > 10
    assert sum(len(json.loads(r)["features"]) for r in runs) == 300
    chunked = validate_vector(src, policy, "t.geojson", tmp_path / "chunked.parquet", batch_size=64)
    assert whole.ok and chunked.ok
    assert [f.message for f in chunked.findings] == [f.message for f in whole.findings]
    assert sorted(f.feature for f in chunked.findings if f.feature is not None) == [33, 40]
    a, b = whole.layers[0], chunked.layers[0]
    assert (b.features, b.written, b.repaired, b.null, b.bbox) == (a.features, a.written, a.repaired, a.null, a.bbox)
    ta, tb = pq.read_table(tmp_path / "whole.parquet"), pq.read_table(tmp_path / "chunked.parquet")
    assert ta.schema == tb.schema and ta.equals(tb)
    assert tb.column("late").null_count == 149  # features 0..149 lack it; 40 (null geometry) is dropped
    assert pq.ParquetFile(tmp_path / "chunked.parquet").num_row_groups > pq.ParquetFile(tmp_path / "whole.parquet").num_row_groups


def test_chunked_geojson_truncated_file_is_a_parse_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_geojson(tmp_path / "t.geojson", _tricky_features(50))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(vector_mod, "GEOJSON_CHUNKED_MIN_BYTES", 0)
    r = validate_vector(src, Policy(), "t.geojson", tmp_path / "o.parquet")
    assert not r.ok and rules(r) == [("parse", "error")]
    assert not (tmp_path / "o.parquet").exists()


def test_messages_name_the_feature_id(tmp_path: Path) -> None:
    feats = [dict(feature(poly(SQUARE)), id="bldg-1"), dict(feature(poly(BOWTIE)), id="bldg-2")]
    src = write_geojson(tmp_path / "ids.geojson", feats)
    r = validate_vector(src, Policy(), "ids.geojson")
    assert [f.message for f in r.findings] == [
        "ids.geojson: feature 1 (id=bldg-2): Self-intersection at or near point (0.5 0.5) (is_valid)"]


def test_a_bug_in_the_rules_is_not_reported_as_a_parse_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_geojson(tmp_path / "a.geojson", [feature(poly(SQUARE))])

    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(vector_mod, "check_batch", broken)
    with pytest.raises(RuntimeError, match="bug"):  # validate_paths turns this into an 'internal' error
        validate_vector(src, Policy(), "a.geojson", tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "o.parquet.partial").exists()
