"""Deterministic names: the same snapshot, generation and spec always give the same Job name, so
re-applying or restarting the operator never duplicates a Job (a second create answers 409)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

MAX_NAME = 63  # a Job's name becomes its pods' `job-name` label value: at most 63 characters
HASH_LENGTH = 5


def spec_hash(uid: str, spec: Mapping[str, Any] | None, retry: str | None = None) -> str:
    """Short hash of the object's uid, its spec (canonical JSON) and its retry token, if any.

    The uid makes a deleted-and-recreated snapshot with the same name and generation get a fresh Job name,
    instead of colliding with the old Job that the garbage collector has not removed yet; a new retry token
    (annotation `terrasnap.io/retry`) gives the same generation a new Job.
    """
    doc: dict[str, Any] = {"uid": uid, "spec": spec or {}}
    if retry:
        doc["retry"] = retry
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def _label_safe(text: str) -> str:
    text = re.sub(r"[^a-z0-9-]", "-", text.lower())
    return text.strip("-") or "x"


def bounded(prefix: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`prefix-suffix`, the prefix cut so the whole fits in `limit` characters and ends alphanumeric."""
    budget = limit - len(suffix) - 1
    head = _label_safe(prefix)[:budget].rstrip("-") or "x"
    return f"{head}-{suffix}"


def job_name(snapshot_name: str, generation: int, hash_: str) -> str:
    return bounded(snapshot_name, f"{generation}-{hash_}")


def store_secret_name(job: str) -> str:
    """The per-Job copy of a store's credentials in the snapshot's namespace."""
    return bounded(job, "store", limit=253)


def _fit(name: str, limit: int) -> str:
    """`name` if it fits in `limit`, else a cut with a short hash of the full name (still unique)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_LENGTH]
    return bounded(name, digest, limit)


def gc_cronjob_name(store_name: str) -> str:
    # CronJob names are limited to 52 characters (its Jobs get an 11-character suffix).
    return _fit(f"terrasnap-gc-{_label_safe(store_name)}", 52)


def gc_secret_name(store_name: str) -> str:
    """The copy of a store's credentials next to its GC CronJob (when the Secret lives elsewhere)."""
    return _fit(f"terrasnap-gc-{_label_safe(store_name)}-store", 253)
