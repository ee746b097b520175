"""The manifest: one row per file (manifest.parquet), metadata.json, a STAC collection, and the snapshotID.

The snapshotID is a hash of what the snapshot *is* — every file's path and SHA-256 plus the policy — and
of nothing about when, where or in which order it was made.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_FORMAT = "terrasnap.manifest/v1"

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("role", pa.string()),
        ("kind", pa.string()),
        ("size", pa.int64()),
        ("sha256", pa.string()),
        ("md5", pa.string()),
        ("source_path", pa.string()),  # normalized rows: the raw layer they came from
        ("crs_wkt", pa.string()),
        ("crs_projjson", pa.string()),
        ("epsg", pa.int32()),
        ("features", pa.int64()),
        ("geometry_types", pa.list_(pa.string())),
        ("bbox", pa.list_(pa.float64())),
        ("invalid", pa.int64()),
        ("repaired", pa.int64()),
        ("skipped", pa.int64()),
        ("invalid_reasons", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("bands", pa.int32()),
        ("dtype", pa.string()),
        ("nodata", pa.float64()),
        ("transform", pa.list_(pa.float64())),
        ("block_shape", pa.list_(pa.int64())),
        ("cog", pa.bool_()),
    ]
)


@dataclass
class FileRow:
    path: str
    role: str
    kind: str
    size: int
    sha256: str
    md5: str
    props: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
        row.update({k: v for k, v in self.props.items() if k in row})
        row.update(path=self.path, role=self.role, kind=self.kind, size=self.size, sha256=self.sha256, md5=self.md5)
        return row


def snapshot_id(rows: list[FileRow], policy: dict[str, Any], pipeline: dict[str, Any] | None = None) -> str:
    """sha256 over a canonical document: sorted (path, sha256) pairs, the policy and the pipeline."""
    doc = {
        "format": MANIFEST_FORMAT,
        "files": sorted([r.path, r.sha256] for r in rows),
        "policy": policy,
        "pipeline": pipeline or {},
    }
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def manifest_bytes(rows: list[FileRow], snapshot: str) -> bytes:
    """Parquet bytes, deterministic for the same rows (sorted by path; no timestamps in the file)."""
    ordered = sorted(rows, key=lambda r: r.path.encode())
    table = pa.Table.from_pylist([r.to_row() for r in ordered], schema=SCHEMA)
    table = table.replace_schema_metadata({"terrasnap": json.dumps({"snapshotID": snapshot, "format": MANIFEST_FORMAT})})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True, store_schema=True)
    return buf.getvalue()


def read_manifest(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    table = pq.read_table(io.BytesIO(data))
    meta = json.loads((table.schema.metadata or {}).get(b"terrasnap", b"{}"))
    return table.to_pylist(), meta


def stac_collection(snapshot: str, name: str, namespace: str, bbox: list[float] | None,
                    created: str, manifest_uri: str, metadata_uri: str) -> dict[str, Any]:
    """A minimal STAC 1.0 Collection so catalogues and notebooks can find the snapshot."""
    extent_bbox = [bbox] if bbox else [[-180.0, -90.0, 180.0, 90.0]]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": f"{namespace}.{name}.{snapshot.split(':', 1)[-1][:16]}",
        "description": f"terrasnap snapshot {snapshot} of {namespace}/{name}",
        "license": "other",
        "extent": {"spatial": {"bbox": extent_bbox}, "temporal": {"interval": [[created, created]]}},
        "links": [],
        "assets": {
            "manifest": {"href": manifest_uri, "type": "application/vnd.apache.parquet", "roles": ["metadata"]},
            "metadata": {"href": metadata_uri, "type": "application/json", "roles": ["metadata"]},
        },
        "terrasnap:snapshot_id": snapshot,
    }


def union_bbox(boxes: list[list[float]]) -> list[float] | None:
    good = [b for b in boxes if b and len(b) == 4]
    if not good:
        return None
    return [min(b[0] for b in good), min(b[1] for b in good), max(b[2] for b in good), max(b[3] for b in good)]
