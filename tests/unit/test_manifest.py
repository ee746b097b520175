from __future__ import annotations

from terrasnap.engine.manifest import FileRow, manifest_bytes, read_manifest, snapshot_id


def rows(order: list[int], sha_b: str = "b" * 64) -> list[FileRow]:
    base = [
        FileRow("raw/a.geojson", "raw", "vector", 10, "a" * 64, "1" * 32, {"features": 3, "epsg": 4326}),
        FileRow("raw/b.tif", "raw", "raster", 20, sha_b, "2" * 32, {"width": 4, "transform": [1.0, 0, 0, 0, -1.0, 0]}),
        FileRow("normalized/a.geojson.parquet", "normalized", "vector", 5, "c" * 64, "3" * 32),
    ]
    return [base[i] for i in order]


def test_snapshot_id_ignores_order_and_changes_with_content_or_policy() -> None:
    policy = {"target_crs": "EPSG:4326"}
    a = snapshot_id(rows([0, 1, 2]), policy)
    assert a == snapshot_id(rows([2, 0, 1]), policy)
    assert a.startswith("sha256:") and len(a) == 7 + 64
    assert a != snapshot_id(rows([0, 1, 2], sha_b="d" * 64), policy)
    assert a != snapshot_id(rows([0, 1, 2]), {"target_crs": "EPSG:3857"})
    assert a != snapshot_id(rows([0, 1, 2]), policy, {"dvc.yaml": {"stages": {}}})


def test_manifest_is_byte_deterministic_and_reads_back() -> None:
    one = manifest_bytes(rows([0, 1, 2]), "sha256:x")
    two = manifest_bytes(rows([1, 2, 0]), "sha256:x")
    assert one == two
    table, meta = read_manifest(one)
    assert meta["snapshotID"] == "sha256:x"
    assert [r["path"] for r in table] == ["normalized/a.geojson.parquet", "raw/a.geojson", "raw/b.tif"]
    tif = table[2]
    assert tif["kind"] == "raster" and tif["width"] == 4 and tif["features"] is None
    assert table[1]["epsg"] == 4326 and table[1]["features"] == 3
