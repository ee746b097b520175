"""The fast GeoJSON reader gives exactly what GDAL gives, or declines (NotSimple) and GDAL reads the file.

Each case is a small FeatureCollection read both ways: attribute schema and values, WKB bytes, the
declared geometry type. `fast` says whether the case must take the fast path (so a reader that always
declined would fail here too)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyogrio.raw import open_arrow

from terrasnap.engine.validate import geojson_arrow as ga
from terrasnap.engine.validate.vector import GEOJSON_OPEN_OPTIONS

P = {"type": "Point", "coordinates": [7.5, 46.9]}
SQ = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]


def feat(props: object = None, geom: object = P, **extra: object) -> dict[str, object]:
    return {"type": "Feature", **extra, "properties": props, "geometry": geom}


def poly(ring: object = SQ) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": ring}


CASES: dict[str, tuple[bool, list[dict[str, object]]]] = {
    "int32": (True, [feat({"a": 1}), feat({"a": -5})]),
    "int64": (True, [feat({"a": 1}), feat({"a": 3_000_000_000})]),
    "int-then-real": (True, [feat({"a": 1}), feat({"a": 1.5})]),
    "real": (True, [feat({"a": 1.0})]),
    "bool": (True, [feat({"a": True}), feat({"a": False})]),
    "always-null": (True, [feat({"a": None}), feat({"a": None})]),
    "null-then-int": (True, [feat({"a": None}), feat({"a": 5})]),
    "string-escapes": (True, [feat({"a": "é\n\"q\\", "b": "日本"})]),
    "dates-as-text": (True, [feat({"d": "2020-01-02", "t": "2020-01-02T03:04:05Z"}), feat({"d": "2020/01/02", "t": None})]),
    "integer-ids": (True, [feat({"a": 1}, id=7), feat({"a": 2}, id=8)]),
    "id-property-and-member": (True, [feat({"id": 3, "a": 1}, id=7)]),
    "no-properties": (True, [feat({}), feat({})]),
    "null-properties": (True, [feat(None), feat(None)]),
    "huge-integer": (True, [feat({"a": 99999999999999999999})]),
    "null-geometry": (True, [feat({"a": 1}, None), feat({"a": 2})]),
    "polygon": (True, [feat({"a": 1}, poly())]),
    "unclosed-ring": (True, [feat({"a": 1}, poly([[[0, 0], [1, 0], [1, 1]]]))]),
    "empty-polygon": (True, [feat({"a": 1}, poly([])), feat({"a": 1}, poly())]),
    "polygon-with-hole": (True, [feat({}, poly([SQ[0], [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.2]]]))]),
    "linestring": (True, [feat({}, {"type": "LineString", "coordinates": [[0, 0], [1, 2], [3, 4]]}),
                          feat({}, {"type": "LineString", "coordinates": [[1, 2]]})]),
    "multipoint": (True, [feat({}, {"type": "MultiPoint", "coordinates": [[0, 0], [1, 2]]}),
                          feat({}, {"type": "MultiPoint", "coordinates": []})]),
    "multilinestring": (True, [feat({}, {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2], [3, 3]]]})]),
    "multipolygon": (True, [feat({}, {"type": "MultiPolygon", "coordinates": [SQ, [SQ[0], SQ[0]]]}),
                            feat({}, None)]),
    # declined: GDAL does something of its own
    "string-ids": (False, [feat({"a": 1}, id="x7")]),
    "string-and-number": (False, [feat({"a": "x"}), feat({"a": 2.5})]),
    "bool-and-int": (False, [feat({"a": True}), feat({"a": 2})]),
    "sparse-properties": (False, [feat({"b": 1}), feat({"a": "x", "b": 2})]),
    "nested-property": (False, [feat({"a": {"b": 1}})]),
    "array-property": (False, [feat({"a": [1, 2]})]),
    "mixed-types": (False, [feat({}, poly()), feat({}, {"type": "MultiPolygon", "coordinates": [SQ]})]),
    "same-depth-other-type": (False, [feat({}, poly()), feat({}, {"type": "MultiLineString", "coordinates": SQ})]),
    "3d": (False, [feat({}, {"type": "Point", "coordinates": [1, 2, 3]})]),
    "mixed-dimensions": (False, [feat({}, {"type": "LineString", "coordinates": [[1, 2, 3], [4, 5]]})]),
    "empty-point": (False, [feat({}, {"type": "Point", "coordinates": []})]),
    "geometry-collection": (False, [feat({}, {"type": "GeometryCollection", "geometries": [P]})]),
    "geometry-bbox": (False, [feat({}, {**P, "bbox": [7.5, 46.9, 7.5, 46.9]})]),
    "lowercase-type": (False, [feat({}, {"type": "point", "coordinates": [1, 2]})]),
    "case-clash": (False, [feat({"Name": "a", "name": "b"})]),
    "reserved-name": (False, [feat({"wkb_geometry": "a"})]),
    "multipolygon-empty-part": (False, [feat({}, {"type": "MultiPolygon", "coordinates": [[], SQ]})]),
    "empty-ring": (False, [feat({}, poly([[]]))]),
    "null-inner-list": (False, [feat({}, poly([None]))]),
    "foreign-member": (False, [feat({"a": 1}, bbox=[0, 0, 1, 1])]),
}


def gdal_read(path: Path) -> tuple[str, pa.Table, list[bytes | None]]:
    with open_arrow(str(path), use_pyarrow=True, **GEOJSON_OPEN_OPTIONS) as (meta, reader):
        table = reader.read_all()
    geo = meta.get("geometry_name") or "wkb_geometry"
    return str(meta["geometry_type"]), table.drop_columns([geo]), table.column(geo).to_pylist()


def write(path: Path, features: list[dict[str, object]], layout: str) -> Path:
    if layout == "lines":
        body = ",\n".join(json.dumps(f, ensure_ascii=False) for f in features)
        path.write_text('{"type": "FeatureCollection", "features": [\n' + body + "\n]}\n")
    elif layout == "one-line":
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    else:
        path.write_text(json.dumps({"type": "FeatureCollection", "name": "x", "features": features}, indent=2))
    return path


@pytest.mark.parametrize("layout", ["lines", "one-line", "pretty"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_gdal_or_declined(tmp_path: Path, name: str, layout: str) -> None:
    fast, features = CASES[name]
    path = write(tmp_path / "t.geojson", features, layout)
    try:
        layer = ga.read(str(path))
    except ga.NotSimple as exc:
        assert not fast, f"{name} must take the fast path, declined: {exc}"
        return
    assert fast, f"{name} must be declined (GDAL differs), but the fast reader took it"
    gtype, attrs, wkb = gdal_read(path)
    assert layer.geometry_type == gtype
    assert layer.attributes == attrs.schema.remove_metadata()
    assert layer.table.to_pylist() == attrs.to_pylist()
    assert layer.wkb.to_pylist() == wkb


def test_batches_cut_as_gdal_cuts_them(tmp_path: Path) -> None:
    features = [feat({"i": i, "s": str(i)}, poly([[[i, 0], [i + 1, 0], [i + 1, 1], [i, 0]]])) for i in range(250)]
    path = write(tmp_path / "t.geojson", features, "lines")
    layer = ga.read(str(path))
    ours = list(layer.batches(64))
    with open_arrow(str(path), use_pyarrow=True, batch_size=64, **GEOJSON_OPEN_OPTIONS) as (_, reader):
        theirs = list(reader)
    assert [len(a) for a, _ in ours] == [len(b) for b in theirs]
    for (attrs, wkb), batch in zip(ours, theirs, strict=True):
        assert attrs.to_pylist() == batch.drop_columns(["wkb_geometry"]).to_pylist()
        assert list(wkb) == batch.column("wkb_geometry").to_pylist()


@pytest.mark.parametrize("text", [
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": 1, "a": 2}, "geometry": null}]}',
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": 1e400}, "geometry": '
    '{"type": "Point", "coordinates": [1, 2]}}]}',
    '{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:3857"}}, "features": []}',
    '{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 2]}}',
    '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": 1}, "geometry": '
    '{"type": "Point", "coordinates": [1, 2]}},\n{"type": "Feature", "properties": {"a": 2}, "geometry": '
    '{"type": "Point", "coordinates": [1, 2]}}], "bbox": [1, 2, 1, 2]}',
])
def test_declines_what_gdal_reads_its_own_way(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.geojson"
    path.write_text(text)
    if "bbox" in text:  # a foreign member after the features: GDAL ignores it, and so may we
        layer = ga.read(str(path))
        _, attrs, wkb = gdal_read(path)
        assert layer.table.to_pylist() == attrs.to_pylist() and layer.wkb.to_pylist() == wkb
        return
    with pytest.raises(ga.NotSimple):
        ga.read(str(path))
