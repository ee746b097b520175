"""inspect_raster (one header) and check_raster_set (grid, consistency, label footprint)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from terrasnap.engine.validate import Policy, check_raster_set, inspect_raster
from terrasnap.engine.validate.raster import footprint_union

UTM = "EPSG:32633"


def make_tif(
    path: Path,
    *,
    x0: float = 500000.0,
    y0: float = 5000000.0,
    res: float = 10.0,
    size: int = 64,
    crs: str | None = UTM,
    nodata: float | None = 0,
    dtype: str = "uint8",
    count: int = 1,
    driver: str = "GTiff",
    transform: Any = "auto",
    **kw: Any,
) -> Path:
    t = Affine(res, 0.0, x0, 0.0, -res, y0) if transform == "auto" else transform
    profile: dict[str, Any] = {
        "driver": driver,
        "width": size,
        "height": size,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "nodata": nodata,
        **kw,
    }
    if t is not None:
        profile["transform"] = t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((count, size, size), dtype=dtype))
    return path


def rules(findings) -> list[tuple[str, str]]:
    return sorted((f.rule, f.severity) for f in findings)


def test_header_fields(tmp_path: Path) -> None:
    info = inspect_raster(make_tif(tmp_path / "a.tif", count=3), "img/a.tif", Policy(rules={"raster-cog": "off"}))
    assert info.ok and info.findings == []
    assert (info.width, info.height, info.bands, info.dtype, info.nodata) == (64, 64, 3, "uint8", 0.0)
    assert info.transform == [10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0]
    assert info.epsg == 32633 and info.crs_projjson and '"code":32633' in info.crs_projjson
    assert info.block_shape is not None and len(info.block_shape) == 2
    s = info.summary()
    assert s["transform"] == info.transform and s["cog"] is False


def test_raster_without_crs_is_an_error(tmp_path: Path) -> None:
    info = inspect_raster(make_tif(tmp_path / "n.tif", crs=None), "img/n.tif", Policy(rules={"raster-cog": "off"}))
    assert not info.ok
    assert [f.message for f in info.findings] == ["img/n.tif: raster has no CRS (raster-crs-missing)"]
    assert info.epsg is None and info.crs_wkt is None


def test_raster_without_crs_assumed(tmp_path: Path) -> None:
    info = inspect_raster(
        make_tif(tmp_path / "n.tif", crs=None),
        "n.tif",
        Policy(rules={"raster-cog": "off"}, missing_crs="assume:EPSG:32633"),
    )
    assert info.ok and rules(info.findings) == [("raster-crs-missing", "warning")] and info.epsg == 32633


def test_identity_transform_is_an_error(tmp_path: Path) -> None:
    info = inspect_raster(make_tif(tmp_path / "i.tif", transform=None), "i.tif", Policy(rules={"raster-cog": "off"}))
    assert ("raster-transform", "error") in rules(info.findings)
    assert "i.tif: no geotransform (identity transform) (raster-transform)" in [
        f.message for f in info.findings
    ]
    assert info.transform is None


def test_nodata_unset_is_a_warning(tmp_path: Path) -> None:
    info = inspect_raster(make_tif(tmp_path / "z.tif", nodata=None), "z.tif", Policy(rules={"raster-cog": "off"}))
    assert info.ok and [f.message for f in info.findings] == ["z.tif: nodata is not set (raster-nodata)"]
    info = inspect_raster(
        make_tif(tmp_path / "z2.tif", nodata=None),
        "z2.tif",
        Policy(rules={"raster-cog": "off", "raster-nodata": "error"}),
    )
    assert not info.ok


def test_cog_detection(tmp_path: Path) -> None:
    plain = inspect_raster(make_tif(tmp_path / "p.tif", size=1024), "p.tif")
    assert plain.cog is False
    assert [f.message for f in plain.findings] == [
        "p.tif: not a Cloud-Optimized GeoTIFF: not tiled, no overviews (raster-cog)"
    ]
    cog = inspect_raster(make_tif(tmp_path / "c.tif", size=1024, driver="COG"), "c.tif")
    assert cog.cog is True and cog.tiled and cog.overviews == [2] and cog.layout == "COG"
    assert cog.findings == []
    # tiled, with overviews added afterwards: the overviews' IFDs and data sit after the image
    from rasterio.enums import Resampling

    path = make_tif(tmp_path / "t.tif", size=1024, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4], Resampling.nearest)
    late = inspect_raster(path, "t.tif")
    assert late.tiled and late.overviews == [2, 4] and late.cog is False
    assert [f.message for f in late.findings] == [
        "t.tif: not a Cloud-Optimized GeoTIFF: IFDs not all before the image data, overview data not before the "
        "full-resolution data (raster-cog)"]


def test_not_a_raster(tmp_path: Path) -> None:
    p = tmp_path / "x.tif"
    p.write_bytes(b"not a tiff")
    info = inspect_raster(p, "x.tif")
    # text named .tif is refused before GDAL sees it (GDAL would otherwise try every driver on it)
    assert rules(info.findings) == [("format-mismatch", "error")] and info.findings[0].message.startswith(
        "x.tif: content is text starting 'not a tiff', not the GTiff its extension .tif names"
    )


def _infos(tmp_path: Path, specs: dict[str, dict[str, Any]]) -> list[Any]:
    pol = Policy(rules={"raster-cog": "off"})
    return [inspect_raster(make_tif(tmp_path / name, **kw), name, pol) for name, kw in specs.items()]


def test_aligned_rasters_pass(tmp_path: Path) -> None:
    # b starts 64 px east of a, c 3 px south: whole pixels apart
    infos = _infos(tmp_path, {"a.tif": {}, "b.tif": {"x0": 500640.0}, "c.tif": {"y0": 4999970.0}})
    assert check_raster_set(infos, None, Policy()) == []


def test_misaligned_rasters(tmp_path: Path) -> None:
    infos = _infos(tmp_path, {"b.tif": {"x0": 500645.0}, "a.tif": {}})
    findings = check_raster_set(infos, None, Policy())
    assert [f.message for f in findings] == [
        "b.tif: rasters not on one pixel grid: b.tif origin is 0.5 px off a.tif's grid (0.5 px in x); "
        "grid 2 of 2 (1 raster(s): b.tif) is not grid 1 (1 raster(s): a.tif) (raster-grid)"
    ]
    assert findings[0].severity == "error"
    # a sub-tolerance difference (float noise) is not a misalignment
    infos = _infos(tmp_path, {"a.tif": {}, "d.tif": {"x0": 500640.0 + 1e-9}})
    assert check_raster_set(infos, None, Policy()) == []
    # the policy can downgrade grid problems (also passed as the second argument, contracts.md's form)
    infos = _infos(tmp_path, {"a.tif": {}, "b.tif": {"x0": 500645.0}})
    assert [f.severity for f in check_raster_set(infos, None, Policy(rules={"raster-grid": "warning"}))] == ["warning"]
    assert [f.severity for f in check_raster_set(infos, Policy(rules={"raster-grid": "warning"}))] == ["warning"]


def test_different_crs_and_pixel_size(tmp_path: Path) -> None:
    infos = _infos(tmp_path, {"a.tif": {}, "b.tif": {"crs": "EPSG:32634"}, "c.tif": {"res": 20.0}})
    msgs = [f.message for f in check_raster_set(infos, None, Policy())]
    assert msgs == [
        "b.tif: rasters not on one pixel grid: CRS EPSG:32634 differs from a.tif's EPSG:32633; "
        "grid 2 of 3 (1 raster(s): b.tif) is not grid 1 (1 raster(s): a.tif) (raster-grid)",
        "c.tif: rasters not on one pixel grid: pixel size 20 x 20 differs from a.tif's 10 x 10; "
        "grid 3 of 3 (1 raster(s): c.tif) is not grid 1 (1 raster(s): a.tif) (raster-grid)",
    ]


def test_rasters_in_several_utm_zones_are_reported_per_grid(tmp_path: Path) -> None:
    """A Sentinel-2-like set: tiles in two UTM zones. raster-grid=warning lets it through, one finding
    per grid beyond the first, naming which files share it; the grids list every file."""
    from terrasnap.engine.validate.raster import raster_grids

    infos = _infos(tmp_path, {"t1.tif": {}, "t2.tif": {"x0": 500640.0}, "t3.tif": {"crs": "EPSG:32634"},
                              "t4.tif": {"crs": "EPSG:32634", "x0": 500640.0}, "t5.tif": {"y0": 4999970.0}})
    findings = check_raster_set(infos, None, Policy(rules={"raster-grid": "warning"}))
    assert [(f.rule, f.severity, f.path, f.count) for f in findings] == [("raster-grid", "warning", "t3.tif", 2)]
    assert "grid 2 of 2 (2 raster(s): t3.tif, t4.tif) is not grid 1 (3 raster(s): t1.tif, t2.tif, t5.tif)" in \
        findings[0].message
    assert [(g.crs_label, [i.path for i in g.files]) for g in raster_grids(infos)] == [
        ("EPSG:32633", ["t1.tif", "t2.tif", "t5.tif"]), ("EPSG:32634", ["t3.tif", "t4.tif"])]
    assert [f.severity for f in check_raster_set(infos, None, Policy())] == ["error"]
    assert check_raster_set(infos, None, Policy(rules={"raster-grid": "off"})) == []


def test_dtype_and_band_count_consistency(tmp_path: Path) -> None:
    infos = _infos(tmp_path, {"a.tif": {}, "b.tif": {"x0": 500640.0, "dtype": "float32", "count": 2}})
    findings = check_raster_set(infos, None, Policy())
    assert [(f.rule, f.severity, f.message) for f in findings] == [
        (
            "raster-consistency",
            "warning",
            "b.tif: dtype float32 differs from a.tif's uint8 (raster-consistency)",
        ),
        ("raster-consistency", "warning", "b.tif: band count 2 differs from a.tif's 1 (raster-consistency)"),
    ]


def test_labels_outside_footprint(tmp_path: Path) -> None:
    infos = _infos(tmp_path, {"a.tif": {}, "b.tif": {"x0": 500640.0}})
    union = footprint_union(infos, Policy().target)
    minx, miny, _maxx, _maxy = union.bounds
    assert minx == pytest.approx(15.0, abs=1e-3)  # UTM 33N, easting 500000: 15 E
    inside = [minx + 0.0001, miny + 0.0001, minx + 0.0002, miny + 0.0002]
    outside = [minx - 1, miny, minx + 0.0001, miny + 0.0001]
    findings = check_raster_set(infos, {"labels/in.geojson": inside, "labels/out.geojson": outside}, Policy())
    assert [(f.rule, f.severity, f.path) for f in findings] == [
        ("footprint", "warning", "labels/out.geojson")
    ]
    assert "labels extend outside the imagery footprint" in findings[0].message
    assert "not within the union of 2 raster(s)" in findings[0].message


def test_nan_nodata_float_raster(tmp_path: Path) -> None:
    import math

    info = inspect_raster(make_tif(tmp_path / "f.tif", dtype="float32", nodata=float("nan")), "f.tif",
                          Policy(rules={"raster-cog": "off"}))
    assert info.ok and info.findings == []  # NaN is a set nodata, not a missing one
    assert info.nodata is not None and math.isnan(info.nodata)
    assert math.isnan(info.summary()["nodata"]) and info.dtype == "float32"


def test_a_tif_holding_a_vrt_is_not_opened_as_one(tmp_path: Path) -> None:
    """GDAL opens by content: a .tif that is really a VRT could read any file the process can."""
    secret = make_tif(tmp_path / "secret.tif")
    evil = tmp_path / "evil.tif"
    evil.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Byte" band="1">'
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{secret}</SourceFilename>'
                    f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    info = inspect_raster(evil, "evil.tif")
    assert [(f.rule, f.severity) for f in info.findings] == [("format-mismatch", "error")]
    assert "content is a GDAL VRT" in info.findings[0].message and info.driver is None
