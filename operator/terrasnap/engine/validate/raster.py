"""Raster checks from headers and TIFF tags (rasterio; pixels are read only under the raster-decode
rule), per file and across the set.

Per file: content that is a TIFF (format-mismatch), CRS, a real geotransform, nodata, COG layout,
image data inside the file (raster-truncated, tiff.py). Across files: one CRS, one pixel size, origins
a whole number of pixels apart (so tiles/chips line up), consistent dtype and band count, and vector
labels inside the union of the imagery footprints.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from terrasnap.engine.formats import raster_format
from terrasnap.engine.validate.content import Refused, safe_open_path
from terrasnap.engine.validate.findings import Collector, Finding, count_map, sort_key
from terrasnap.engine.validate.policy import Policy
from terrasnap.engine.validate.rules import crs_is_same, fmt
from terrasnap.engine.validate.tiff import truncation_problems
from terrasnap.engine.validate.vector import crs_fields

GRID_TOLERANCE_PX = 1e-6
_PIXEL_SIZE_RTOL = 1e-9
_COG_MIN_SIZE = 512  # GDAL's COG driver makes no overviews below this size; none needed


def is_raster_path(path: str | os.PathLike[str]) -> bool:
    return raster_format(os.fspath(path)) is not None


@dataclass
class RasterInfo:
    path: str
    crs_wkt: str | None = None
    crs_projjson: str | None = None
    epsg: int | None = None
    width: int = 0
    height: int = 0
    bands: int = 0
    dtypes: list[str] = field(default_factory=list)
    nodata: float | None = None
    transform: list[float] | None = None  # GDAL order would differ: this is rasterio's a, b, c, d, e, f
    block_shape: list[int] | None = None  # [rows, cols] of band 1
    tiled: bool = False
    overviews: list[int] = field(default_factory=list)
    layout: str | None = None  # GDAL's IMAGE_STRUCTURE LAYOUT ("COG" for a file with the COG header)
    cog: bool = False
    driver: str | None = None
    findings: list[Finding] = field(default_factory=list)
    kind: str = "raster"

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def dtype(self) -> str:
        return ",".join(dict.fromkeys(self.dtypes))

    @property
    def crs(self) -> CRS | None:
        return _crs(self.crs_wkt) if self.crs_wkt else None

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None and self.transform is not None

    def summary(self) -> dict[str, Any]:
        """The manifest row's raster fields (contracts.md). nodata stays a float (NaN is a common
        nodata for float rasters; the manifest column is float64), so strict JSON needs allow_nan."""
        return {"crs_wkt": self.crs_wkt, "crs_projjson": self.crs_projjson, "epsg": self.epsg,
                "width": self.width, "height": self.height, "bands": self.bands, "dtype": self.dtype,
                "nodata": self.nodata,
                "transform": self.transform, "block_shape": self.block_shape, "cog": self.cog}

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "driver": self.driver,
                "tiled": self.tiled, "overviews": self.overviews, "layout": self.layout,
                "counts": count_map(self.findings), "summary": self.summary(),
                "findings": [f.to_dict() for f in sorted(self.findings, key=sort_key)]}


def inspect_raster(path: str | os.PathLike[str], rel_path: str | None = None,
                   policy: Policy | None = None) -> RasterInfo:
    """Read one raster's header and judge it alone. Never raises for bad data."""
    policy = policy or Policy()
    path = os.fspath(path)
    rel = rel_path or os.path.basename(path)
    info = RasterInfo(rel)
    col = Collector(rel, policy=policy)
    # only the driver the extension names: GDAL opens by content, and a .tif holding a VRT could read any file
    driver = raster_format(path) or "GTiff"
    try:
        path = safe_open_path(path, driver)
    except Refused as exc:
        col.add(exc.rule, exc.what)
        info.findings = col.finish()
        return info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, driver=driver) as src:
                info.driver = src.driver
                info.width, info.height, info.bands = src.width, src.height, src.count
                info.dtypes = list(src.dtypes)
                info.nodata = None if src.nodata is None else float(src.nodata)
                info.block_shape = [int(v) for v in src.block_shapes[0]] if src.count else None
                info.tiled = bool(src.profile.get("tiled", False))
                info.overviews = [int(v) for v in src.overviews(1)] if src.count else []
                info.layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
                layout_problems = _tiff_layout_problems(src) if src.driver == "GTiff" and info.tiled else []
                crs = src.crs
                t = src.transform
                gcps, _ = src.gcps
    except RasterioIOError as exc:
        col.add("parse", f"cannot open raster as {driver} (the format its extension names): {exc}")
        info.findings = col.finish()
        return info
    _check_data(path, policy, col)

    if crs is None:
        assumed = policy.assumed_crs
        if assumed is None or gcps:
            col.add("raster-crs-missing", "raster has no CRS")
        else:
            col.add("raster-crs-missing", f"raster has no CRS; assuming {assumed} (policy missingCRS)", hint=True)
            info.crs_wkt, info.crs_projjson, info.epsg = crs_fields(CRS.from_user_input(assumed)).values()
    else:
        f = _crs_fields(crs.to_wkt())
        info.crs_wkt, info.crs_projjson, info.epsg = f["crs_wkt"], f["crs_projjson"], f["epsg"]

    if t.is_identity:
        what = "georeferenced by GCPs only (no geotransform)" if gcps else "no geotransform (identity transform)"
        col.add("raster-transform", what)
    elif t.a == 0 or t.e == 0:
        col.add("raster-transform", f"degenerate geotransform {tuple(t)[:6]}")
    else:
        info.transform = [float(v) for v in tuple(t)[:6]]
        if t.b != 0 or t.d != 0:
            col.add("raster-rotated", f"rotated/sheared geotransform (b={fmt(t.b)}, d={fmt(t.d)})")

    if info.nodata is None:
        col.add("raster-nodata", "nodata is not set")

    problems = []
    if not info.tiled:
        problems.append("not tiled")
    if not info.overviews and max(info.width, info.height) > _COG_MIN_SIZE:
        problems.append("no overviews")
    if info.layout is not None and info.layout.upper() != "COG":
        problems.append(f"layout {info.layout}")
    problems += layout_problems
    info.cog = not problems
    if problems:
        col.add("raster-cog", f"not a Cloud-Optimized GeoTIFF: {', '.join(problems)}")
    info.findings = col.finish()
    return info


