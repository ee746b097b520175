"""raster-truncated's tag reader (engine/validate/tiff.py) on real GeoTIFFs: classic and BigTIFF, both byte
orders, strips and tiles, sparse blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from terrasnap.engine.validate.tiff import truncation_problems


def _tif(path: Path, **opts: object) -> Path:
    profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 1, "dtype": "uint8", "crs": "EPSG:32632",
               "transform": from_origin(0, 256, 1, 1), **opts}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(1, 255, (1, 256, 256), np.uint8))
    return path


@pytest.mark.parametrize("opts", [
    {},  # strips
    {"tiled": True, "blockxsize": 64, "blockysize": 64},
    {"tiled": True, "blockxsize": 64, "blockysize": 64, "BIGTIFF": "YES"},
    {"ENDIANNESS": "BIG"},
    {"BIGTIFF": "YES", "ENDIANNESS": "BIG", "compress": "deflate"},
], ids=["strips", "tiles", "bigtiff", "big-endian", "bigtiff-big-endian-deflate"])
def test_whole_files_pass_and_cut_files_are_found(opts: dict[str, object], tmp_path: Path) -> None:
    whole = _tif(tmp_path / "a.tif", **opts)
    assert truncation_problems(whole) == []
    data = whole.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 3 // 4])
    problems = truncation_problems(cut)
    assert problems and "full resolution" in problems[0] and f"the file has {len(data) * 3 // 4} bytes" in problems[0]


def test_sparse_blocks_are_not_truncation(tmp_path: Path) -> None:
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1, dtype="uint8", tiled=True,
                       blockxsize=64, blockysize=64, SPARSE_OK=True, nodata=0, crs="EPSG:32632",
                       transform=from_origin(0, 256, 1, 1)) as dst:
        dst.write(np.zeros((1, 64, 64), np.uint8), window=((0, 64), (0, 64)))  # the other tiles stay sparse
    with rasterio.open(path) as src:  # the test is about sparse blocks: make sure there are some
        assert src.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=1) in (None, "", "0")
    assert truncation_problems(path) == []


def test_an_ifd_loop_is_reported_not_followed(tmp_path: Path) -> None:
    path = _tif(tmp_path / "a.tif")
    data = bytearray(path.read_bytes())
    first = int.from_bytes(data[4:8], "little")
    n = int.from_bytes(data[first:first + 2], "little")
    nxt = first + 2 + 12 * n
    data[nxt:nxt + 4] = first.to_bytes(4, "little")  # the IFD points at itself
    path.write_bytes(bytes(data))
    assert any("loops" in p for p in truncation_problems(path))
