"""The GC report: written to <store>/terrasnap/gc/<timestamp>-<id>.json and summarised on stdout."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class GCReport:
    gc: str
    store: str
    roots: list[str]
    roots_complete: bool
    dry_run: bool
    grace_seconds: float
    started: str
    finished: str = ""
    listed: int = 0
    kept: int = 0
    kept_inflight: int = 0
    skipped_young: int = 0
    deleted: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    manifests_deleted: list[str] = field(default_factory=list)
    registrations: int = 0
    errors: list[str] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)  # roots naming no published snapshot (cluster mode)
    uri: str = ""
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "gc": self.gc,
            "store": self.store,
            "roots": self.roots,
            "rootsComplete": self.roots_complete,
            "dryRun": self.dry_run,
            "graceSeconds": self.grace_seconds,
            "started": self.started,
            "finished": self.finished,
            "listed": self.listed,
            "kept": self.kept,
            "keptInflight": self.kept_inflight,
            "skippedYoung": self.skipped_young,
            "deleted": len(self.deleted),
            "deletedObjects": self.deleted,
            "freedBytes": self.freed_bytes,
            "manifestsDeleted": self.manifests_deleted,
            "registrations": self.registrations,
            "errors": self.errors,
            "missingRoots": self.missing_roots,
            "ok": self.ok,
        }

    def summary(self) -> dict[str, Any]:
        doc = self.to_json()
        doc.pop("deletedObjects")
        doc["manifestsDeleted"] = len(self.manifests_deleted)
        doc["report"] = self.uri
        return doc
