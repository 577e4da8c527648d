"""Command batches on the bus's own connections: hot-path round trips without
the client object's per-call machinery.

A redis-py pipeline takes its connection from the pool under a lock, hands it
back through a shielded task and runs its retry and observability wrappers on
every execution; on a two-core machine that costs about as much client time
as the round trip itself. The bus's hot paths (sends, commits, blocking
reads) each run a fixed batch of commands and need none of it. ``Lines``
keeps its connections on a plain stack (one event loop: nothing to lock), at
most a few of them (callers beyond that wait their turn: a burst must not open
a connection each), writes a batch at once, reads every reply, so that a connection stays in step
even when one reply is an error, and puts the connection back. The errors are
redis-py's own, so the bus's retry policy applies unchanged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = ["Lines"]


class Lines:
    """Connections made like ``pool``'s (same server, options and class), outside it;
    at most ``limit`` of them: more concurrent batches wait for one to be free."""

    def __init__(self, pool: ConnectionPool, *, limit: int = 8) -> None:
        self._pool = pool
        self._limit = max(limit, 1)
        self._idle: list[AbstractConnection] = []
        self._made: list[AbstractConnection] = []
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def _take(self) -> AbstractConnection:
        while not self._idle and len(self._made) >= self._limit:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn
            except BaseException:
                if turn in self._waiting:
                    self._waiting.remove(turn)
                elif turn.done() and not turn.cancelled():
                    self._wake_next()  # the turn handed to us goes to the next waiter
                raise
        return self._idle.pop() if self._idle else self._new()

    def _give_back(self, conn: AbstractConnection) -> None:
        self._idle.append(conn)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands``, sent in one write; raises the first error reply."""
        replies = await self.run_all(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def run_all(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands``, sent in one write; an error reply stands in
        its command's place."""
        conn = await self._take()
        try:
            if not conn.is_connected:
                # as a pool does before handing a connection out: a Sentinel-managed
                # connection asks where the primary is here, not on a lazy send
                await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            # half sent or half read (a lost connection, a timeout, a cancellation):
            # the connection is out of step; it reconnects on its next use
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            raise
        finally:
            self._give_back(conn)
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
