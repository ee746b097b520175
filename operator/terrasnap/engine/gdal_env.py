"""GDAL locked down for files other people wrote: one driver per extension, no network, no side-cars.

GDAL opens a file by its content with every registered driver, follows references inside it (an OGR
VRT's `SrcDataSource`, a GDAL VRT's `SourceFilename`, a GeoJSON `crs` link) and reaches the network
and archives through virtual file systems (`/vsicurl/`, `/vsizip/`). terrasnap reads sources in a
Job and as a CI gate on pull requests, so in the engine's process:

- only the drivers of `formats.py`'s tables stay registered (`GDAL_SKIP` of every other one, VRT and
  OGR_VRT among them), in both GDAL copies of the process (pyogrio and rasterio each bundle one);
  the raster opener also names its one driver (`rasterio.open(driver=...)`);
- no side-car files: `GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR` (GDAL assumes the folder holds nothing
  but the file, so no `.ovr`/`.msk`/`.aux.xml`/world file is looked up) and `GDAL_PAM_ENABLED=NO`
  (no `.aux.xml` read or written); a shapefile's own parts (.dbf/.shx/.prj) are still opened by name;
- no network: `/vsicurl/` accepts no file (`CPL_VSIL_CURL_ALLOWED_EXTENSIONS`), other HTTP requests
  GDAL makes by itself (e.g. a GeoJSON `crs` of type link) go to a closed local proxy and time out at
  once; PROJ downloads nothing (`PROJ_NETWORK=OFF`);
- paths handed to GDAL are absolute, never a `/vsi...` path, and never one pyogrio would rewrite into
  another file (`a!b.geojson` reads `b.geojson`): `gdal_path` refuses them.

Measured on the installed GDALs (pyogrio 0.13 / GDAL 3.12, rasterio 1.4 / GDAL 3.10): a `.tif` holding
a VRT is refused by the GTiff driver; without it GDAL opened it as VRT and read the outside file; with
the skip list the VRT driver is gone; EMPTY_DIR hides an external `.ovr`; a shapefile still reads.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from types import ModuleType

from terrasnap.engine.formats import RASTER_FORMATS, VECTOR_FORMATS

# pyogrio's GDAL reads the vector formats (GeoParquet is read by pyarrow)
VECTOR_DRIVERS: frozenset[str] = frozenset(v for v in VECTOR_FORMATS.values() if v != "GeoParquet")
# rasterio's GDAL reads GTiff; COG and MEM are write-only/in-memory drivers that other code in the
# process (tools, tests) uses to write GeoTIFFs, and neither opens a file by content
RASTER_DRIVERS: frozenset[str] = frozenset(RASTER_FORMATS.values()) | {"COG", "MEM"}

# a port nothing listens on: GDAL's own HTTP requests fail at once instead of leaving the process
_NO_PROXY_TARGET = "127.0.0.1:9"

CONFIG: Mapping[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_PAM_ENABLED": "NO",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".terrasnap-no-network",
    "GDAL_HTTP_PROXY": _NO_PROXY_TARGET,
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_HTTP_TIMEOUT": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "1",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
    "OGR_SQLITE_ALLOW_LOAD_EXTENSIONS": "NO",
    "PROJ_NETWORK": "OFF",
}

_done = False
_ogr_locked = False


class UnsafePath(ValueError):
    """A path GDAL must not be handed: it would read something other than the file it names."""


def gdal_path(path: str | os.PathLike[str]) -> str:
    """The path to give GDAL for a source file: absolute, and GDAL reads exactly that file.
    Raises UnsafePath for a `/vsi` path and for one pyogrio would rewrite (an archive `!`, a URL scheme)."""
    p = os.path.abspath(os.fspath(path))
    if p.startswith("/vsi"):
        raise UnsafePath("a GDAL virtual file system path (/vsi...): only plain files are read")
    if "!" in p:
        # pyogrio reads 'x!y' as file y inside archive x: '/src/a!/etc/z.geojson' would read /etc/z.geojson
        raise UnsafePath("the path contains '!', which GDAL's reader takes for an archive separator "
                         "(it would read another file): rename it")
    return p


def _skip_list(all_drivers: set[str], keep: frozenset[str]) -> str:
    return ",".join(sorted(all_drivers - keep))


def lock_down() -> None:
    """Apply the settings above to this process (idempotent). Called when the validation package is
    imported, before any source file is opened; also re-registers drivers of a GDAL copy that was
    loaded earlier (e.g. by a test's data writer), so the skip list always holds."""
    global _done
    if _done:
        return
    for key, value in CONFIG.items():
        os.environ[key] = value  # child processes (terrasnap's own subprocesses) inherit them
    if "pyogrio" in sys.modules:  # already loaded (e.g. by geopandas): lock it now
        ogr()
    _lock_rasterio()
    _done = True


def ogr() -> ModuleType:
    """pyogrio, locked down before its first use. Imported on demand: it imports geopandas and pandas
    (over a second), which validating GeoJSON the fast reader takes never needs; every use of pyogrio
    in the engine goes through here."""
    global _ogr_locked
    import pyogrio
    import pyogrio.raw

    if not _ogr_locked:
        _lock_pyogrio()
        _ogr_locked = True
    return pyogrio


def _lock_pyogrio() -> None:
    import pyogrio
    from pyogrio import _ogr

    pyogrio.set_gdal_config_options(dict(CONFIG))
    # list_drivers names the vector drivers; VRT (raster) is registered in this copy too
    everything = set(pyogrio.list_drivers()) | {"VRT", "OGR_VRT"}
    pyogrio.set_gdal_config_options({"GDAL_SKIP": _skip_list(everything, VECTOR_DRIVERS)})
    # GDAL_SKIP is applied when drivers are registered; registering again deregisters the skipped ones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "unable to find driver X to unload": already gone
        _ogr._register_drivers()  # type: ignore[attr-defined]
    left = set(pyogrio.list_drivers())
    if left - VECTOR_DRIVERS:
        raise RuntimeError(f"GDAL lockdown failed: pyogrio still has drivers {sorted(left - VECTOR_DRIVERS)}")


def _lock_rasterio() -> None:
    import rasterio
    import rasterio._env as renv
    from rasterio.env import set_gdal_config

    for key, value in CONFIG.items():
        set_gdal_config(key, value)
    with rasterio.Env() as env:  # registers the drivers if nothing has yet
        everything = set(env.drivers())
    set_gdal_config("GDAL_SKIP", _skip_list(everything, RASTER_DRIVERS))
    renv._have_registered_drivers = False  # type: ignore[attr-defined]  # rasterio registers (and skips) again
    with rasterio.Env() as env:
        left = set(env.drivers())
    if left - RASTER_DRIVERS:  # never run with a driver that opens other files by content
        raise RuntimeError(f"GDAL lockdown failed: rasterio still has drivers {sorted(left - RASTER_DRIVERS)}")


def locked_drivers() -> dict[str, list[str]]:
    """The drivers each GDAL copy has registered now (for tests and `terrasnap validate --debug`)."""
    import rasterio

    pyogrio = ogr()

    with rasterio.Env() as env:
        raster = sorted(env.drivers())
    return {"pyogrio": sorted(pyogrio.list_drivers()), "rasterio": raster}

