"""Before GDAL opens a source file: is it a plain file, and is its content the format its extension names?

Both are checked on the first bytes only, so they cost one small read per file. A file that fails is
never handed to GDAL (see engine/gdal_env.py for why GDAL must not choose the driver itself).
"""

from __future__ import annotations

import os

from terrasnap.engine.formats import SNIFF_BYTES, content_matches, describe_content, suffix
from terrasnap.engine.gdal_env import UnsafePath, gdal_path


class Refused(Exception):
    """The file is not opened: `rule` and `what` make its finding."""

    def __init__(self, rule: str, what: str) -> None:
        super().__init__(what)
        self.rule, self.what = rule, what


def safe_open_path(path: str | os.PathLike[str], fmt_name: str) -> str:
    """The absolute path to hand GDAL (or pyarrow) for a file that should be `fmt_name`.
    Raises Refused (external-reference: a path GDAL would read as another file; format-mismatch:
    content of another format). An empty or unreadable file passes: the parse rule reports those."""
    try:
        p = gdal_path(path)
    except UnsafePath as exc:
        raise Refused("external-reference", str(exc)) from None
    try:
        with open(p, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return p
    if head and not content_matches(head, fmt_name):
        ext = suffix(p) or "(none)"
        raise Refused("format-mismatch",
                      f"content is {describe_content(head)}, not the {fmt_name} its extension {ext} names; "
                      "terrasnap opens a file only as the format of its extension (rename it, or convert it)")
    return p
