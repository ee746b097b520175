"""The DVC workspace mirrors the source with hard links; a kept workdir is brought up to date in place."""

from __future__ import annotations

import os
from pathlib import Path

from terrasnap.engine.scan import scan
from terrasnap.engine.snapshot import _link_tree


def test_a_kept_workspace_follows_the_source(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "raw"
    (src / "a" / "b").mkdir(parents=True)
    (src / "keep.txt").write_text("keep")
    (src / "a" / "b" / "gone.txt").write_text("gone")
    (src / "link.txt").symlink_to("keep.txt")
    _link_tree(scan(src), src, dest)
    assert (dest / "keep.txt").stat().st_ino == (src / "keep.txt").stat().st_ino
    assert (dest / "link.txt").stat().st_ino == (src / "keep.txt").stat().st_ino  # the file, not the link
    assert not (dest / "link.txt").is_symlink()
    ino = (dest / "keep.txt").stat().st_ino
    (src / "a" / "b" / "gone.txt").unlink()
    (src / "new.txt").write_text("new")
    _link_tree(scan(src), src, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["keep.txt", "link.txt", "new.txt"]
    assert (dest / "keep.txt").stat().st_ino == ino
    os.unlink(src / "new.txt")
    (src / "new.txt").write_text("newer")  # another inode and size: linked again
    _link_tree(scan(src), src, dest)
    assert (dest / "new.txt").read_text() == "newer"


def test_the_workspace_listing_is_what_rglob_found(tmp_path: Path) -> None:
    from terrasnap.engine.snapshot import _regular_files

    root = tmp_path / "p"
    for rel in ("a/b/c.txt", "a-b/d.txt", "a/e.txt", "z.txt", "a/b/c/f.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "dirlink").symlink_to(root / "a", target_is_directory=True)
    (root / "filelink.txt").symlink_to(root / "z.txt")
    (root / "broken.txt").symlink_to(root / "nowhere")
    assert sorted(_regular_files(root)) == sorted(p for p in root.rglob("*") if p.is_file())
