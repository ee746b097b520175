"""geojson.py: cutting a FeatureCollection into runs of whole features without parsing it all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from terrasnap.engine.validate.geojson import feature_runs, features_start


def fc_text(features: list[dict[str, Any]], before: str = "", after: str = "") -> str:
    return '\ufeff{"type": "FeatureCollection", ' + before + '"features": [\n' + ",\n".join(
        json.dumps(f) for f in features) + "\n]" + after + "}"


def feat(i: int, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"i": i, **props},
            "geometry": {"type": "Point", "coordinates": [i, 0]}}


def runs_of(tmp_path: Path, text: str, run_bytes: int, crs: Any = None) -> list[dict[str, Any]]:
    p = tmp_path / "f.geojson"
    p.write_bytes(text.encode("utf-8"))
    start = features_start(str(p))
    assert start is not None
    return [json.loads(r) for r in feature_runs(str(p), start, run_bytes, crs)]


def test_features_start_skips_members_before_features(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    text = fc_text([feat(0)], before='"name": "x", "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}, ')
    p.write_bytes(text.encode("utf-8"))
    start = features_start(str(p))
    assert start is not None and p.read_bytes()[start - 1:start] == b"["
    assert features_start(str(p), head_bytes=20) is None  # not in the head: read the ordinary way
    q = tmp_path / "b.geojson"
    q.write_text(json.dumps(feat(0)))  # a lone Feature has no features array
    assert features_start(str(q)) is None


@pytest.mark.parametrize("run_bytes", [1, 50, 200, 10_000])
def test_runs_cover_every_feature_once_in_order(tmp_path: Path, run_bytes: int) -> None:
    features = [feat(i, s='", {"type": "Feature"} ]', nested=[{"type": "Feature"}, {"a": 1}]) for i in range(37)]
    text = fc_text(features, after=', "bbox": [0, 0, 36, 0], "extra": {"type": "Feature", "k": [1]}')
    runs = runs_of(tmp_path, text, run_bytes)
    assert [f["properties"]["i"] for r in runs for f in r["features"]] == list(range(37))
    assert all(r["type"] == "FeatureCollection" for r in runs)
    if run_bytes == 10_000:
        assert len(runs) == 1
    if run_bytes == 1:
        assert len(runs) == 37


def test_runs_carry_the_crs_member(tmp_path: Path) -> None:
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}
    runs = runs_of(tmp_path, fc_text([feat(i) for i in range(5)]), 1, crs)
    assert len(runs) == 5 and all(r["crs"] == crs for r in runs)


def test_empty_feature_array_has_no_runs(tmp_path: Path) -> None:
    assert runs_of(tmp_path, fc_text([]), 10) == []


def test_a_feature_bigger_than_a_run(tmp_path: Path) -> None:
    big = feat(1, blob="x" * 300_000)
    runs = runs_of(tmp_path, fc_text([feat(0), big, feat(2)]), 100)
    # a run ends at the first feature start after run_bytes: feature 0 and the big one, then feature 2
    assert [[f["properties"]["i"] for f in r["features"]] for r in runs] == [[0, 1], [2]]
    assert runs[0]["features"][1]["properties"]["blob"] == "x" * 300_000


def test_non_ascii_text_survives(tmp_path: Path) -> None:
    runs = runs_of(tmp_path, fc_text([feat(i, name="Zürich ☃ 東京") for i in range(4)]), 30)
    assert [f["properties"]["name"] for r in runs for f in r["features"]] == ["Zürich ☃ 東京"] * 4


def test_pretty_printed_collection(tmp_path: Path) -> None:
    features = [feat(i, tags={"a": [1, {"b": None}], "type": "Feature"}) for i in range(12)]
    p = tmp_path / "pretty.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": features, "bbox": [0, 0, 11, 0]}, indent=2))
    start = features_start(str(p))
    assert start is not None
    runs = [json.loads(r) for r in feature_runs(str(p), start, 150)]
    assert len(runs) > 3
    assert [f["properties"]["i"] for r in runs for f in r["features"]] == list(range(12))