def _check_data(path: str, policy: Policy, col: Collector) -> None:
    """raster-truncated from the TIFF tags (always: a few small reads), and under raster-decode every
    block decoded (a full read of the pixels, asked for by the policy)."""
    for what in truncation_problems(path):
        col.add("raster-truncated", what)
    if policy.severity("raster-decode") is not None:
        for what in decode_failures(path):
            col.add("raster-truncated", what)


def decode_failures(path: str, limit: int = 10) -> list[str]:
    """The first `limit` blocks (band, row, column) that fail to decode, with GDAL's message."""
    out: list[str] = []
    with rasterio.open(path, driver="GTiff") as src:
        for bidx in src.indexes:
            for (row, colno), window in src.block_windows(bidx):
                try:
                    src.read(bidx, window=window)
                except RasterioIOError as exc:  # rasterio chains GDAL's own message as the cause
                    out.append(f"band {bidx} block (row {row}, column {colno}) does not decode: "
                               f"{exc.__cause__ or exc}")
                    if len(out) >= limit:
                        return out
    return out


def _tiff_layout_problems(src: Any) -> list[str]:
    """The file-layout part of GDAL's COG validation (validate_cloud_optimized_geotiff.py), from the
    TIFF offsets GDAL exposes: every IFD (full resolution first, then overviews) before any image
    data, and the overviews' data before the full resolution's, smallest first, so a reader gets the
    header in one request and a preview before the whole image."""
    def offset(item: str, ovr: int | None) -> int | None:
        kw = {} if ovr is None else {"ovr": ovr}
        value = src.get_tag_item(item, "TIFF", bidx=1, **kw)
        return int(value) if value not in (None, "", "0") else None

    levels: list[int | None] = [None, *range(len(src.overviews(1)))]
    ifds = [offset("IFD_OFFSET", o) for o in levels]
    data = [offset("BLOCK_OFFSET_0_0", o) for o in levels]
    problems = []
    known_ifds = [v for v in ifds if v is not None]
    if known_ifds != sorted(known_ifds):
        problems.append("IFDs not in order (full resolution, then overviews)")
    known_data = [v for v in data if v is not None]
    if known_ifds and known_data and max(known_ifds) > min(known_data):
        problems.append("IFDs not all before the image data")
    if len(known_data) == len(data) and known_data != sorted(known_data, reverse=True):
        problems.append("overview data not before the full-resolution data")
    return problems


