"""Configurable rules through the real command: a training set in two CRSs (Natural Earth-style countries in
EPSG:4326 beside tiles in EPSG:3857) is refused by default and snapshotted, reprojected, with
`--rule crs-mixed=warning --rule rfc7946-crs=warning` or the same rules in a `--policy` file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import shapely
from click.testing import CliRunner
from pyproj import CRS, Transformer

from terrasnap.api import policy as schema
from terrasnap.cli import main
from terrasnap.engine.fetch import fetch
from terrasnap.engine.manifest import read_manifest
from terrasnap.engine.store import Store
from tests.support import sampledata as sd

LENIENT = ["--rule", "crs-mixed=warning", "--rule", "rfc7946-crs=warning"]


def snap(source: Path, store: str, *extra: str, tmp: Path) -> tuple[int, dict[str, Any], str]:
    result_file = tmp / f"result-{len(list(tmp.glob('result-*')))}.json"
    res = CliRunner().invoke(main, ["snapshot", str(source), "--store", store, "--result-file", str(result_file),
                                    *extra])
    return res.exit_code, json.loads(result_file.read_text()), res.output


def _to_3857(ring: list[list[float]]) -> list[list[float]]:
    t = Transformer.from_crs(4326, 3857, always_xy=True)
    return [list(t.transform(x, y)) for x, y in ring]


def make_two_crs_set(root: Path) -> Path:
    """countries.geojson: plain RFC 7946 (WGS84 lon/lat) polygons, like Natural Earth's admin-0 countries;
    tiles.geojson: the same area's tiles in Web Mercator, declared the old way (a legacy `crs` member), as
    tile indexes are; grid.gpkg: a GeoPackage in EPSG:3857."""
    countries = [sd.feature(sd.square(5.9 + i, 45.8, 0.9), {"name": f"country-{i}", "iso_a3": f"C{i:02d}"})
                 for i in range(4)]
    sd.write_geojson(root / "labels" / "countries.geojson", countries)
    tiles = [sd.feature([_to_3857(sd.square(sd.LON0 + 0.01 * i, sd.LAT0, 0.01)[0])], {"tile": i}) for i in range(6)]
    sd.write_geojson(root / "tiles" / "tiles.geojson", tiles,
                     crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}})
    import geopandas as gpd

    cells = [shapely.Polygon(_to_3857(sd.square(sd.LON0 + 0.02 * i, sd.LAT0 + 0.05, 0.02)[0])) for i in range(3)]
    gpd.GeoDataFrame({"cell": list(range(3))}, geometry=cells, crs="EPSG:3857").to_file(
        root / "tiles" / "grid.gpkg", driver="GPKG")
    return root


@pytest.fixture
def two_crs(tmp_path: Path) -> Path:
    return make_two_crs_set(tmp_path / "src")


def store_is_empty(url: str) -> bool:
    try:
        return not list(Store.from_url(url).list_prefix(""))
    except Exception:
        return True


def test_two_crs_set_is_refused_by_default_and_with_only_one_rule_relaxed(two_crs: Path, tmp_path: Path,
                                                                          file_store: str) -> None:
    code, doc, _ = snap(two_crs, file_store, tmp=tmp_path)
    assert code == 1 and doc["error"]["reason"] == "ValidationFailed"
    assert "(crs-mixed)" in doc["error"]["message"] or "(rfc7946-crs)" in doc["error"]["message"]
    code, doc, _ = snap(two_crs, file_store, "--rule", "crs-mixed=warning", tmp=tmp_path)
    assert code == 1 and "tiles/tiles.geojson" in doc["error"]["message"] and "(rfc7946-crs)" in doc["error"]["message"]
    assert store_is_empty(file_store), "a refused snapshot must leave the store untouched"


def test_two_crs_set_snapshots_reprojected_with_both_rules_at_warning(two_crs: Path, tmp_path: Path,
                                                                     file_store: str) -> None:
    code, doc, out = snap(two_crs, file_store, *LENIENT, tmp=tmp_path)
    assert code == 0, out
    store = Store.from_url(file_store)
    folder = store.rel_from_uri(doc["manifest"]).rsplit("/", 1)[0]
    report = json.loads(store.read_bytes(f"{folder}/report.json"))
    counts = report["validation"]["counts"]
    # the 3857 layers differ from the majority's CRS? No: two layers are 3857, one is 4326 -> the reference is
    # 3857 and the countries are the odd one out; either way every finding is a warning, and they are counted
    assert set(counts["crs-mixed"]) == {"warning"} and counts["rfc7946-crs"] == {"warning": 1}
    warnings = sum(f["count"] for f in report["findings"] if f["severity"] == "warning")
    assert doc["summary"]["warnings"] == warnings >= counts["crs-mixed"]["warning"] + 1
    assert report["policy"]["rules"]["crs-mixed"] == "warning" and report["policy"]["rules"]["rfc7946-crs"] == "warning"
    # every layer's normalized GeoParquet is in the target CRS, and its coordinates really are lon/lat
    fetched = tmp_path / "fetched"
    fetch(doc["manifest"], fetched, role="normalized")
    parquets = sorted(fetched.rglob("*.parquet"))
    assert len(parquets) == 3
    wgs84 = CRS.from_epsg(4326)
    for p in parquets:
        geo = json.loads(pq.read_schema(p).metadata[b"geo"])
        crs = CRS.from_json_dict(geo["columns"]["geometry"]["crs"])
        assert crs.equals(wgs84, ignore_axis_order=True), (p, crs.name)
        xmin, ymin, xmax, ymax = shapely.total_bounds(shapely.from_wkb(pq.read_table(p)["geometry"].to_pylist()))
        assert 5.0 < xmin < xmax < 10.0 and 45.0 < ymin < ymax < 48.0, (p, xmin, ymin, xmax, ymax)
    rows, _ = read_manifest(store.read_bytes(store.rel_from_uri(doc["manifest"])))
    assert {r["epsg"] for r in rows if r["path"].startswith("normalized/")} == {4326}
    assert {r["epsg"] for r in rows if r["path"].startswith("raw/tiles/")} == {3857}


def test_a_policy_file_is_the_crd_validation_object_and_flags_override_it(two_crs: Path, tmp_path: Path,
                                                                         file_store: str) -> None:
    flags_code, flags_doc, _ = snap(two_crs, file_store, *LENIENT, tmp=tmp_path)
    assert flags_code == 0
    # the same rules, in YAML, exactly as a DatasetSnapshot's spec.validation (defaults spelled out too)
    policy = tmp_path / "policy.yaml"
    policy.write_text('targetCRS: EPSG:4326\ninvalidGeometry: reject\nmissingCRS: reject\n'
                      'rules:\n  crs-mixed: warning\n  rfc7946-crs: warning\n  raster-cog: warning\n')
    code, doc, out = snap(two_crs, file_store, "--policy", str(policy), tmp=tmp_path)
    assert code == 0, out
    assert doc["snapshotID"] == flags_doc["snapshotID"]  # same bytes + same policy -> same id
    # JSON works too; a flag beats the file
    pjson = tmp_path / "policy.json"
    pjson.write_text(json.dumps({"rules": {"crs-mixed": "warning", "rfc7946-crs": "warning"}}))
    code, doc, _ = snap(two_crs, file_store, "--policy", str(pjson), "--rule", "crs-mixed=error", tmp=tmp_path)
    assert code == 1 and "(crs-mixed)" in doc["error"]["message"]
    code, doc, _ = snap(two_crs, file_store, "--policy", str(pjson), "--target-crs", "EPSG:3857", tmp=tmp_path)
    assert code == 0 and doc["snapshotID"] != flags_doc["snapshotID"]


def test_an_empty_policy_file_and_one_with_every_default_spelled_out_give_the_same_id(tmp_path: Path,
                                                                                       file_store: str) -> None:
    src = tmp_path / "src"
    sd.write_geojson(src / "a.geojson", sd.buildings(4))
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"targetCRS": "EPSG:4326", "invalidGeometry": "reject", "missingCRS": "reject",
                                "rules": {r.name: r.default for r in schema.RULES}}))
    ids = set()
    for extra in ([], ["--policy", str(empty)], ["--policy", str(full)]):
        code, doc, out = snap(src, file_store, *extra, tmp=tmp_path)
        assert code == 0, out
        ids.add(doc["snapshotID"])
    assert len(ids) == 1


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--rule", "crs-mix=warning"], r"unknown rule 'crs-mix'; valid rules: coord-nonfinite, .*crs-mixed"),
    (["--rule", "crs-mixed=warn"], r"crs-mixed: level must be one of error, warning, off, not 'warn'"),
    (["--rule", "crs-mixed"], r"expected RULE=LEVEL"),
    (["--rule", "parse=off"], r"parse: cannot be set to off \(allowed: error\): nothing of the file could be read"),
    (["--rule", "coord-nonfinite=warning"], r"coord-nonfinite: cannot be set to warning"),
])
def test_a_bad_rule_is_a_usage_error_naming_it(extra: list[str], pattern: str, tmp_path: Path,
                                               file_store: str) -> None:
    src = tmp_path / "src"
    sd.write_geojson(src / "a.geojson", sd.buildings(2))
    code, doc, _ = snap(src, file_store, *extra, tmp=tmp_path)
    assert code == 2 and doc["error"]["reason"] == "UsageError"
    assert re.search(pattern, doc["error"]["message"]), doc["error"]["message"]
    assert store_is_empty(file_store)


@pytest.mark.parametrize(("content", "pattern"), [
    ("rules:\n  raster-cog: off\n", r'write "off" in quotes'),
    ("target_crs: EPSG:4326\n", r"unknown field\(s\) target_crs; valid fields: targetCRS"),
    ("- crs-mixed\n", r"expected an object"),
    ("rules: {crs-mixed: [\n", r"not YAML or JSON"),
])
def test_a_bad_policy_file_is_a_usage_error(content: str, pattern: str, tmp_path: Path, file_store: str) -> None:
    src = tmp_path / "src"
    sd.write_geojson(src / "a.geojson", sd.buildings(2))
    policy = tmp_path / "p.yaml"
    policy.write_text(content)
    code, doc, _ = snap(src, file_store, "--policy", str(policy), tmp=tmp_path)
    assert code == 2 and re.search(pattern, doc["error"]["message"]), doc["error"]["message"]


def test_validate_takes_the_same_rules(two_crs: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["validate", str(two_crs)])
    assert res.exit_code == 1
    report = tmp_path / "report.json"
    res = CliRunner().invoke(main, ["validate", str(two_crs), *LENIENT, "--report", str(report)])
    assert res.exit_code == 0, res.output
    assert json.loads(report.read_text())["summary"]["errors"] == 0


def test_rasters_in_two_utm_zones_pass_under_raster_grid_warning_and_the_report_lists_the_grids(
        tmp_path: Path, file_store: str) -> None:
    src = tmp_path / "src"
    sd.write_geojson(src / "labels.geojson", sd.buildings(3))
    sd.write_raster(src / "img" / "a_32632.tif", size=64)
    sd.write_raster(src / "img" / "b_32632.tif", size=64, origin=(380640.0, 5196000.0))
    sd.write_raster(src / "img" / "c_32633.tif", crs="EPSG:32633", origin=(-90000.0, 5196000.0), size=64)
    code, doc, _ = snap(src, file_store, tmp=tmp_path)
    assert code == 1 and "(raster-grid)" in doc["error"]["message"]
    code, doc, out = snap(src, file_store, "--rule", "raster-grid=warning", tmp=tmp_path)
    assert code == 0, out
    store = Store.from_url(file_store)
    report = json.loads(store.read_bytes(store.rel_from_uri(doc["metadata"]).rsplit("/", 1)[0] + "/report.json"))
    grids = [(g["crs"], g["files"]) for g in report["validation"]["grids"]]
    assert grids == [("EPSG:32632", ["img/a_32632.tif", "img/b_32632.tif"]), ("EPSG:32633", ["img/c_32633.tif"])]
    (finding,) = [f for f in report["findings"] if f["rule"] == "raster-grid"]
    assert finding["severity"] == "warning" and "grid 2 of 2 (1 raster(s): img/c_32633.tif)" in finding["message"]


def test_the_rules_command_prints_the_table() -> None:
    res = CliRunner().invoke(main, ["rules"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split() == ["RULE", "DEFAULT", "DOWNGRADE", "CHECKS"]
    for r in schema.RULES:
        row = next(line for line in lines if line.startswith(r.name + " "))
        assert row.split()[1:3] == [r.default, "yes" if r.downgradable else "no"], row
    assert any(line.strip().startswith("why not: nothing of the file could be read") for line in lines)
    res = CliRunner().invoke(main, ["rules", "--json"])
    table = json.loads(res.output)
    assert [r["name"] for r in table] == [r.name for r in schema.RULES]
    parse = next(r for r in table if r["name"] == "parse")
    assert parse["downgradable"] is False and parse["levels"] == ["error"] and parse["note"]
