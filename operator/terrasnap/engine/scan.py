"""Scan a source tree: classify every file, refuse symlinks that leave it, order paths canonically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from terrasnap.engine import paths
from terrasnap.engine.errors import SourceUnavailable, UnsafeInput, ValidationFailed
from terrasnap.engine.formats import raster_format, vector_format

IGNORED_DIRS = {".git", ".dvc"}
# DVC's own files describe the source's pipeline; they are recorded beside the manifest, not as data.
IGNORED_FILES = {".gitignore", ".dvcignore", "dvc.yaml", "dvc.lock"}


@dataclass(frozen=True)
class Entry:
    rel: str  # posix path relative to the source root
    kind: str  # vector | raster | other
    size: int


def classify(rel: str) -> str:
    if raster_format(rel):
        return "raster"
    if vector_format(rel):
        return "vector"  # a plain .json may still turn out "other": scan() looks at its head
    return "other"


def _looks_like_geojson(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"type"' in head and (b"FeatureCollection" in head or b"Feature" in head or b"coordinates" in head)


def scan(root: Path) -> list[Entry]:
    """Every regular file under `root`, sorted by path (bytewise), so scanning order never matters."""
    if not root.is_dir():
        raise SourceUnavailable(f"source {root}: not a directory")
    real_root = root.resolve()
    entries: list[Entry] = []
    escapes: list[str] = []
    unsafe: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            # A name that is not UTF-8 (or holds a control character) cannot be a manifest path or store key.
            rel = (here / name).relative_to(root).as_posix()
            why = paths.problem(rel)
            if why:
                unsafe.append(f"{paths.quoted(rel)} {why}")
        if unsafe:
            dirnames[:] = [d for d in dirnames if not paths.problem(d)]
            filenames = [f for f in filenames if not paths.problem(f)]
        for name in list(dirnames):
            p = here / name
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(real_root):
                    escapes.append(f"{p.relative_to(root).as_posix()} -> {os.readlink(p)}")
                dirnames.remove(name)  # never walk into linked directories: their files would count twice
        for name in filenames:
            if name in IGNORED_FILES or name.endswith(".dvc"):
                continue
            p = here / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(real_root):
                    escapes.append(f"{rel} -> {os.readlink(p)}")
                    continue
                if not target.is_file():
                    continue
            elif not p.is_file():
                continue
            kind = classify(rel)
            if kind == "vector" and rel.lower().endswith(".json") and not _looks_like_geojson(p):
                kind = "other"
            entries.append(Entry(rel=rel, kind=kind, size=p.stat().st_size))
    if unsafe:
        raise UnsafeInput("file names refused (nothing pushed): " + "; ".join(sorted(unsafe)[:10])
                          + (f" (and {len(unsafe) - 10} more)" if len(unsafe) > 10 else ""))
    if escapes:
        raise ValidationFailed(
            "symlinks leave the source (refused, nothing pushed): " + "; ".join(sorted(escapes)[:10])
        )
    entries.sort(key=lambda e: e.rel.encode())
    if not entries:
        raise ValidationFailed(f"source {root}: no files to snapshot")
    return entries
