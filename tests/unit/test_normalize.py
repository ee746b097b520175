"""GeoParquet 1.1 output: metadata per the spec, byte-deterministic, never half-written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import CRS

from terrasnap.engine import normalize
from terrasnap.engine.normalize import GeoParquetWriter, normalized_relpath
from terrasnap.engine.validate import Policy, validate_vector


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_labels(path: Path, n: int = 300, nudge: float = 0.0) -> Path:
    feats = []
    for i in range(n):
        x = (i % 50) * 0.01 + (nudge if i == 7 else 0.0)
        ring = [[x, 0], [x + 0.005, 0], [x + 0.005, 0.005], [x, 0.005], [x, 0]]
        if i % 97 == 3:
            ring = [[x, 0], [x + 0.005, 0.005], [x + 0.005, 0], [x, 0.005], [x, 0]]  # bow-tie
        feats.append(
            {
                "type": "Feature",
                "properties": {"i": i, "name": f"f{i}", "w": i * 0.5},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_geo_metadata_is_geoparquet_1_1(tmp_path: Path) -> None:
    src = write_labels(tmp_path / "a.geojson")
    out = tmp_path / "a.parquet"
    r = validate_vector(src, Policy(invalid_geometry="repair"), "a.geojson", out)
    assert r.ok
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert col["geometry_types"] == ["MultiPolygon"]  # repaired bow-ties are multi: the rest promoted
    assert CRS.from_json_dict(col["crs"]).to_epsg() == 4326
    assert col["bbox"] == pytest.approx([0.0, 0.0, 0.495, 0.005])
    assert col["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    schema = pq.read_schema(out)
    assert schema.field("bbox").type == pa.struct(
        [(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")]
    )
    assert schema.names == ["i", "name", "w", "geometry", "bbox"]
    # per-row bbox matches the geometry
    t = pq.read_table(out)
    df = gpd.read_parquet(out)
    b = shapely.bounds(df.geometry.values)
    assert np.allclose(
        np.array(
            [t["bbox"].combine_chunks().field(k).to_numpy() for k in ("xmin", "ymin", "xmax", "ymax")]
        ).T,
        b,
    )
    assert len(df) == 300 and df.crs.to_epsg() == 4326
    meta = pq.ParquetFile(out).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_output_bytes_are_deterministic(tmp_path: Path) -> None:
    src = write_labels(tmp_path / "a.geojson")
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}" / "a.parquet"
        assert validate_vector(src, Policy(invalid_geometry="repair"), "a.geojson", out, batch_size=64).ok
        outs.append(out)
    assert sha(outs[0]) == sha(outs[1])
    # one moved vertex -> different bytes
    src2 = write_labels(tmp_path / "b.geojson", nudge=1e-7)
    out2 = tmp_path / "b.parquet"
    assert validate_vector(src2, Policy(invalid_geometry="repair"), "a.geojson", out2, batch_size=64).ok
    assert sha(out2) != sha(outs[0])
    # a different policy that changes the content -> different bytes
    out3 = tmp_path / "c.parquet"
    assert validate_vector(src, Policy(invalid_geometry="skip"), "a.geojson", out3, batch_size=64).ok
    assert sha(out3) != sha(outs[0])


def test_rejected_file_leaves_no_output(tmp_path: Path) -> None:
    src = write_labels(tmp_path / "a.geojson")
    out = tmp_path / "n" / "a.parquet"
    r = validate_vector(src, Policy(), "a.geojson", out)
    assert not r.ok
    assert not out.exists() and list(out.parent.iterdir()) == []  # no .partial left behind


def test_writer_abort_and_reserved_names(tmp_path: Path) -> None:
    attrs = pa.schema([("bbox", pa.string()), ("geometry", pa.int64())])
    w = GeoParquetWriter(tmp_path / "x.parquet", attrs, CRS.from_epsg(3857))
    geoms = np.array([shapely.Point(1, 2, 3), shapely.box(0, 0, 1, 1)], dtype=object)
    w.write(pa.table({"bbox": ["a", "b"], "geometry": [1, 2]}), geoms)
    path = w.commit()
    t = pq.read_table(path)
    assert t.column_names == ["bbox_", "geometry_", "geometry", "bbox"]
    geo = json.loads(t.schema.metadata[b"geo"])
    assert geo["columns"]["geometry"]["geometry_types"] == ["Point Z", "Polygon"]
    w2 = GeoParquetWriter(tmp_path / "y.parquet", attrs, CRS.from_epsg(3857))
    w2.abort()
    assert not (tmp_path / "y.parquet").exists() and not (tmp_path / "y.parquet.partial").exists()


def test_normalized_relpath() -> None:
    assert normalized_relpath("labels/a.geojson") == "labels/a.geojson.parquet"
    assert normalized_relpath("x/b.gpkg", "roads 2", layers=2) == "x/b.gpkg.roads_2.parquet"
    assert normalized_relpath("x/b.gpkg", "roads", layers=1) == "x/b.gpkg.parquet"


def test_promotion_of_big_endian_wkb_passed_through(tmp_path: Path) -> None:
    # a GeoParquet input with big-endian WKB in the target CRS: unchanged features keep their bytes
    geoms = [shapely.box(0, 0, 1, 1), shapely.MultiPolygon([shapely.box(2, 2, 3, 3)])]
    table = pa.table({"k": [1, 2], "geometry": pa.array(shapely.to_wkb(geoms, byte_order=0), pa.binary())})
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["MultiPolygon", "Polygon"]}}}
    src = tmp_path / "be.parquet"
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), src)
    out = tmp_path / "o.parquet"
    r = validate_vector(src, Policy(), "be.parquet", out)
    assert r.ok and r.layers[0].geometry_types == ["MultiPolygon"]
    df = gpd.read_parquet(out)
    assert list(df.geometry.geom_type) == ["MultiPolygon", "MultiPolygon"]
    assert df.geometry.iloc[0].equals(shapely.MultiPolygon([geoms[0]]))


def test_promotion_keeps_bytes_deterministic(tmp_path: Path) -> None:
    src = write_labels(tmp_path / "a.geojson")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for out in (a, b):
        assert validate_vector(src, Policy(invalid_geometry="repair"), "a.geojson", out, batch_size=50).ok
    assert sha(a) == sha(b)
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize("name", ["labels", "big-endian"])
def test_promotion_in_memory_equals_the_rewrite_of_a_streamed_layer(tmp_path: Path, name: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a layer bigger than HOLD_BYTES is streamed and rewritten at commit; a smaller one is promoted before
    # it is written: the bytes must not depend on which
    if name == "labels":
        src = write_labels(tmp_path / "a.geojson")
    else:
        geoms = [shapely.box(0, 0, 1, 1), shapely.MultiPolygon([shapely.box(2, 2, 3, 3)])] * 30
        table = pa.table({"k": list(range(60)), "geometry": pa.array(shapely.to_wkb(geoms, byte_order=0))})
        geo = {"version": "1.1.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["MultiPolygon", "Polygon"]}}}
        src = tmp_path / "be.parquet"
        pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), src)
    held, streamed = tmp_path / "held.parquet", tmp_path / "streamed.parquet"
    r1 = validate_vector(src, Policy(invalid_geometry="repair"), src.name, held, batch_size=16)
    monkeypatch.setattr(normalize, "HOLD_BYTES", 0)
    r2 = validate_vector(src, Policy(invalid_geometry="repair"), src.name, streamed, batch_size=16)
    assert r1.ok and r2.ok and r1.layers[0].type_changes == r2.layers[0].type_changes
    assert "promoted to multi" in r1.layers[0].type_changes
    assert sha(held) == sha(streamed)
    assert pq.ParquetFile(held).num_row_groups > 1
