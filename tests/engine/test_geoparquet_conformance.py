"""Every GeoParquet file the engine writes passes geoparquet-validator's core and covering classes.

geoparquet-validator (PyPI) runs the OGC abstract tests; an outside validator, so a conformance bug is not
hidden by our own reading of the spec. The fixtures cover what changes the `geo` metadata: repaired bow-ties
promoted to MultiPolygon, points, lines, 3D, a two-layer GeoPackage, and nulls/empties dropped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import geoparquet_validator as gpv  # a dev extra: a missing install fails here, never skips
import pyarrow.parquet as pq
import pytest
import shapely

from terrasnap.engine.stage import build_report
from terrasnap.engine.validate.policy import Policy
from tests.support import sampledata as sd

CLASSES = ("core", "covering")
X, Y = sd.LON0, sd.LAT0


def make_fixtures(raw: Path) -> None:
    """Each folder is one data set: crs-mixed rejects a set whose layers differ in CRS, and 3D GeoJSON reads as
    EPSG:4979, the GeoPackage here is in EPSG:2056 (reprojected to EPSG:4326 on the way)."""
    flat, deep, gpkg_dir = raw / "2d", raw / "3d", raw / "gpkg"
    polys = sd.buildings(30, seed=3)
    polys += [sd.feature(sd.bowtie_at(X + 0.03 + 0.001 * i, Y + 0.03), {"id": 100 + i, "label": "bowtie"})
              for i in range(3)]
    sd.write_geojson(flat / "polygons.geojson", polys)
    sd.write_geojson(flat / "points.geojson", [
        sd.feature([X + 0.001 * i, Y + 0.0005 * i], {"id": i}, "Point") for i in range(20)])
    sd.write_geojson(flat / "lines.geojson", [
        sd.feature([[X + 0.001 * i, Y], [X + 0.001 * i, Y + 0.01], [X + 0.002 * i, Y + 0.02]], {"id": i},
                   "LineString") for i in range(10)])
    sd.write_geojson(deep / "points3d.geojson", [
        sd.feature([X + 0.001 * i, Y, 500.0 + i], {"id": i}, "Point") for i in range(10)])
    sd.write_geojson(deep / "polygons3d.geojson", [
        sd.feature([[[X + 0.01 * i, Y, 1.0], [X + 0.01 * i + 0.005, Y, 2.0], [X + 0.01 * i + 0.005, Y + 0.005, 3.0],
                     [X + 0.01 * i, Y, 1.0]]], {"id": i}) for i in range(8)])
    # nulls and empties are dropped (warnings): the written bbox and geometry_types cover only the rest
    with_gaps = sd.buildings(12, seed=4)
    with_gaps.append({"type": "Feature", "properties": {"id": 900}, "geometry": None})
    with_gaps.append(sd.feature([], {"id": 901}, "Polygon"))
    with_gaps.append(sd.feature([], {"id": 902}, "Point"))
    sd.write_geojson(flat / "with_nulls.geojson", with_gaps)
    # two layers in one GeoPackage
    gpkg_dir.mkdir(parents=True)
    gpkg = gpkg_dir / "two_layers.gpkg"
    roads = gpd.GeoDataFrame({"id": range(5)}, crs="EPSG:2056", geometry=[
        shapely.LineString([(2600000 + 100 * i, 1200000), (2600000 + 100 * i, 1200500)]) for i in range(5)])
    parcels = gpd.GeoDataFrame({"id": range(4), "name": ["a", "b", None, "d"]}, crs="EPSG:2056", geometry=[
        shapely.box(2600000 + 50 * i, 1200000, 2600040 + 50 * i, 1200040) for i in range(4)])
    roads.to_file(gpkg, layer="roads", driver="GPKG")
    parcels.to_file(gpkg, layer="parcels", driver="GPKG")


@pytest.fixture(scope="module")
def normalized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Output file name (`<source>.parquet`, `<gpkg>.<layer>.parquet`) -> the GeoParquet the engine wrote."""
    tmp = tmp_path_factory.mktemp("gpq")
    raw, out = tmp / "raw", tmp / "out"
    make_fixtures(raw)
    for group in ("2d", "3d", "gpkg"):
        report = build_report(raw / group, Policy(invalid_geometry="repair"), out / group)
        assert report["ok"], [f for f in report["findings"] if f["severity"] == "error"]
    written = sorted(out.rglob("*.parquet"))
    assert written, "the engine wrote no GeoParquet"
    return {p.name: p for p in written}


def outcomes(report: dict[str, Any], cls: str) -> dict[str, str]:
    return {o["id"]: o["status"] for o in report["outcomes"] if o["id"].startswith(f"/conf/{cls}/")}


