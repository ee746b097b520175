"""A TIFF's image-data byte ranges from its IFDs, checked against the file's size (pure reading, no GDAL).

GDAL opens a truncated GeoTIFF (an interrupted upload) without complaint: the header is at the front
and pixels are only read when asked for. The tile/strip offsets and byte counts of every IFD (the full
resolution, its overviews and masks) say where the data must be, so a block ending past the end of the
file is found from the tags alone: one small read per IFD plus one per offset/count array.
Classic TIFF and BigTIFF, both byte orders. Blocks with offset 0 and byte count 0 are sparse (GDAL
writes those for empty tiles) and fine.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS = 273, 279, 324, 325
# TIFF field types -> (numpy dtype char, size); only integer types can hold offsets and counts
_TYPES = {1: ("u1", 1), 3: ("u2", 2), 4: ("u4", 4), 16: ("u8", 8), 13: ("u4", 4), 18: ("u8", 8)}
MAX_IFDS = 4096  # a chain longer than this (or a loop) is not a real GeoTIFF


class TiffError(ValueError):
    """The TIFF structure itself cannot be read (bad magic, an IFD outside the file, a loop)."""


@dataclass(frozen=True)
class Overrun:
    """The first block of one IFD whose data runs past the end of the file."""

    ifd: int  # 0: full resolution; then overviews/masks in file order
    block: int  # index into the IFD's tile or strip arrays
    kind: str  # "tile" or "strip"
    end: int  # byte offset where the block's data ends
    size: int  # the file's size
    blocks_past: int  # how many of the IFD's blocks run past the end

    def describe(self) -> str:
        where = "full resolution" if self.ifd == 0 else f"IFD {self.ifd} (overview or mask)"
        return (f"{self.kind} {self.block} of the {where} ends at byte {self.end} but the file has {self.size} "
                f"bytes ({self.blocks_past} {self.kind}(s) of that image past the end): truncated, e.g. an "
                "interrupted upload")


def truncation_problems(path: str | os.PathLike[str]) -> list[str]:
    """What lies past the end of the file: each IFD's first block that does, and an IFD or tag array
    that does (then the walk stops). Empty: every image's data lies inside the file."""
    size = os.path.getsize(path)
    found: list[Overrun] = []
    try:
        with open(path, "rb") as f:
            _Reader(f, size).overruns(found)
    except TiffError as exc:
        return [o.describe() for o in found] + [str(exc)]
    return [o.describe() for o in found]


class _Reader:
    def __init__(self, f: object, size: int) -> None:
        self.f = f
        self.size = size
        head = self._read(0, 16)
        order = head[:2]
        if order not in (b"II", b"MM"):
            raise TiffError("not a TIFF (no II/MM byte order mark)")
        self.e = "<" if order == b"II" else ">"
        magic = struct.unpack(self.e + "H", head[2:4])[0]
        if magic == 42:
            self.big = False
            self.first = struct.unpack(self.e + "I", head[4:8])[0]
        elif magic == 43:
            self.big = True
            self.first = struct.unpack(self.e + "Q", head[8:16])[0]
        else:
            raise TiffError(f"not a TIFF (magic {magic})")

    def _read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise TiffError(f"a TIFF structure at bytes {offset}..{offset + n} lies past the end of the file "
                            f"({self.size} bytes): truncated")
        self.f.seek(offset)  # type: ignore[attr-defined]
        data: bytes = self.f.read(n)  # type: ignore[attr-defined]
        return data

    def _ifd(self, offset: int) -> tuple[dict[int, np.ndarray], int]:
        """One IFD's offset/count tags (as arrays) and the next IFD's offset."""
        cnt_fmt, cnt_size, entry_size = ("Q", 8, 20) if self.big else ("H", 2, 12)
        n = struct.unpack(self.e + cnt_fmt, self._read(offset, cnt_size))[0]
        raw = self._read(offset + cnt_size, n * entry_size + (8 if self.big else 4))
        tags: dict[int, np.ndarray] = {}
        for k in range(n):
            entry = raw[k * entry_size:(k + 1) * entry_size]
            tag, typ = struct.unpack(self.e + "HH", entry[:4])
            if tag not in (_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS) or typ not in _TYPES:
                continue
            count = struct.unpack(self.e + ("Q" if self.big else "I"), entry[4:12] if self.big else entry[4:8])[0]
            char, width = _TYPES[typ]
            inline = entry[12:20] if self.big else entry[8:12]
            nbytes = count * width
            if nbytes <= len(inline):
                data = inline[:nbytes]
            else:
                where = struct.unpack(self.e + ("Q" if self.big else "I"), inline)[0]
                data = self._read(where, nbytes)
            tags[tag] = np.frombuffer(data, dtype=np.dtype(self.e + char)).astype(np.uint64)
        nxt = struct.unpack(self.e + ("Q" if self.big else "I"), raw[n * entry_size:])[0]
        return tags, nxt

    def overruns(self, out: list[Overrun]) -> None:
        """Appends to `out` as it goes, so what was found before a TiffError is kept."""
        seen: set[int] = set()
        offset, index = self.first, 0
        while offset:
            if offset in seen or index >= MAX_IFDS:
                raise TiffError(f"the IFD chain loops or has more than {MAX_IFDS} images")
            seen.add(offset)
            tags, offset = self._ifd(offset)
            for offs_tag, cnt_tag, kind in ((_TILE_OFFSETS, _TILE_COUNTS, "tile"),
                                            (_STRIP_OFFSETS, _STRIP_COUNTS, "strip")):
                if offs_tag not in tags or cnt_tag not in tags:
                    continue
                offs, cnts = tags[offs_tag], tags[cnt_tag]
                m = min(len(offs), len(cnts))
                ends = offs[:m] + cnts[:m]
                past = np.flatnonzero((cnts[:m] > 0) & (ends > self.size))
                if len(past):
                    b = int(past[0])
                    out.append(Overrun(index, b, kind, int(ends[b]), self.size, len(past)))
                break
            index += 1
