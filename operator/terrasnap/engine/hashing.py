"""SHA-256 (integrity) and MD5 (DVC 3's object address) of each file, in one read, on every core.

hashlib releases the GIL on large updates, so threads scale across cores without pickling; a cache keyed
by (inode, mtime, size) makes re-snapshotting an unchanged source read nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class FileHash:
    sha256: str
    md5: str
    size: int


def hash_file(path: Path) -> FileHash:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb", buffering=0) as fh:
        # A buffer no bigger than the file: zeroing 4 MiB for each of 10,000 small chips cost more than hashing.
        buf = bytearray(min(CHUNK, os.fstat(fh.fileno()).st_size + 1))
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            chunk = view[:n]
            sha.update(chunk)
            md5.update(chunk)
            size += n
    return FileHash(sha.hexdigest(), md5.hexdigest(), size)


class HashCache:
    """Remembers hashes by (inode, mtime_ns, size) — the same key DVC's state db uses."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, list[object]] = {}
        if path and path.exists():
            try:
                self._data = json.loads(path.read_text())
            except (ValueError, OSError):
                self._data = {}
        self.bytes_read = 0
        self.hits = 0
        self._counted: set[str] = set()  # a file looked up again in the same run is not a second hit

    @classmethod
    def of_workdir(cls, workdir: Path) -> HashCache:
        """The workdir's one cache: the source check and the snapshot's hashing share it (hard links hit)."""
        return cls(workdir / ".terrasnap" / "hashes.json")

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        st = path.stat()
        return f"{st.st_dev}:{st.st_ino}", st.st_mtime_ns, st.st_size

    def known(self, path: Path) -> FileHash | None:
        """The cached hash if the file is unchanged (a stat, no read), else None."""
        ino, mtime, size = self._key(path)
        with self._lock:
            cached = self._data.get(ino)
            if not (cached and cached[0] == mtime and cached[1] == size):
                return None
            if ino not in self._counted:
                self._counted.add(ino)
                self.hits += 1
        return FileHash(str(cached[2]), str(cached[3]), size)

    def get(self, path: Path) -> FileHash:
        known = self.known(path)
        if known is not None:
            return known
        ino, mtime, size = self._key(path)
        fh = hash_file(path)
        with self._lock:
            self._data[ino] = [mtime, size, fh.sha256, fh.md5]
            self._counted.add(ino)
            self.bytes_read += fh.size
        return fh

    def save(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data))
            os.replace(tmp, self.path)


def hash_many(paths: Iterable[Path], cache: HashCache | None = None, workers: int | None = None) -> list[FileHash]:
    """Hashes in input order, computed on `workers` threads (hashlib releases the GIL)."""
    cache = cache or HashCache(None)
    items = list(paths)
    workers = workers or max(1, os.cpu_count() or 1)
    if len(items) <= 1 or workers == 1:
        return [cache.get(p) for p in items]
    # Unchanged files first, here: a thread per stat costs more than the stat (a re-snapshot of 10,000 chips).
    results: list[FileHash | None] = [cache.known(p) for p in items]
    # Largest first, so two big files never end up hashed one after the other on one core at the end.
    order = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: -_size(items[i]))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, fh in zip(order, pool.map(cache.get, [items[i] for i in order]), strict=True):
            results[i] = fh
    return [r for r in results if r is not None]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
