"""Validation of vector and raster inputs (rules, findings, policy) and the one-pass normalization.

Public API (docs/contracts.md): Policy, Finding, validate_vector, check_vector_set, inspect_raster,
check_raster_set, validate_paths, Report.

Rules: every finding names one rule of the table in `terrasnap.api.policy.RULES` (name, default level,
whether it may be downgraded, what it checks; `terrasnap rules` prints it). A finding's severity is the
policy's level for its rule (`Policy.severity`): error rejects the file, warning is reported and counted,
off is not emitted. Under invalidGeometry=repair, the geometry rules' failures become `repaired` warnings
(make_valid, never buffer(0); area and type before/after) or `repair-collapsed` when nothing of the
feature's own dimension is left; under skip they become `skipped` warnings and the features are dropped
(coordinate errors are never repaired: skip drops them, reject/repair reject them). Notes beside a rule's
verdict (e.g. "assuming EPSG:32633", a harmless legacy GeoJSON `crs` member) are hints: at most warnings.
"""

# first: GDAL is locked down (one driver per extension, no network, no side-cars) before any file is opened
from terrasnap.engine import gdal_env

gdal_env.lock_down()

from terrasnap.engine.validate.findings import Finding  # noqa: E402
from terrasnap.engine.validate.policy import Policy  # noqa: E402
from terrasnap.engine.validate.raster import RasterInfo, check_raster_set, inspect_raster, is_raster_path  # noqa: E402
from terrasnap.engine.validate.report import Report, validate_paths  # noqa: E402
from terrasnap.engine.validate.vector import (  # noqa: E402
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