# Thousands of chips share a handful of CRSs: parse each WKT, find its EPSG code and build its transformer
# once per process, not once per raster (pyproj's parsing and EPSG lookup cost ~1 ms each).
@functools.lru_cache(maxsize=256)
def _crs(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


@functools.lru_cache(maxsize=256)
def _crs_fields_cached(wkt: str) -> tuple[tuple[str, Any], ...]:
    return tuple(crs_fields(_crs(wkt)).items())


def _crs_fields(wkt: str) -> dict[str, Any]:
    return copy.deepcopy(dict(_crs_fields_cached(wkt)))  # callers own what they get (projjson is a dict)


@functools.lru_cache(maxsize=256)
def _transformer(src_wkt: str, target_wkt: str) -> Transformer | None:
    src, target = _crs(src_wkt), _crs(target_wkt)
    return None if crs_is_same(src, target) else Transformer.from_crs(src, target, always_xy=True)


# --- footprints -------------------------------------------------------------------------------------

def raster_footprint(info: RasterInfo, target: CRS, densify: int = 21) -> Any:
    """The raster's outline in `target`, edges densified so a reprojected footprint bends correctly."""
    assert info.transform is not None and info.crs_wkt is not None
    a, b, c, d, e, f = info.transform
    s = np.linspace(0.0, 1.0, densify)
    w, h = info.width, info.height
    cols = np.concatenate([s * w, np.full(densify, w), (1 - s) * w, np.zeros(densify)])
    rows = np.concatenate([np.zeros(densify), s * h, np.full(densify, h), (1 - s) * h])
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    transformer = _transformer(info.crs_wkt, target.to_wkt())
    if transformer is not None:
        xs, ys = transformer.transform(xs, ys, errcheck=False)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError(f"{info.path}'s outline does not map into {target.name}")
    return shapely.make_valid(shapely.Polygon(np.column_stack([xs, ys])))


def footprint_union(infos: Sequence[RasterInfo], target: CRS) -> Any | None:
    shapes = [raster_footprint(i, target) for i in infos if i.georeferenced]
    return shapely.union_all(shapes) if shapes else None


# --- the set ----------------------------------------------------------------------------------------

@dataclass
class Grid:
    """Rasters on one pixel grid: one CRS, one pixel size, origins a whole number of pixels apart."""

    number: int  # 1-based, in path order of each grid's first raster
    crs: CRS
    crs_label: str
    pixel: tuple[float, float]  # (a, e) of the geotransform: x size and (negative) y size
    origin: tuple[float, float]  # (c, f) of the grid's first raster
    files: list[RasterInfo] = field(default_factory=list)

    def offset_px(self, info: RasterInfo) -> tuple[float, float]:
        """How far info's origin is off this grid, in pixels (0 <= v < 0.5 per axis)."""
        assert info.transform is not None
        dx = (info.transform[2] - self.origin[0]) / self.pixel[0]
        dy = (info.transform[5] - self.origin[1]) / self.pixel[1]
        return abs(dx - round(dx)), abs(dy - round(dy))

    def holds(self, info: RasterInfo) -> bool:
        assert info.transform is not None and info.crs_wkt is not None
        a, e = info.transform[0], info.transform[4]
        return (crs_is_same(_crs(info.crs_wkt), self.crs)
                and math.isclose(a, self.pixel[0], rel_tol=_PIXEL_SIZE_RTOL)
                and math.isclose(e, self.pixel[1], rel_tol=_PIXEL_SIZE_RTOL)
                and max(self.offset_px(info)) <= GRID_TOLERANCE_PX)

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.number, "crs": self.crs_label, "pixel_size": [abs(self.pixel[0]), abs(self.pixel[1])],
                "origin": list(self.origin), "files": [i.path for i in self.files]}


def raster_grids(infos: Sequence[RasterInfo]) -> list[Grid]:
    """The pixel grids of the georeferenced rasters, each with the files on it (path order throughout:
    grid 1 is the first raster's, the reference)."""
    grids: list[Grid] = []
    for info in sorted((i for i in infos if i.georeferenced), key=lambda i: i.path):
        grid = next((g for g in grids if g.holds(info)), None)
        if grid is None:
            assert info.transform is not None and info.crs_wkt is not None
            t = info.transform
            grid = Grid(len(grids) + 1, _crs(info.crs_wkt), _crs_label(info), (t[0], t[4]), (t[2], t[5]))
            grids.append(grid)
        grid.files.append(info)
    return grids


