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
