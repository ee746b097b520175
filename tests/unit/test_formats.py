"""One table of file formats: the scan and the validators agree on every extension (`.gtiff` included)."""

from __future__ import annotations

import pytest

from terrasnap.engine import formats
from terrasnap.engine.scan import classify
from terrasnap.engine.validate import is_raster_path, is_vector_path


@pytest.mark.parametrize("ext", formats.RASTER_EXTENSIONS)
def test_every_raster_extension_is_a_raster_to_the_scan_and_to_the_validator(ext: str) -> None:
    for name in (f"img/a{ext}", f"img/A{ext.upper()}"):
        assert classify(name) == "raster" and is_raster_path(name) and not is_vector_path(name)


@pytest.mark.parametrize("ext", formats.VECTOR_EXTENSIONS)
def test_every_vector_extension_is_a_vector_to_the_scan_and_to_the_validator(ext: str) -> None:
    for name in (f"labels/a{ext}", f"labels/A{ext.upper()}"):
        assert classify(name) == "vector" and is_vector_path(name) and not is_raster_path(name)


def test_other_files_are_neither() -> None:
    for name in ("README.md", "a.tif.txt", "a.shx", "tif", ".geojson"):
        assert classify(name) == "other" and not is_raster_path(name) and not is_vector_path(name)


def test_geometry_type_tables_agree() -> None:
    assert {formats.NAME_TO_ID[n] for n in formats.MULTI_NAMES} == set(formats.SINGLE_OF_MULTI)
    for multi, single in formats.SINGLE_OF_MULTI.items():
        assert formats.MULTI_OF[formats.TYPE_NAMES[single]][0] == formats.TYPE_NAMES[multi]
    assert formats.declared_multi("MultiPolygon Z") == 6 and formats.declared_multi("Polygon") is None