def _names(files: Sequence[RasterInfo], limit: int = 10) -> str:
    names = ", ".join(i.path for i in files[:limit])
    return names + (f" (+{len(files) - limit} more)" if len(files) > limit else "")


def _grid_difference(grid: Grid, ref: Grid) -> str:
    """How a grid's first raster differs from the reference grid's first raster."""
    first, ref_first = grid.files[0], ref.files[0]
    if not crs_is_same(grid.crs, ref.crs):
        return f"CRS {grid.crs_label} differs from {ref_first.path}'s {ref.crs_label}"
    (a, e), (ra, re_) = grid.pixel, ref.pixel
    if not (math.isclose(a, ra, rel_tol=_PIXEL_SIZE_RTOL) and math.isclose(e, re_, rel_tol=_PIXEL_SIZE_RTOL)):
        return (f"pixel size {fmt(a)} x {fmt(abs(e))} differs from {ref_first.path}'s "
                f"{fmt(ra)} x {fmt(abs(re_))}")
    off_x, off_y = ref.offset_px(first)
    axes = ", ".join(f"{fmt(v)} px in {axis}" for v, axis in ((off_x, "x"), (off_y, "y")) if v > GRID_TOLERANCE_PX)
    return f"{first.path} origin is {fmt(max(off_x, off_y))} px off {ref_first.path}'s grid ({axes})"


def check_raster_set(infos: Sequence[RasterInfo],
                     vector_bboxes: Mapping[str, Sequence[float]] | Policy | None = None,
                     policy: Policy | None = None) -> list[Finding]:
    """Rules across rasters (one grid) and between rasters and labels, at the policy's levels.

    vector_bboxes: label file path -> bbox [xmin, ymin, xmax, ymax] in the policy's target CRS.
    Compared in the target CRS. Files are taken in path order so the reference raster is stable.
    Rasters on several grids give one raster-grid finding per grid besides the first (the reference),
    naming the files on it (count: how many). `check_raster_set(infos, policy)` works too.
    """
    if isinstance(vector_bboxes, Policy):
        vector_bboxes, policy = None, vector_bboxes
    policy = policy or Policy()
    out: list[Finding] = []
    geo = sorted((i for i in infos if i.georeferenced), key=lambda i: i.path)

    def add(rule: str, path: str, what: str, count: int = 1) -> None:
        sev = policy.severity(rule)
        if sev is not None:
            out.append(Finding(rule, sev, path, f"{path}: {what} ({rule})", count))

    grids = raster_grids(geo)
    for grid in grids[1:]:
        ref = grids[0]
        add("raster-grid", grid.files[0].path,
            f"rasters not on one pixel grid: {_grid_difference(grid, ref)}; grid {grid.number} of {len(grids)} "
            f"({len(grid.files)} raster(s): {_names(grid.files)}) is not grid 1 ({len(ref.files)} raster(s): "
            f"{_names(ref.files)})", len(grid.files))
    allr = sorted(infos, key=lambda i: i.path)
    for attr, label in (("dtype", "dtype"), ("bands", "band count")):
        values = {getattr(i, attr) for i in allr if i.bands}
        if len(values) > 1:
            first = next(i for i in allr if i.bands)
            for i in allr:
                if i.bands and getattr(i, attr) != getattr(first, attr):
                    add("raster-consistency", i.path,
                        f"{label} {getattr(i, attr)} differs from {first.path}'s {getattr(first, attr)}")

    if vector_bboxes and geo:
        target = policy.target
        union = footprint_union(geo, target)
        if union is not None:
            shapely.prepare(union)
            outside = [p for p, b in sorted(vector_bboxes.items())
                       if b is not None and not shapely.covered_by(shapely.box(*b), union)]
            for p in outside:
                b = vector_bboxes[p]
                add("footprint", p,
                    f"labels extend outside the imagery footprint: bbox ({', '.join(fmt(v) for v in b)}) "
                    f"is not within the union of {len(geo)} raster(s)")
    return out


def _crs_label(info: RasterInfo) -> str:
    if info.epsg is not None:
        return f"EPSG:{info.epsg}"
    crs = info.crs
    return crs.name if crs is not None else "none"
