"""Generated geospatial data: the demo's sample set, the bad inputs of the engine tests, benchmark volumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

# A small area near Bern, in WGS84; rasters in UTM 32N cover it.
LON0, LAT0 = 7.40, 46.90


def square(x: float, y: float, d: float) -> list[list[list[float]]]:
    return [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]


def feature(coords: Any, props: dict[str, Any] | None = None, gtype: str = "Polygon") -> dict[str, Any]:
    return {"type": "Feature", "properties": props or {}, "geometry": {"type": gtype, "coordinates": coords}}


def write_geojson(path: Path, features: list[dict[str, Any]], **extra: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", **extra, "features": features}))
    return path


def buildings(n: int = 50, seed: int = 0, lon0: float = LON0, lat0: float = LAT0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x, y = lon0 + rng.uniform(0, 0.02), lat0 + rng.uniform(0, 0.02)
        out.append(feature(square(round(x, 7), round(y, 7), 0.0002), {"id": i, "label": "building"}))
    return out


BOWTIE = [[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]


def bowtie_at(x: float, y: float, d: float = 0.0002) -> list[list[list[float]]]:
    return [[[x, y], [x + d, y + d], [x + d, y], [x, y + d], [x, y]]]


def write_raster(path: Path, *, crs: str | None = "EPSG:32632", origin: tuple[float, float] = (380000.0, 5196000.0),
                 size: int = 256, res: float = 10.0, nodata: float | None = 0, tiled: bool = True,
                 dtype: str = "uint8", bands: int = 3, overviews: bool = True, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": dtype,
        "transform": from_origin(origin[0], origin[1], res, res), "compress": "deflate",
    }
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=256 if size >= 256 else 16 * (size // 16 or 1),
                       blockysize=256 if size >= 256 else 16 * (size // 16 or 1))
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, size=(bands, size, size)).astype(dtype)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if overviews:
            dst.build_overviews([2, 4], rasterio.enums.Resampling.nearest)
    return path


def make_demo(root: Path) -> Path:
    """The demo data set: labels with a few defects (repairable), two GeoTIFFs on one grid, a README."""
    root.mkdir(parents=True, exist_ok=True)
    feats = buildings(40, seed=1)
    feats.append(feature(bowtie_at(LON0 + 0.01, LAT0 + 0.01), {"id": 1000, "label": "bowtie"}))
    feats.append({"type": "Feature", "properties": {"id": 1001, "label": "null"}, "geometry": None})
    write_geojson(root / "labels" / "buildings.geojson", feats)
    write_geojson(root / "labels" / "roads.geojson", [
        feature([[LON0 + 0.001 * i, LAT0], [LON0 + 0.001 * i, LAT0 + 0.01]], {"id": i}, "LineString") for i in range(10)
    ])
    # UTM 32N tiles covering the labels, 5120 m apart = 512 px of 10 m: on one grid, tiled, with overviews.
    write_raster(root / "imagery" / "tile_a.tif", origin=(376000.0, 5200000.0), size=512, seed=1)
    write_raster(root / "imagery" / "tile_b.tif", origin=(381120.0, 5200000.0), size=512, seed=2)
    (root / "README.txt").write_text("Sample data made by terrasnap's demo.\n")
    return root
