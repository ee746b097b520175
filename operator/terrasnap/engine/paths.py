"""Names from outside — a bucket listing, a git tree, a manifest row, a CLI argument — checked before they
touch the filesystem or a store key.

One rule for all of them: a relative POSIX path of non-empty segments, no `.`/`..`, no NUL or other control
characters, valid UTF-8. The caller turns the problem into its own error (exit 1 for data, 2 for usage).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A DVC object id: the md5 of a file, or of a directory listing (`.dir`).
DVC_OBJECT_ID = re.compile(r"[0-9a-f]{32}(\.dir)?")


def shown(name: str) -> str:
    """A name as it can be printed: bytes that are not UTF-8 (surrogate-escaped by os.fsdecode) as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if _has_surrogates(name) else name


def quoted(name: str) -> str:
    """'name', escaped as `shown` does (not repr: its doubled backslashes would hide the bytes)."""
    return f"'{shown(name)}'"


def _has_surrogates(name: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in name)


def problem(name: str) -> str | None:
    """Why `name` is not a safe relative path, or None."""
    if not isinstance(name, str) or name == "":
        return "is empty"
    if _has_surrogates(name):
        return "is not valid UTF-8"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\x00" in name:
        return "contains a NUL byte"
    if _CONTROL.search(name):
        return "contains a control character"
    if name.startswith("/"):
        return "is absolute"
    if "\\" in name:
        return "contains a backslash"
    parts = name.split("/")
    if ".." in parts:
        return "contains '..'"
    if "." in parts:
        return "contains a '.' segment"
    if "" in parts:
        return "has an empty segment ('//' or a trailing '/')"
    return None


def check_relpath(name: str, what: str) -> str:
    """`name` unchanged if it is a safe relative path; else ValueError naming it (escaped) and the reason."""
    why = problem(name)
    if why:
        raise ValueError(f"{what} {quoted(name)} {why}")
    return name


def join_inside(root: Path, name: str, what: str) -> Path:
    """root/name, after checking the name and that the result (symlinks resolved) stays under root."""
    check_relpath(name, what)
    target = root / name
    real_root = root.resolve()
    if not target.resolve().is_relative_to(real_root):
        raise ValueError(f"{what} {quoted(name)} leads outside {root}")
    return target
