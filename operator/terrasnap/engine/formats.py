"""The file formats terrasnap reads and the geometry type names it uses: one table each.

scan.py classifies files with these extensions, validate/vector.py and validate/raster.py open them
with the format they name, rules.py and normalize.py name geometry types from the same table.
"""

from __future__ import annotations

# extension -> format (the GDAL driver name, or GeoParquet, which pyarrow reads)
VECTOR_FORMATS: dict[str, str] = {
    ".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".shp": "ESRI Shapefile",
    ".fgb": "FlatGeobuf", ".parquet": "GeoParquet", ".geoparquet": "GeoParquet",
}
VECTOR_EXTENSIONS: tuple[str, ...] = tuple(VECTOR_FORMATS)
# GeoTIFF: .tif and .tiff, and .gtiff, which some writers use
RASTER_FORMATS: dict[str, str] = {".tif": "GTiff", ".tiff": "GTiff", ".gtiff": "GTiff"}
RASTER_EXTENSIONS: tuple[str, ...] = tuple(RASTER_FORMATS)
# Side files of a shapefile are part of the layer, not opaque assets of their own.
SHAPEFILE_SIDECARS: tuple[str, ...] = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")


def suffix(path: str) -> str:
    """The lower-case extension of a path, with its dot ('' when there is none)."""
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


def vector_format(path: str) -> str | None:
    return VECTOR_FORMATS.get(suffix(path))


def raster_format(path: str) -> str | None:
    return RASTER_FORMATS.get(suffix(path))


# --- geometry types ---------------------------------------------------------------------------------
# shapely / GEOS type ids -> names
TYPE_NAMES: dict[int, str] = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint",
                              5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}
NAME_TO_ID: dict[str, int] = {v: k for k, v in TYPE_NAMES.items()}
# GeoParquet's geometry_types know no LinearRing: it is written as a LineString
GEOPARQUET_TYPE_NAMES: dict[int, str] = {**TYPE_NAMES, 2: "LineString"}
# families: a layer mixing families gets a warning; Polygon + MultiPolygon is one family
FAMILY: dict[int, str] = {0: "point", 4: "point", 1: "line", 2: "line", 5: "line", 3: "polygon", 6: "polygon",
                          7: "collection"}
FAMILY_IDS: dict[str, tuple[int, ...]] = {"point": (0, 4), "line": (1, 2, 5), "polygon": (3, 6)}
# multi type id -> its single type id
SINGLE_OF_MULTI: dict[int, int] = {6: 3, 5: 1, 4: 0}
MULTI_NAMES: dict[str, int] = {"MultiPolygon": 6, "MultiLineString": 5, "MultiPoint": 4}
# single name -> (multi name, single ISO WKB code, multi ISO WKB code)
MULTI_OF: dict[str, tuple[str, int, int]] = {"Point": ("MultiPoint", 1, 4), "LineString": ("MultiLineString", 2, 5),
                                             "Polygon": ("MultiPolygon", 3, 6)}


def declared_multi(declared: str | None) -> int | None:
    """The multi type id of a layer declared Multi* (e.g. "MultiPolygon Z"), else None."""
    base = (declared or "").replace(" Z", "").replace(" M", "").replace("25D", "").strip()
    return MULTI_NAMES.get(base)


# --- content: what a file's first bytes say it is -----------------------------------------------------
# GDAL would open a file by its content with any driver; terrasnap opens it only as the format its
# extension names, and a file whose first bytes are not that format is refused (rule format-mismatch).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "GPKG": (b"SQLite format 3\x00",),
    "ESRI Shapefile": (b"\x00\x00\x27\x0a",),  # file code 9994, big-endian
    "FlatGeobuf": (b"fgb\x03",),
    "GeoParquet": (b"PAR1",),
    "GTiff": _TIFF_MAGIC,
}
SNIFF_BYTES = 512


def _is_json_object(head: bytes) -> bool:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return text[:1] == b"{"


def content_matches(head: bytes, fmt_name: str) -> bool:
    """Do a file's first bytes (at least SNIFF_BYTES, or the whole file) look like `fmt_name`?"""
    if fmt_name == "GeoJSON":
        return _is_json_object(head)
    return head.startswith(_MAGIC.get(fmt_name, (b"",)))


def describe_content(head: bytes) -> str:
    """What a file's first bytes look like, for a format-mismatch message."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    low = text[:SNIFF_BYTES].lower()
    if b"<ogrvrtdatasource" in low:
        return "an OGR VRT (XML that makes GDAL read other files)"
    if b"<vrtdataset" in low:
        return "a GDAL VRT (XML that makes GDAL read other files)"
    if text.startswith(b"<"):
        return "XML"
    for name, magics in _MAGIC.items():
        if head.startswith(magics):
            return {"GPKG": "an SQLite database", "GTiff": "a TIFF"}.get(name, f"a {name} file")
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if text[:1] in (b"{", b"["):
        return "JSON"
    try:
        first = text[:60].decode("utf-8").splitlines()[0] if text else ""
    except UnicodeDecodeError:
        return "binary data"
    return f"text starting {first!r}" if first else "blank text"
