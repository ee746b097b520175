"""Validation of vector and raster inputs (rules, findings, policy) and the one-pass normalization.

Public API (docs/contracts.md): Policy, Finding, validate_vector, check_vector_set, inspect_raster,
check_raster_set, validate_paths, Report.
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
