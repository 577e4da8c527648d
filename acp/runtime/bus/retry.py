"""Redis errors at the boundary: a lost connection is retried where a retry can help,
and every other redis exception becomes one of the runtime's own (``BusError`` and
below), so none reaches a caller, or a command-line user, as a traceback."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from acp.errors import AccessDenied, ACPError, BusError, CommandRefused, ConnectionLost
from acp.logs import get_logger

__all__ = ["RECOVERABLE", "is_denial", "retrying", "translate"]

T = TypeVar("T")
log = get_logger("acp.bus")

#: what a new connection, or a cluster done with its failover or slot migration, can cure
RECOVERABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionResetError,
    OSError,
    ClusterDownError,
    TryAgainError,
)
#: a server's answer the caller may handle itself (True: handled, run the call again)
Recover = Callable[[ResponseError], Awaitable[bool]]


def is_denial(exc: ResponseError) -> bool:
    """NOPERM, also when raised by a command inside a script (wrapped in ERR ...)."""
    text = str(exc)
    return (
        isinstance(exc, NoPermissionError) or "NOPERM" in text or "no permissions" in text.lower()
    )


def translate(exc: RedisError, where: str) -> ACPError:
    """The runtime's error for a redis exception that no retry cures."""
    text = str(exc).replace("\n", " ")
    if isinstance(exc, AuthenticationError) or (isinstance(exc, ResponseError) and is_denial(exc)):
        return AccessDenied(f"{where} refused access: {text}")
    if isinstance(exc, OutOfMemoryError):
        return CommandRefused(
            "out_of_memory",
            f"{where} is out of memory and refuses writes ({text}); free memory or raise its "
            "maxmemory",
        )
    if isinstance(exc, ReadOnlyError):
        return CommandRefused(
            "read_only", f"{where} is a read-only replica ({text}); connect to the primary"
        )
    if isinstance(exc, ResponseError):
        return CommandRefused("error", f"{where} refused a command: {text}")
    return BusError(f"{where}: {type(exc).__name__}: {text}")


async def retrying(
    fn: Callable[[], Awaitable[T]],
    *,
    where: str,
    timeout: float,  # noqa: ASYNC109 - how long to keep retrying, not a call timeout
    recover: Recover | None = None,
    denied: Callable[[Exception], ACPError] | None = None,
    first: Exception | None = None,
) -> T:
    """Run ``fn``, retrying lost connections with capped, jittered backoff for up to
    ``timeout`` seconds (then ``ConnectionLost``); any other redis exception is
    translated (``denied`` words a refused login or permission its own way).
    ``first`` is the error a caller's own first try met (its happy path stays a
    bare ``await``: this runs only once something went wrong)."""
    started = time.monotonic()
    delay = 0.05
    while True:
        try:
            if first is not None:
                failed, first = first, None
                raise failed
            return await fn()
        except AuthenticationError as exc:  # a ConnectionError, but no retry helps
            raise (denied(exc) if denied else translate(exc, where)) from None
        except RECOVERABLE as exc:
            waited = time.monotonic() - started
            if waited + delay > timeout:
                raise ConnectionLost(
                    f"{where} unreachable (gave up after {waited:.1f}s): {exc}"
                ) from exc
            log.warning("redis_retry", error=str(exc), delay=round(delay, 3))
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0) * random.uniform(0.8, 1.2)
        except ResponseError as exc:
            if is_denial(exc):
                raise (denied(exc) if denied else translate(exc, where)) from None
            if recover is not None and await recover(exc):
                continue
            raise translate(exc, where) from exc
        except RedisError as exc:
            raise translate(exc, where) from exc
