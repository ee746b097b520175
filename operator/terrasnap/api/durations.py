"""Durations as the CRDs spell them: an integer and one unit, `30s`, `15m`, `24h`, `90d`, `2w`.

The one duration parser: the SnapshotStore's gc.gracePeriod and gc.keep.within, and `terrasnap gc --grace`.
"""

from __future__ import annotations

import re
from datetime import timedelta

# At most five digits: 99999w is about 1,900 years — a datetime minus that never overflows (an unbounded
# count did, and broke every GC of the store)
_PATTERN = re.compile(r"^([0-9]{1,5})(s|m|h|d|w)\Z")  # the CRDs' pattern (tests/unit/test_contract.py)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`24h` → timedelta(hours=24). Raises ValueError on anything the CRD pattern would refuse."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(
            f"invalid duration {text!r}: want an integer and one of s, m, h, d, w (e.g. 24h, 90d)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
