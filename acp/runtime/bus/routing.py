"""Command batches on a Redis/Valkey Cluster: each command goes to the primary
serving its key's slot, as one write per node.

The bus's batches (``Lines``) mix commands for several destinations (a commit
and the replies it sends, a request and a read of the inbox); on a cluster
those keys live on different nodes. :class:`ClusterLines` splits a batch by
node, keeping each node's commands in their order, runs the parts side by side
and puts the replies back in the batch's order. The layout of the keys (one
hash tag per destination, ``acp.runtime.keys``) guarantees that every command
and every script names one slot; nothing here ever sends a cross-slot command.

Redirections are followed: ``MOVED`` (the slot has a new owner: the slot map
is read again and the command goes there) and ``ASK`` (the slot is being
migrated and this key is already on the target: ``ASKING`` then the command,
once, on the target). Both mean the command did not run, so running it where
the cluster points never doubles it. A node that cannot be reached, or a
cluster that is down (a failover in progress), raises the connection errors
the bus already retries with backoff; the slot map is read again before the
next try, so a promoted replica is found.

Waits for durability (``WAIT``, ``WAITAOF``) name no key and measure the
writes of the connection they run on, so a batch's wait runs on every node the
batch wrote to, right after those writes, and its reply is the weakest of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from acp.runtime.bus.connection import timed_sends
from acp.runtime.bus.lines import Lines
from acp.runtime.bus.retry import RECOVERABLE

__all__ = ["BARRIERS", "ClusterLines", "Topology", "command_slot"]

#: commands that name no key and wait for the connection's earlier writes
BARRIERS = frozenset({"WAIT", "WAITAOF"})
#: redirections followed for one batch before giving up (a slot moving twice
#: while the batch runs, a map read during a failover)
_MAX_REDIRECTS = 5
#: the slot map is read again at most this often when errors ask for it
_REFRESH_INTERVAL = 0.25


def _upper(word: Any) -> str:
    return (word.decode() if isinstance(word, bytes) else str(word)).upper()


def command_slot(command: Sequence[Any]) -> int | None:
    """The slot of the key a bus command names (``None`` for a barrier)."""
    name = _upper(command[0])
    if name in BARRIERS:
        return None
    if name in ("EVALSHA", "EVAL"):
        key = command[3]
    elif name in ("XREAD", "XREADGROUP"):
        key = command[[_upper(w) for w in command].index("STREAMS") + 1]
    else:
        key = command[1]
    return int(key_slot(key.encode() if isinstance(key, str) else key))


class Topology:
    """Which primary serves each slot, read from the cluster by redis-py's cluster
    client (the bus's administration client), and read again when it changed."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self.epoch = 0
        self._stale = False
        self._refreshed = 0.0
        self._lock = anyio.Lock()

    def primary(self, slot: int) -> tuple[str, str, int]:
        """``(name, host, port)`` of the slot's primary."""
        try:
            node = self.cluster.nodes_manager.get_node_from_slot(slot)
        except (RedisClusterException, IndexError, KeyError) as exc:
            self._stale = True
            raise ClusterDownError(f"CLUSTERDOWN no node serves slot {slot}: {exc}") from None
        return node.name, node.host, int(node.port)

    def mark_stale(self) -> None:
        self._stale = True

    async def refresh_if_stale(self) -> None:
        if self._stale:
            await self.refresh(self.epoch)

    async def refresh(self, seen: int) -> None:
        """Read the slot map again unless someone did since epoch ``seen``."""
        async with self._lock:
            if self.epoch != seen:
                return
            wait = _REFRESH_INTERVAL - (time.monotonic() - self._refreshed)
            if wait > 0:
                await anyio.sleep(wait)
            try:
                await self.cluster.nodes_manager.initialize()
            except (*RECOVERABLE, RedisClusterException, ResponseError) as exc:
                self._stale = True
                raise ClusterDownError(f"CLUSTERDOWN reading the slot map: {exc}") from None
            finally:
                self._refreshed = time.monotonic()
            self._stale = False
            self.epoch += 1


class ClusterLines:
    """``Lines`` over a cluster: one ``Lines`` per primary (at most ``limit``
    connections each), made on first use with ``connection_kwargs``."""

    def __init__(
        self, topology: Topology, connection_kwargs: dict[str, Any], *, limit: int = 8
    ) -> None:
        self.topology = topology
        self._kwargs = connection_kwargs
        self._limit = limit
        self._nodes: dict[str, Lines] = {}

    def _lines(self, name: str, host: str, port: int) -> Lines:
        lines = self._nodes.get(name)
        if lines is None:
            pool = ConnectionPool(**{**self._kwargs, "host": host, "port": port})
            pool.connection_class = timed_sends(pool.connection_class)
            lines = self._nodes[name] = Lines(pool, limit=self._limit)
        return lines

    async def run(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands``, each run on its slot's primary; raises the
        first error reply, as ``Lines.run`` does: one that a cluster in the middle of a
        failover or migration gives as ``TryAgainError``, which the bus retries."""
        replies = await self.run_all(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                if _names_topology(reply) and not isinstance(reply, ClusterDownError):
                    raise TryAgainError(str(reply)) from reply
                raise reply
        return replies

    async def run_all(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        await self.topology.refresh_if_stale()
        slots = [command_slot(c) for c in commands]
        replies: list[Any] = [None] * len(commands)
        barrier_replies: dict[int, list[Any]] = {}
        todo = [i for i, slot in enumerate(slots) if slot is not None]
        asking: dict[int, tuple[str, str, int]] = {}
        for _ in range(_MAX_REDIRECTS):
            epoch = self.topology.epoch
            plan = self._plan(commands, slots, todo, asking)
            results = await self._run_plan(plan)
            todo, asking = [], {}
            moved = False
            for (_, _, positions), got in zip(plan, results, strict=True):
                for i, reply in zip([p for p in positions if p != -1], got, strict=True):
                    if slots[i] is None:
                        barrier_replies.setdefault(i, []).append(reply)
                    elif isinstance(reply, MovedError):
                        todo.append(i)
                        moved = True
                    elif isinstance(reply, AskError):
                        todo.append(i)
                        asking[i] = _target(reply)
                    else:
                        replies[i] = reply
            if not todo:
                break
            if moved:
                await self.topology.refresh(epoch)
        else:
            self.topology.mark_stale()
            raise ClusterDownError(
                f"CLUSTERDOWN a slot kept moving: {_MAX_REDIRECTS} redirections for one batch"
            )
        for i, got in barrier_replies.items():
            replies[i] = _weakest(got)
        return replies

    def _plan(
        self,
        commands: Sequence[Sequence[Any]],
        slots: Sequence[int | None],
        todo: Sequence[int],
        asking: dict[int, tuple[str, str, int]],
    ) -> list[tuple[Lines, list[Sequence[Any]], list[int]]]:
        """Per node: its commands, in batch order, each barrier after the writes
        before it, ``ASKING`` ahead of a command sent where a migration points."""
        groups: dict[str, tuple[Lines, list[Sequence[Any]], list[int]]] = {}
        pending = set(todo)
        for i, command in enumerate(commands):
            if slots[i] is None:
                for _, cmds, positions in groups.values():
                    cmds.append(command)
                    positions.append(i)
                continue
            if i not in pending:
                continue
            name, host, port = asking.get(i) or self.topology.primary(slots[i] or 0)
            group = groups.get(name)
            if group is None:
                group = groups[name] = (self._lines(name, host, port), [], [])
            if i in asking:
                group[1].append(("ASKING",))
                group[2].append(-1)
            group[1].append(command)
            group[2].append(i)
        return list(groups.values())

    async def _run_plan(
        self, plan: Sequence[tuple[Lines, list[Sequence[Any]], list[int]]]
    ) -> list[list[Any]]:
        """Each node's part (concurrently when there are several); a node that cannot
        be reached raises after every part has finished, so no part is cut half-read."""
        results: list[list[Any]] = [[] for _ in plan]
        failures: list[BaseException] = []

        async def one(n: int, lines: Lines, cmds: list[Sequence[Any]], pos: list[int]) -> None:
            try:
                got = await lines.run_all(cmds)
            except RECOVERABLE as exc:
                self.topology.mark_stale()
                failures.append(exc)
                return
            results[n] = [r for r, p in zip(got, pos, strict=True) if p != -1]
            for reply in results[n]:
                if isinstance(reply, ResponseError) and _names_topology(reply):
                    self.topology.mark_stale()

        if len(plan) == 1:
            await one(0, *plan[0])
        else:
            async with anyio.create_task_group() as tg:
                for n, part in enumerate(plan):
                    tg.start_soon(one, n, *part)
        if failures:
            raise failures[0]
        return results

    async def aclose(self) -> None:
        for lines in self._nodes.values():
            await lines.aclose()
        self._nodes.clear()


def _target(reply: AskError) -> tuple[str, str, int]:
    host, port = reply.host, int(reply.port)
    return f"{host}:{port}", host, port


def _names_topology(reply: ResponseError) -> bool:
    """An error a cluster gives while it changes: down or electing, a key half
    migrated, a primary that became a replica, a blocked read whose key moved away."""
    if isinstance(reply, ClusterDownError | TryAgainError):
        return True
    text = str(reply)
    return text.startswith(("CLUSTERDOWN", "TRYAGAIN", "READONLY", "MASTERDOWN", "UNBLOCKED"))


def _weakest(replies: list[Any]) -> Any:
    """The reply of a barrier run on several nodes: the smallest count (``WAIT``),
    the smallest of each count (``WAITAOF``), or the first error."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            return reply
    if all(isinstance(r, int) for r in replies):
        return min(replies)
    return [min(column) for column in zip(*replies, strict=True)]
