from __future__ import annotations

import os
from pathlib import Path

import pytest

from terrasnap.engine.errors import UsageError, ValidationFailed
from terrasnap.engine.hashing import HashCache, hash_file, hash_many
from terrasnap.engine.scan import scan
from terrasnap.engine.source import parse_source


def test_parse_git_source_pip_form() -> None:
    s = parse_source("git+https://example.org/acme/geo.git@v1.2#subdirectory=data/labels")
    assert (s.kind, s.path, s.revision, s.subdirectory) == ("git", "https://example.org/acme/geo.git", "v1.2", "data/labels")
    s = parse_source("git+file:///tmp/repo")
    assert (s.path, s.revision, s.subdirectory) == ("file:///tmp/repo", None, "")
    with pytest.raises(UsageError, match="relative path"):
        parse_source("git+file:///tmp/repo@main#subdirectory=../../etc")
    with pytest.raises(UsageError):
        parse_source("ftp://x/y")
    assert parse_source("gs://bucket/raw/").kind == "bucket"
    assert parse_source("/data").kind == "local"


def test_scan_sorts_classifies_and_refuses_escaping_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    (src / "b" / "x.tif").write_bytes(b"II*\0")
    (src / "a.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (src / "notes.json").write_text('{"hello": 1}')
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    os.symlink(src / "a.geojson", src / "inside-link.geojson")
    entries = scan(src)
    assert [(e.rel, e.kind) for e in entries] == [
        ("a.geojson", "vector"), ("b/x.tif", "raster"), ("inside-link.geojson", "vector"), ("notes.json", "other")]
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, src / "escape.txt")
    with pytest.raises(ValidationFailed, match=r"symlinks leave the source.*escape.txt"):
        scan(src)


def test_hashes_match_hashlib_and_cache_skips_rereads(tmp_path: Path) -> None:
    import hashlib

    files = []
    for i in range(5):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(100_000 + i))
        files.append(p)
    cache = HashCache(tmp_path / "cache.json")
    got = hash_many(files, cache)
    for p, h in zip(files, got, strict=True):
        data = p.read_bytes()
        assert h.sha256 == hashlib.sha256(data).hexdigest() and h.md5 == hashlib.md5(data).hexdigest()
    assert cache.bytes_read == sum(p.stat().st_size for p in files)
    cache.save()
    again = HashCache(tmp_path / "cache.json")
    assert hash_many(files, again) == got and again.bytes_read == 0 and again.hits == 5
    files[0].write_bytes(b"changed")
    assert hash_many(files[:1], again)[0] == hash_file(files[0])
