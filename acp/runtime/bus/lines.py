"""Command batches on the bus's own connections: hot-path round trips without
the client object's per-call machinery.

A redis-py pipeline takes its connection from the pool under a lock, hands it
back through a shielded task and runs its retry and observability wrappers on
every execution; on a two-core machine that costs about as much client time
as the round trip itself. The bus's hot paths (sends, commits, blocking
reads) each run a fixed batch of commands and need none of it. ``Lines``
keeps its connections on a plain stack (one event loop: nothing to lock),
writes a batch at once, reads every reply, so that a connection stays in step
even when one reply is an error, and puts the connection back. The errors are
redis-py's own, so the bus's retry policy applies unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = ["Lines"]


class Lines:
    """Connections made like ``pool``'s (same server, options and class), outside it."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[AbstractConnection] = []
        self._made: list[AbstractConnection] = []

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands``, sent in one write; raises the first error reply."""
        conn = self._idle.pop() if self._idle else self._new()
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
                    error = error or exc
        except BaseException:
            # half sent or half read (a lost connection, a timeout, a cancellation):
            # the connection is out of step; it reconnects on its next use
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            raise
        finally:
            self._idle.append(conn)
        if error is not None:
            raise error
        return replies

    def _new(self) -> AbstractConnection:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        self._made.append(conn)
        return conn

    async def aclose(self) -> None:
        for conn in self._made:
            await conn.disconnect()
        self._made.clear()
        self._idle.clear()
        await self._pool.disconnect()
