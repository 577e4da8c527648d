"""What the model API says about its rate limits, read from its response headers.

Kept apart from the Claude agent (and from the anthropic SDK) because the
coordinator, which never calls the API, schedules by these figures: workers
publish a :class:`RateLimitSnapshot` after each call, the coordinator reads it.
"""

from __future__ import annotations

import email.utils
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

__all__ = ["RateLimitCallback", "RateLimitSnapshot", "RateLimitWindow", "retry_after"]

_LIMIT_KINDS = ("requests", "input_tokens", "output_tokens", "tokens")


class RateLimitWindow(BaseModel):
    """One ``anthropic-ratelimit-<kind>-*`` triple; absent headers stay ``None``."""

    model_config = ConfigDict(frozen=True)

    limit: int | None = None
    remaining: int | None = None
    reset: datetime | None = None


class RateLimitSnapshot(BaseModel):
    """What one API response said about our limits: the coordinator's view of capacity."""

    model_config = ConfigDict(frozen=True)

    tier: str
    model: str
    status_code: int
    observed_at: datetime
    #: seconds the API asked us to wait (``retry-after-ms`` / ``retry-after``)
    retry_after: float | None = None
    requests: RateLimitWindow | None = None
    input_tokens: RateLimitWindow | None = None
    output_tokens: RateLimitWindow | None = None
    tokens: RateLimitWindow | None = None

    @classmethod
    def from_headers(
        cls,
        headers: Mapping[str, str],
        *,
        tier: str,
        model: str,
        status_code: int,
        observed_at: datetime | None = None,
    ) -> RateLimitSnapshot | None:
        """The snapshot in ``headers``, or None when they carry no limit information."""
        windows: dict[str, RateLimitWindow] = {}
        for kind in _LIMIT_KINDS:
            window = _window(headers, f"anthropic-ratelimit-{kind.replace('_', '-')}-")
            if window is not None:
                windows[kind] = window
        wait = retry_after(headers)
        if not windows and wait is None:
            return None
        return cls(
            tier=tier,
            model=model,
            status_code=status_code,
            observed_at=observed_at or datetime.now(UTC),
            retry_after=wait,
            **windows,
        )


#: called with (tier, snapshot) after every response that carries limit headers
RateLimitCallback = Callable[[str, RateLimitSnapshot], Awaitable[None] | None]


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _time_header(headers: Mapping[str, str], name: str) -> datetime | None:
    value = headers.get(name)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)  # RFC 3339, "Z" accepted since 3.11
    except ValueError:
        return None


def _window(headers: Mapping[str, str], prefix: str) -> RateLimitWindow | None:
    window = RateLimitWindow(
        limit=_int_header(headers, prefix + "limit"),
        remaining=_int_header(headers, prefix + "remaining"),
        reset=_time_header(headers, prefix + "reset"),
    )
    return None if window == RateLimitWindow() else window


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, read the way the SDK reads it (``_base_client.py``): the
    non-standard ``retry-after-ms`` first, then ``retry-after`` as seconds or a date."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return max(float(headers[name]) / scale, 0.0)
        except (KeyError, ValueError):
            continue
    value = headers.get("retry-after")
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None
