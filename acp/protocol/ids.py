"""Sortable unique ids: 48-bit milliseconds then 80 random bits, as 32 lowercase hex digits.

Ids sort by creation time, so stream positions, logs and dead letters line up
when read in order; within one millisecond a process's ids still increase.
Hex rather than base32 because it costs a tenth of the time on the hot path.
"""

from __future__ import annotations

import random
import threading
import time

__all__ = ["id_time", "is_id", "new_id"]

_MASK80 = (1 << 80) - 1
_lock = threading.Lock()
_last = 0
_HEX = frozenset("0123456789abcdef")


def new_id() -> str:
    """A 32-digit id that sorts after every id made before it in this process."""
    global _last
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    with _lock:
        if value <= _last:
            value = _last + 1 if (_last & _MASK80) != _MASK80 else ((_last >> 80) + 1) << 80
        _last = value
    return value.to_bytes(16, "big").hex()  # 32 lowercase hex digits, twice as fast as a format


def is_id(value: str) -> bool:
    return len(value) == 32 and _HEX.issuperset(value)


def id_time(value: str) -> float:
    """Seconds since the epoch at which an id was made."""
    if not is_id(value):
        raise ValueError(f"not a 32-digit hex id: {value!r}")
    return int(value[:12], 16) / 1000.0
