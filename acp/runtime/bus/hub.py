"""One waiting read for every queue a consumer waits on, instead of one per queue.

A worker serving seventy agents used to hold a blocking ``XREADGROUP`` (and its
connection) per agent: seventy connections to the server per worker, a fleet at
the server's ``maxclients`` long before its CPU. ``ReadHub`` gathers the queues
whose processors are waiting for work and reads them together:

- on one server, with one ``XREADGROUP ... BLOCK ... STREAMS q1 q2 ...`` on one
  connection (every agent of a worker reads as the same consumer). ``COUNT``
  applies to each stream, so a busy queue cannot crowd the others out of a read.
  A queue that starts waiting while a read is blocked without it interrupts that
  read (``CLIENT UNBLOCK``) so that it is read at once;
- on a cluster, where one command cannot name keys of several slots, with one
  batch per node of non-blocking reads, one per queue, repeated after a pause that
  grows from 10 to 50 ms while nothing arrives (one connection per node).

While a shared read is under way the bus first reads a queue without blocking,
so a queue with work never waits for it: a busy agent costs no more than
before, and a lone queue goes straight into the read. Whoever waits runs the
shared read; when its own entries arrive it hands the read on to the next waiter.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from acp.runtime.keys import GROUP

__all__ = ["ReadHub", "stream_entries"]

#: longest a shared read blocks (waiters whose time is up leave between reads)
_MAX_BLOCK = 1.0
#: the pauses between polls of a cluster's queues, shortest and longest
_POLL_MIN, _POLL_MAX = 0.01, 0.05
#: attempts to unblock a read that has not blocked yet (2 ms apart)
_UNBLOCK_TRIES = 50

Run = Callable[[Sequence[Sequence[Any]]], Awaitable[list[Any]]]


@dataclass(eq=False)
class _Wait:
    count: int
    deadline: float
    entries: Any = None
    done: bool = False


@dataclass(eq=False)
class ReadHub:
    """The shared read of one consumer. ``run`` sends a batch on the hub's own
    connection(s); ``unblock`` interrupts a blocked read given its connection id
    (``None`` on a cluster, where reads do not block)."""

    consumer: str
    run: Run
    unblock: Callable[[int], Awaitable[bool]] | None
    _waiting: dict[str, _Wait] = field(default_factory=dict)
    #: entries read for a queue whose waiter had left (its time was up): the next read
    #: of that queue gets them, they are this consumer's already
    _spare: dict[str, list[Any]] = field(default_factory=dict)
    _reading: bool = False
    #: the streams the read in flight covers, and the connection it blocks
    _in_flight: frozenset[str] = frozenset()
    _reader_id: int | None = None
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _poll: float = _POLL_MIN

    @property
    def reading(self) -> bool:
        """A shared read is under way (a queue joining it may wait for an interrupt)."""
        return self._reading

    async def read(self, stream: str, count: int, block: float) -> Any:
        """The raw entries read for ``stream`` (``None``: nothing within ``block``)."""
        if spare := self._spare.get(stream):
            taken, self._spare[stream] = spare[:count], spare[count:]
            return taken
        wait = _Wait(count, time.monotonic() + block)
        self._waiting[stream] = wait
        try:
            if self._reading and stream not in self._in_flight:
                await self._interrupt()
            while not wait.done:
                left = wait.deadline - time.monotonic()
                if left <= 0:
                    return None
                if not self._reading:
                    await self._lead(wait)
                    continue
                changed = self._changed
                with anyio.move_on_after(left):
                    await changed.wait()
            return wait.entries
        finally:
            self._waiting.pop(stream, None)

    async def _interrupt(self) -> None:
        if self.unblock is None:
            self._poll = _POLL_MIN
            self._signal()  # a cluster's poll sleeps on the same event
            return
        # the read may not have reached the server yet (nothing to unblock): try
        # again shortly, until it is unblocked or has ended by itself
        for _ in range(_UNBLOCK_TRIES):
            if self._reader_id is not None and await self.unblock(self._reader_id):
                return
            await anyio.sleep(0.002)
            if not self._reading:
                return

    def _signal(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _lead(self, mine: _Wait) -> None:
        """Run shared reads until one brings entries or this waiter's time is up (then
        the next waiter leads)."""
        self._reading = True
        try:
            if self._reader_id is None and self.unblock is not None:
                # the id CLIENT UNBLOCK names, asked once per connection
                self._reader_id = int((await self.run([("CLIENT", "ID")]))[0])
            while mine.deadline > time.monotonic():
                if await self._cycle(mine):
                    return
                if self.unblock is None:
                    left = mine.deadline - time.monotonic()
                    with anyio.move_on_after(min(self._poll, max(left, 0.0))):
                        await self._changed.wait()
                    self._poll = min(self._poll * 2, _POLL_MAX)
        finally:
            self._reading = False
            self._in_flight = frozenset()
            self._signal()

    async def _cycle(self, mine: _Wait) -> bool:
        streams = list(self._waiting)
        count = min(w.count for w in self._waiting.values())
        self._in_flight = frozenset(streams)
        head = ("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", count)
        if self.unblock is not None:
            left = mine.deadline - time.monotonic()
            block = int(max(min(left, _MAX_BLOCK), 0.001) * 1000)
            commands = [(*head, "BLOCK", block, "STREAMS", *streams, *([">"] * len(streams)))]
        else:
            commands = [(*head, "STREAMS", s, ">") for s in streams]
        try:
            replies = await self.run(commands)
        except BaseException:
            self._reader_id = None  # the connection is made again: it gets a new id
            raise
        found = False
        for reply in replies:
            for key, entries in stream_entries(reply):
                if not entries:
                    continue
                stream = key.decode() if isinstance(key, bytes) else key
                wait = self._waiting.get(stream)
                if wait is None or wait.done:
                    self._spare.setdefault(stream, []).extend(entries)
                else:
                    wait.entries, wait.done, found = entries, True, True
        if found:
            self._poll = _POLL_MIN
        return found


def stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """``(stream, entries)`` of an XREAD or XREADGROUP reply: RESP2 pairs, RESP3 a
    map, or nothing."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else [(k, e) for k, e in reply]
