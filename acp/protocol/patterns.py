"""Regex checks that remember what passed.

Destination names and command names come from a small vocabulary that every
message repeats; a set lookup answers for a known one at a fraction of a
regex match. Only matches are remembered, and the memory is bounded, so an
unbounded stream of distinct strings costs a regex match each, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["remembering_fullmatch"]


def remembering_fullmatch(pattern: re.Pattern[str], limit: int = 4096) -> Callable[[str], bool]:
    """``pattern.fullmatch(text) is not None``, remembered for up to ``limit`` texts."""
    known: set[str] = set()

    def matches(text: str) -> bool:
        if text in known:
            return True
        if pattern.fullmatch(text) is None:
            return False
        if len(known) >= limit:
            known.clear()
        known.add(text)
        return True

    return matches
