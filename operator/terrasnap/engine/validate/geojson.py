"""Reading a big GeoJSON FeatureCollection in bounded memory.

GDAL's GeoJSON reader streams, but keeps a set of every FID it has handed out (to keep them unique),
about 50 bytes per feature: a 2 GB file of 8 M polygons costs ~450 MB in that set alone. So a big file
is cut into runs of whole features (a few tens of MB each) at feature boundaries, and GDAL reads each
run as its own small FeatureCollection (with the file's `crs` member, if any). The layer's schema
comes from one GDAL open of the whole file (its first pass is streaming and keeps no per-feature
state), and every run's columns are cast to it, so all batches share one schema.

Boundaries are found without parsing the whole file: a candidate is a `{` right after a `,` (or the
array's `[`), confirmed by decoding that one object and checking it is a Feature. Inside a JSON
string an unescaped `{"` cannot occur, so the only false candidates are Feature-shaped objects nested
in properties after a comma; a split there would make a run invalid JSON, which GDAL reports as a
parse error (never a silent misread).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_WS = b" \t\r\n"
_DECODER = json.JSONDecoder()
_READ_BLOCK = 8 << 20
_KEY_RE = re.compile(r"\s*")


def features_start(path: str, head_bytes: int = 1 << 20) -> int | None:
    """Byte offset of the first character after the top-level `"features": [`, or None when it is
    not within the head (then the file is read the ordinary way)."""
    with open(path, "rb") as f:
        return features_start_in(f.read(head_bytes))


def features_start_in(data: bytes | bytearray, head_bytes: int = 1 << 20) -> int | None:
    """features_start of a file already in memory."""
    head = bytes(data[:head_bytes]).decode("latin-1")  # 1 char per byte: indexes are byte offsets
    i = _KEY_RE.match(head, 0).end()  # type: ignore[union-attr]
    if head.startswith("\u00ef\u00bb\u00bf", i):  # UTF-8 BOM, as latin-1
        i += 3
    if head[i:i + 1] != "{":
        return None
    i += 1
    try:
        while True:
            i = _KEY_RE.match(head, i).end()  # type: ignore[union-attr]
            if head[i:i + 1] != '"':
                return None
            key, i = json.decoder.scanstring(head, i + 1)  # type: ignore[attr-defined]
            i = _KEY_RE.match(head, i).end()  # type: ignore[union-attr]
            if head[i:i + 1] != ":":
                return None
            i = _KEY_RE.match(head, i + 1).end()  # type: ignore[union-attr]
            if key == "features":
                return i + 1 if head[i:i + 1] == "[" else None
            _, i = _DECODER.raw_decode(head, i)
            i = _KEY_RE.match(head, i).end()  # type: ignore[union-attr]
            if head[i:i + 1] == ",":
                i += 1
    except (ValueError, IndexError, RecursionError):
        return None


def _decode_at(buf: bytes | bytearray, i: int, final: bool) -> tuple[Any, int] | None:
    """Decode the JSON value starting at buf[i]; None if it runs past the buffer (and more may come).
    Raises ValueError if it is not JSON."""
    window = 1 << 16
    while True:
        text = buf[i:i + window].decode("latin-1")
        try:
            obj, end = _DECODER.raw_decode(text)
            return obj, i + end
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        except ValueError:
            if i + window >= len(buf):
                if final:
                    raise
                return None
            window *= 4


def _prev_char(buf: bytes | bytearray, i: int) -> int | None:
    k = i - 1
    while k >= 0 and buf[k] in _WS:
        k -= 1
    return buf[k] if k >= 0 else None


def _is_feature(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("type") == "Feature"


def _next_start(buf: bytes | bytearray, i: int, final: bool) -> int | bool | None:
    """First feature start at or after i: its index; None if none in buf; False if undecided (need more)."""
    while True:
        j = buf.find(b"{", i)
        if j < 0:
            return None
        if _prev_char(buf, j) == ord(","):
            try:
                got = _decode_at(buf, j, final)
            except ValueError:
                got = (None, j + 1)
            if got is None:
                return False
            if _is_feature(got[0]):
                return j
        i = j + 1


def _last_end(buf: bytes | bytearray) -> int:
    """End (exclusive) of the last feature in buf, which runs from a feature start to EOF."""
    hi = len(buf)
    while True:
        j = buf.rfind(b"{", 0, hi)
        if j < 0:
            raise ValueError("no complete feature before the end of the features array")
        if j == 0 or _prev_char(buf, j) in (ord(","), ord("[")):
            try:
                obj, end = _decode_at(buf, j, True)  # type: ignore[misc]
            except ValueError:
                obj, end = None, 0
            if _is_feature(obj):
                k = end
                while k < len(buf) and buf[k] in _WS:
                    k += 1
                if buf[k:k + 1] == b"]":
                    return end
        hi = j


def feature_runs(path: str, start: int, run_bytes: int, crs_member: Any | None = None) -> Iterator[bytes]:
    """Consecutive runs of whole features of about run_bytes each, each wrapped as a FeatureCollection
    (see wrap_run). One bytearray is reused as the read buffer, so memory stays at about two runs."""
    prefix, suffix = _wrapper(crs_member)
    buf = bytearray()
    with open(path, "rb") as f:
        f.seek(start)
        eof = False

        def fill(n: int) -> None:
            nonlocal eof
            while not eof and len(buf) < n:
                block = f.read(min(_READ_BLOCK, max(n - len(buf), 1 << 16)))
                eof = not block
                buf.extend(block)

        while True:
            fill(run_bytes + (1 << 20))
            k = 0
            while k < len(buf) and buf[k] in _WS:
                k += 1
            del buf[:k]
            if buf[:1] == b"]" or not buf:
                return  # empty array, or the previous run took the last feature
            split = _next_start(buf, min(run_bytes, len(buf)), eof)
            if split is False or (split is None and not eof):
                fill(len(buf) + _READ_BLOCK)  # a feature runs past the buffer: read on
                continue
            if split is None:
                yield _wrap(prefix, buf, _last_end(buf), suffix)
                return
            assert isinstance(split, int) and not isinstance(split, bool)
            end = split - 1
            while buf[end] in _WS:
                end -= 1
            assert buf[end] == ord(","), "a feature start follows a comma"
            yield _wrap(prefix, buf, end, suffix)
            del buf[:split]


def _wrap(prefix: bytes, buf: bytearray, end: int, suffix: bytes) -> bytes:
    with memoryview(buf) as view:  # released before the buffer is resized
        return b"".join((prefix, view[:end], suffix))


def _wrapper(crs_member: Any | None) -> tuple[bytes, bytes]:
    crs = b'"crs":' + json.dumps(crs_member).encode() + b"," if crs_member is not None else b""
    return b'{"type":"FeatureCollection",' + crs + b'"features":[', b"]}"


