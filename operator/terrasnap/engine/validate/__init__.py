"""Validation of vector and raster inputs (rules, findings, policy) and the one-pass normalization.

Public API (docs/contracts.md): Policy, Finding, validate_vector, check_vector_set, inspect_raster,
check_raster_set, validate_paths, Report.

Rules (Finding.rule; severity as under the default policy):
  parse               error    unreadable / empty / malformed file (the parser's message, line and column)
  not-geoparquet      warning  a .parquet without `geo` metadata: a table, kept raw, not normalized
  crs-missing         error    no CRS (missing_crs=reject); warning + CRS used with assume:EPSG:XXXX
  crs-mixed           error    layers in different CRSs across files (policy.mixed_crs)
  rfc7946-crs         warning  GeoJSON legacy `crs` member; error if it declares a projected CRS and the
                               coordinates are projected; warning hint when projected coords have no member
  coord-nonfinite     error    NaN/Inf coordinate (also NaN/Infinity literals anywhere in a GeoJSON)
  coord-range         error    lon/lat outside [-180, 180] x [-90, 90] in a geographic CRS
  ring-unclosed       error    polygon ring whose first and last points differ
  ring-too-short      error    polygon ring with fewer than 4 points
  is_valid            error    OGC validity, with GEOS's reason and location
      under invalid_geometry=repair the three above become `repaired` warnings (make_valid, never
      buffer(0); area and type before/after), or `repair-collapsed` when nothing of the feature's
      own dimension is left; under skip they become `skipped` warnings and the features are dropped
      (coordinate errors are never repaired: skip drops them, reject/repair reject them)
  geometry-null       warning  null geometry: dropped from the normalized output
  geometry-empty      warning  empty geometry: dropped
  geometry-mixed      warning  several geometry families in one layer (Polygon+MultiPolygon is one family:
                               the normalized layer then has MultiPolygons only, "promoted to multi")
  reproject           error    no transformation to the target CRS, or non-finite results
  footprint           warning  labels outside the union of the imagery footprints (count of features)
  raster-crs-missing  error    raster without CRS
  raster-transform    error    missing/identity/degenerate geotransform (GCP-only rasters included)
  raster-rotated      warning  rotated or sheared geotransform
  raster-nodata       warning  nodata unset (policy.require_nodata)
  raster-cog          warning  not a COG: not tiled, no overviews, or a non-COG layout (policy.require_cog)
  raster-grid         error    rasters not on one pixel grid: CRS, pixel size, origin offset (require_same_grid)
  raster-consistency  warning  dtype or band count differs between rasters
  internal            error    validation crashed on this file (the exception says why)
"""

from terrasnap.engine.validate.findings import Finding
from terrasnap.engine.validate.policy import Policy
from terrasnap.engine.validate.raster import RasterInfo, check_raster_set, inspect_raster, is_raster_path
from terrasnap.engine.validate.report import Report, validate_paths
from terrasnap.engine.validate.vector import (
    LayerResult,
    VectorResult,
    check_vector_set,
    is_vector_path,
    validate_vector,
)

__all__ = [
    "Finding",
    "LayerResult",
    "Policy",
    "RasterInfo",
    "Report",
    "VectorResult",
    "check_raster_set",
    "check_vector_set",
    "inspect_raster",
    "is_raster_path",
    "is_vector_path",
    "validate_paths",
    "validate_vector",
]
