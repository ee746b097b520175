"""report.json keeps each CRS once and aggregates repeated findings; what the manifest reads is unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

from terrasnap.engine.stage import aggregate_findings, compact_crs, expand_crs

WKT, PJ = "GEOGCRS[\"WGS 84\"]" * 50, json.dumps({"type": "GeographicCRS", "name": "WGS 84"})


def _report(n: int) -> dict[str, Any]:
    files: dict[str, Any] = {}
    layers: dict[str, Any] = {}
    for i in range(n):
        files[f"raw/chips/c{i}.tif"] = {"kind": "raster", "crs_wkt": "PROJCRS[utm]", "crs_projjson": "{}", "epsg": 32632}
        files[f"raw/labels/c{i}.geojson"] = {"kind": "vector", "crs_wkt": WKT, "crs_projjson": PJ, "features": 4}
        files[f"normalized/labels/c{i}.geojson.parquet"] = {"kind": "vector", "crs_wkt": WKT, "crs_projjson": PJ}
        layers[f"raw/labels/c{i}.geojson"] = [{"name": "c", "crs_wkt": WKT, "crs_projjson": PJ,
                                              "target_crs_wkt": WKT, "target_crs_projjson": PJ}]
    files["raw/README.md"] = {"kind": "other"}
    return {"ok": True, "files": files, "layers": layers, "findings": []}


def test_each_crs_is_written_once_and_reads_back_the_same() -> None:
    doc = _report(1000)
    before = copy.deepcopy(doc)
    compact = compact_crs(doc)
    text = json.dumps(compact)
    assert text.count("GEOGCRS") == 50 and len(compact["crs"]) == 2
    assert len(text) < len(json.dumps(before)) / 10
    assert expand_crs(json.loads(text)) == before


def test_a_report_without_a_crs_table_reads_as_it_is() -> None:
    doc = _report(2)
    assert expand_crs(copy.deepcopy(doc)) == doc


def test_repeated_findings_are_one_entry_per_rule() -> None:
    findings = [{"rule": "raster-nodata", "severity": "warning", "path": f"c{i}.tif", "count": 1,
                 "message": f"c{i}.tif: nodata is not set"} for i in range(10_000)]
    findings.append({"rule": "repaired", "severity": "warning", "path": "a.geojson", "count": 7, "message": "m"})
    groups = aggregate_findings(findings)
    assert [(g["rule"], g["count"], g["files"], len(g["examples"])) for g in groups] == [
        ("raster-nodata", 10_000, 10_000, 3), ("repaired", 7, 1, 1)]
    assert groups[0]["examples"][0] == {"path": "c0.tif", "message": "c0.tif: nodata is not set"}
