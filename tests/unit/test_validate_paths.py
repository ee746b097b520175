"""validate_paths: the whole set on a process pool, aggregated into a deterministic Report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from terrasnap.engine.validate import Policy, Report, validate_paths


def geojson(path: Path, rings: list[list[list[float]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    feats = [
        {"type": "Feature", "properties": {"i": i}, "geometry": {"type": "Polygon", "coordinates": [r]}}
        for i, r in enumerate(rings)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def tif(path: Path, x0: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # EPSG:4326 pixels of 0.001 deg, 100 x 100: covers [x0, x0 + 0.1] x [0.9, 1.0]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=100,
        height=100,
        count=1,
        dtype="uint8",
        nodata=0,
        crs="EPSG:4326",
        transform=Affine(0.001, 0, x0, 0, -0.001, 1.0),
    ) as dst:
        dst.write(np.zeros((1, 100, 100), "uint8"))
    return path


def box(x: float, y: float, d: float = 0.01) -> list[list[float]]:
    return [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]


BOWTIE = [[0.0, 0.9], [0.01, 0.91], [0.01, 0.9], [0.0, 0.91], [0.0, 0.9]]


def _setup(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    src = tmp_path / "src"
    vectors = [
        geojson(src / "labels" / "a.geojson", [box(0.01, 0.95), box(0.02, 0.95), BOWTIE]),
        geojson(src / "labels" / "b.geojson", [box(0.05, 0.95), box(5.0, 5.0)]),  # 2nd is outside imagery
        geojson(src / "labels" / "c.geojson", [box(0.05, 0.93)]),
    ]
    rasters = [tif(src / "img" / "r1.tif", 0.0), tif(src / "img" / "r2.tif", 0.1)]
    return vectors, rasters


def strip_outputs(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: strip_outputs(v) for k, v in d.items() if k != "output"}
    if isinstance(d, list):
        return [strip_outputs(v) for v in d]
    return d


def test_validate_paths_repair(tmp_path: Path) -> None:
    vectors, rasters = _setup(tmp_path)
    out = tmp_path / "normalized"
    report = validate_paths(vectors, rasters, Policy(invalid_geometry="repair"), out, root=tmp_path / "src")
    assert isinstance(report, Report)
    assert report.ok, report.findings
    assert [v.path for v in report.vectors] == ["labels/a.geojson", "labels/b.geojson", "labels/c.geojson"]
    assert [r.path for r in report.rasters] == ["img/r1.tif", "img/r2.tif"]
    s = report.summary()
    assert (s["vectors"], s["rasters"], s["features"], s["written"], s["repaired"], s["errors"]) == (
        3,
        2,
        6,
        6,
        1,
        0,
    )
    assert s["outside_footprint"] == 1
    # 100 x 100 GTiffs are striped, not tiled: not COG (a warning by default)
    assert report.counts == {
        "footprint": {"warning": 1},
        "raster-cog": {"warning": 2},
        "repaired": {"warning": 1},
    }
    fp = [f for f in report.findings if f.rule == "footprint"]
    assert [f.message for f in fp] == [
        "labels/b.geojson: 1 of 2 features lie outside the imagery footprint (footprint)"
    ]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "labels/a.geojson.parquet",
        "labels/b.geojson.parquet",
        "labels/c.geojson.parquet",
    ]
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False, sort_keys=True)
    assert [f["path"] for f in d["files"]] == sorted(f["path"] for f in d["files"])
    # a second run (other workers, other output dir) reports the same thing
    again = validate_paths(
        list(reversed(vectors)),
        rasters,
        Policy(invalid_geometry="repair"),
        tmp_path / "n2",
        root=tmp_path / "src",
        workers=1,
    )
    assert json.dumps(strip_outputs(again.to_dict()), sort_keys=True) == json.dumps(
        strip_outputs(d), sort_keys=True
    )
    assert "output" in text


def test_validate_paths_reject_and_pairs(tmp_path: Path) -> None:
    vectors, rasters = _setup(tmp_path)
    report = validate_paths(
        [(str(p), f"raw/{p.name}") for p in vectors], [(rasters[0], "raw/r1.tif")], Policy(), tmp_path / "out"
    )
    assert not report.ok
    err = report.first_error()
    assert err is not None
    assert (
        err.message == "raw/a.geojson: feature 2: Self-intersection at or near point (0.005 0.905) (is_valid)"
    )
    assert report.summary()["errors"] == 1
    assert not (tmp_path / "out" / "raw" / "a.geojson.parquet").exists()
    assert (tmp_path / "out" / "raw" / "b.geojson.parquet").exists()  # files are judged one by one
    assert report.to_dict()["ok"] is False


def test_validate_paths_mixed_crs_and_misaligned_rasters(tmp_path: Path) -> None:
    vectors, _ = _setup(tmp_path)
    gj = tmp_path / "src" / "labels" / "p.geojson"
    gj.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": [1.0, 1.0]},
                    }
                ],
            }
        )
    )
    r1 = tif(tmp_path / "src" / "img" / "r1.tif", 0.0)
    r3 = tif(tmp_path / "src" / "img" / "r3.tif", 0.1005)
    report = validate_paths(
        [*vectors, gj], [r1, r3], Policy(invalid_geometry="repair"), root=tmp_path / "src"
    )
    errors = sorted((f.rule, f.path) for f in report.findings if f.severity == "error")
    assert errors == [("crs-mixed", "labels/p.geojson"), ("raster-grid", "img/r3.tif")]
    msgs = {f.rule: f.message for f in report.set_findings}
    assert msgs["raster-grid"] == (
        "img/r3.tif: rasters not on one pixel grid: img/r3.tif origin is 0.5 px off "
        "img/r1.tif's grid (0.5 px in x); grid 2 of 2 (1 raster(s): img/r3.tif) is not grid 1 "
        "(1 raster(s): img/r1.tif) (raster-grid)"
    )


def test_a_crash_on_one_file_is_an_error_on_that_file(tmp_path: Path, monkeypatch: Any) -> None:
    from terrasnap.engine.validate import report as report_mod

    vectors, _ = _setup(tmp_path)

    def boom(path: str, *a: Any, **k: Any) -> Any:
        if path.endswith("b.geojson"):
            raise RuntimeError("odd data")
        return real(path, *a, **k)

    real = report_mod.validate_vector
    monkeypatch.setattr(report_mod, "validate_vector", boom)
    report = validate_paths(vectors, [], Policy(invalid_geometry="repair"), root=tmp_path / "src", workers=1)
    errors = [f for f in report.findings if f.severity == "error"]
    assert [f.message for f in errors] == [
        "labels/b.geojson: validation crashed: RuntimeError: odd data (internal)"]
    assert [v.path for v in report.vectors] == ["labels/a.geojson", "labels/b.geojson", "labels/c.geojson"]


def test_footprint_that_cannot_be_reprojected_is_a_warning(tmp_path: Path) -> None:
    vectors, _ = _setup(tmp_path)
    far = tif(tmp_path / "src" / "img" / "far.tif", 179.9)  # the far side of an orthographic target
    report = validate_paths(vectors[2:], [far], Policy(target_crs="+proj=ortho +lat_0=0 +lon_0=0"),
                            root=tmp_path / "src", workers=1)
    assert report.ok
    msgs = [f.message for f in report.set_findings if f.rule == "footprint"]
    assert msgs == ["imagery footprint could not be computed in +proj=ortho +lat_0=0 +lon_0=0: img/far.tif's "
                    "outline does not map into unknown; labels not checked against it (footprint)"]
    assert report.vectors[0].layers[0].outside_footprint == 0