def assert_conformant(path: Path) -> None:
    report = gpv.check(str(path))
    assert not report["sampled"]
    for cls in CLASSES:
        got = outcomes(report, cls)
        failed = {k: v for k, v in got.items() if v == "fail"}
        assert not failed, (path.name, failed, [o for o in report["outcomes"] if o["status"] == "fail"])
        # a class whose tests were all skipped proves nothing (the library's conformant() says True then)
        assert "pass" in got.values(), (path.name, cls, got)
    # the tests that read the geo metadata against the data must have run, not been skipped
    for test in ("/conf/core/wkb", "/conf/core/geometry-types", "/conf/core/bbox-extent",
                 "/conf/covering/bbox-paths", "/conf/covering/bbox-column-type"):
        assert outcomes(report, test.split("/")[2])[test] == "pass", (path.name, test)


def test_all_representative_fixtures_are_normalized(normalized: dict[str, Path]) -> None:
    names = " ".join(normalized)
    for stem in ("polygons.", "points.", "lines.", "points3d.", "polygons3d.", "with_nulls.", "two_layers"):
        assert stem in names, (stem, sorted(normalized))
    assert sum("two_layers" in n for n in normalized) == 2, sorted(normalized)


def test_every_normalized_file_passes_core_and_covering(normalized: dict[str, Path]) -> None:
    for path in normalized.values():
        assert_conformant(path)


def test_the_fixtures_exercise_what_they_claim(normalized: dict[str, Path]) -> None:
    def geo(name: str) -> dict[str, Any]:
        path = next(p for n, p in normalized.items() if n.startswith(name))
        col: dict[str, Any] = json.loads(pq.read_schema(path).metadata[b"geo"])["columns"]["geometry"]
        return col

    assert geo("polygons.")["geometry_types"] == ["MultiPolygon"]  # repaired bow-ties: the rest promoted
    assert any(t.endswith(" Z") for t in geo("points3d.")["geometry_types"])
    nulls = next(p for n, p in normalized.items() if n.startswith("with_nulls."))
    assert pq.read_metadata(nulls).num_rows == 12  # the null and the two empties are gone


def test_the_command_line_agrees(normalized: dict[str, Path]) -> None:
    exe = Path(sys.executable).parent / "geoparquet-validator"
    for cls in CLASSES:
        for path in normalized.values():
            res = subprocess.run([str(exe), "check", "--class", cls, str(path)], capture_output=True, text=True)
            assert res.returncode == 0, (cls, path.name, res.stdout[-2000:], res.stderr[-2000:])


# -- the check can fail ---------------------------------------------------------------------------------

def rewrite_geo(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of `src` with its `geo` metadata changed by `edit(geo)`; the data stays as written."""
    table = pq.read_table(src)
    meta = dict(table.schema.metadata)
    geo = json.loads(meta[b"geo"])
    edit(geo)
    meta[b"geo"] = json.dumps(geo).encode()
    pq.write_table(table.replace_schema_metadata(meta), dst)
    return dst


def _wrong_types(geo: dict[str, Any]) -> None:
    geo["columns"]["geometry"]["geometry_types"] = ["Point"]


def _bbox_too_small(geo: dict[str, Any]) -> None:
    geo["columns"]["geometry"]["bbox"] = [0.0, 0.0, 0.001, 0.001]


def _covering_to_nowhere(geo: dict[str, Any]) -> None:
    geo["columns"]["geometry"]["covering"] = {"bbox": {k: ["nobbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}


def _covering_removed(geo: dict[str, Any]) -> None:
    del geo["columns"]["geometry"]["covering"]


@pytest.mark.parametrize(("edit", "caught_by"), [
    (_wrong_types, "/conf/core/geometry-types"),
    (_bbox_too_small, "/conf/core/bbox-extent"),
    (_covering_to_nowhere, "/conf/covering/bbox-paths"),
    (_covering_removed, "/conf/covering/bbox-paths"),  # skipped, not failed: the validator then claims nothing
], ids=["wrong-geometry-types", "bbox-too-small", "covering-to-nowhere", "covering-removed"])
def test_a_broken_file_is_rejected(normalized: dict[str, Path], tmp_path: Path, edit: Any, caught_by: str) -> None:
    src = next(p for n, p in normalized.items() if n.startswith("polygons."))
    assert_conformant(src)
    broken = rewrite_geo(src, tmp_path / "broken.parquet", edit)
    assert outcomes(gpv.check(str(broken)), caught_by.split("/")[2])[caught_by] != "pass"
    with pytest.raises(AssertionError):
        assert_conformant(broken)
