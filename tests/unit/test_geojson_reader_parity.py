"""Whichever reader runs, a GeoJSON validates to the same findings, figures and normalized bytes.

Every file of a corpus that exercises the geometry rules (bow-ties, spikes, unclosed and short rings,
out-of-range and projected-looking coordinates, null and empty geometries, holes, multis, lines, points,
ids, dates, nulls, every attribute type) is validated twice under three policies — once with GDAL
forced (TERRASNAP_GEOJSON_READER=gdal), once as the engine chooses — and the results must be identical
except for which reader ran. Most of the corpus must take the fast reader, or this would prove nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from terrasnap.engine.validate.policy import Policy
from terrasnap.engine.validate.vector import validate_vector
from tests.support import sampledata as sd

SQ = sd.square(sd.LON0, sd.LAT0, 0.001)


def ring(*pts: tuple[float, float]) -> list[list[float]]:
    return [list(p) for p in pts]


def corpus() -> dict[str, list[dict[str, Any]]]:
    x, y = sd.LON0, sd.LAT0
    bow = sd.bowtie_at(x, y)
    spike = [ring((x, y), (x + 0.001, y), (x + 0.002, y), (x + 0.001, y), (x + 0.001, y + 0.001), (x, y))]
    unclosed = [ring((x, y), (x + 0.001, y), (x + 0.001, y + 0.001), (x, y + 0.001))]
    short = [ring((x, y), (x + 0.001, y), (x, y))]
    hole = [SQ[0], ring((x + 0.0002, y + 0.0002), (x + 0.0004, y + 0.0002), (x + 0.0004, y + 0.0004),
                        (x + 0.0002, y + 0.0002))]
    far = sd.square(200.0, 95.0, 1.0)
    projected = sd.square(600000.0, 5200000.0, 100.0)
    dup = [ring((x, y), (x, y), (x + 0.001, y), (x + 0.001, y + 0.001), (x, y))]
    props = [{"id": i, "name": f"b{i}", "h": i * 1.5, "ok": i % 2 == 0, "when": "2020-01-02", "none": None}
             for i in range(8)]
    return {
        "buildings": sd.buildings(300),
        "bowties": [sd.feature(bow if i % 3 == 0 else SQ, {"i": i}) for i in range(30)],
        "rules": [sd.feature(g, p) for g, p in zip([SQ, bow, spike, unclosed, short, hole, dup, far], props,
                                                    strict=True)],
        "null-and-empty": [sd.feature(SQ, {"i": 0}), {"type": "Feature", "properties": {"i": 1}, "geometry": None},
                           sd.feature([], {"i": 2}), sd.feature(hole, {"i": 3})],
        "projected-coords": [sd.feature(projected, {"i": i}) for i in range(3)],
        "out-of-range": [sd.feature(far, {"i": 0}), sd.feature(SQ, {"i": 1})],
        "multipolygons": [sd.feature([SQ, sd.square(x + 0.01, y, 0.001)], {"i": 0}, "MultiPolygon"),
                          sd.feature([bow], {"i": 1}, "MultiPolygon")],
        "lines": [sd.feature([[x, y], [x + 0.01, y + 0.01]], {"i": 0}, "LineString"),
                  sd.feature([[x, y]], {"i": 1}, "LineString"),
                  sd.feature([[x, y], [x, y]], {"i": 2}, "LineString")],
        "points": [sd.feature([x + i * 0.001, y], {"i": i, "s": None}, "Point") for i in range(20)]
                  + [sd.feature([190.0, 10.0], {"i": 99, "s": "far"}, "Point")],
        "multipoints": [sd.feature([[x, y], [x + 1, y]], {"i": 0}, "MultiPoint")],
        "big-ints": [sd.feature(SQ, {"n": 2**40 + i, "m": i}) for i in range(3)],
        "feature-ids": [{**sd.feature(SQ, {"i": i}), "id": 100 + i} for i in range(5)],
        "fallback-sparse": [sd.feature(SQ, {"a": 1}), sd.feature(SQ, {"b": "x", "a": 2})],
        "fallback-mixed": [sd.feature(SQ, {"i": 0}), sd.feature([SQ], {"i": 1}, "MultiPolygon")],
    }


POLICIES = {"default": Policy(), "repair": Policy(invalid_geometry="repair"), "skip": Policy(invalid_geometry="skip")}


def run(path: Path, policy: Policy, out: Path, reader: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, bytes | None]:
    monkeypatch.setenv("TERRASNAP_GEOJSON_READER", reader)
    res = validate_vector(path, policy, path.name, out)
    doc = res.to_dict()
    for la in doc["layers"]:
        la.pop("output")
        la.pop("reader")
        la.pop("reader_note")
    data = out.read_bytes() if out.exists() else None
    return doc, data


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_fast_reader_matches_gdal(tmp_path: Path, policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_files = 0
    cases = corpus()
    for name, features in cases.items():
        src = sd.write_geojson(tmp_path / f"{name}.geojson", features)
        gdal_doc, gdal_bytes = run(src, POLICIES[policy], tmp_path / f"{name}.gdal.parquet", "gdal", monkeypatch)
        auto_doc, auto_bytes = run(src, POLICIES[policy], tmp_path / f"{name}.auto.parquet", "auto", monkeypatch)
        assert auto_doc == gdal_doc, f"{name}: results differ\n{json.dumps(auto_doc)[:800]}\n{json.dumps(gdal_doc)[:800]}"
        assert auto_bytes == gdal_bytes, f"{name}: normalized bytes differ"
        monkeypatch.setenv("TERRASNAP_GEOJSON_READER", "auto")
        readers = {la.reader for la in validate_vector(src, POLICIES[policy], src.name).layers}
        fast_files += readers == {"arrow"}
        if name.startswith("fallback"):
            assert readers == {"gdal"}, name
    assert fast_files >= len(cases) - 3, f"only {fast_files} of {len(cases)} files took the fast reader"


def test_small_batches_give_the_same_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = sd.write_geojson(tmp_path / "b.geojson", sd.buildings(500))
    outs = {}
    for reader in ("gdal", "auto"):
        monkeypatch.setenv("TERRASNAP_GEOJSON_READER", reader)
        out = tmp_path / f"{reader}.parquet"
        validate_vector(src, Policy(invalid_geometry="repair"), "b.geojson", out, batch_size=64)
        outs[reader] = out.read_bytes()
    assert outs["gdal"] == outs["auto"]


RUNS = {
    # (later features' properties, the reader that must end up reading the file)
    "uniform": (lambda i: {"i": i, "s": f"x{i}"}, "arrow"),
    "int32-then-int64": (lambda i: {"i": i if i < 250 else 2**40 + i, "s": "x"}, "arrow"),
    "null-then-int": (lambda i: {"i": None if i < 250 else i, "s": "x"}, "arrow"),
    "int-then-real": (lambda i: {"i": i if i < 250 else i + 0.5, "s": "x"}, "arrow"),
    "number-then-string": (lambda i: {"i": i if i < 250 else "text", "s": "x"}, "gdal"),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_big_files_read_in_runs_match_gdal(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file past MAX_BYTES is read in runs by both readers; types that widen in a later run restart the
    fast reader with the wider types, anything it cannot reproduce hands the file to GDAL."""
    from terrasnap.engine.validate import geojson_arrow, vector

    props, want = RUNS[name]
    feats = [sd.feature(sd.bowtie_at(sd.LON0 + i * 1e-3, sd.LAT0) if i % 7 == 0 else
                        sd.square(sd.LON0 + i * 1e-3, sd.LAT0, 1e-4), props(i)) for i in range(300)]
    src = tmp_path / "big.geojson"
    src.write_text('{"type": "FeatureCollection", "features": [\n'
                   + ",\n".join(json.dumps(f) for f in feats) + "\n]}\n")
    monkeypatch.setattr(geojson_arrow, "MAX_BYTES", 10_000)
    monkeypatch.setattr(vector, "GEOJSON_CHUNKED_MIN_BYTES", 10_000)
    monkeypatch.setattr(vector, "GEOJSON_RUN_BYTES", 8_000)
    gdal_doc, gdal_bytes = run(src, POLICIES["repair"], tmp_path / "gdal.parquet", "gdal", monkeypatch)
    auto_doc, auto_bytes = run(src, POLICIES["repair"], tmp_path / "auto.parquet", "auto", monkeypatch)
    assert auto_doc == gdal_doc
    assert auto_bytes == gdal_bytes and auto_bytes is not None
    layer = validate_vector(src, POLICIES["repair"], src.name).layers[0]
    assert layer.reader == want, layer.reader_note
