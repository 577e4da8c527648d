"""The Bus: durable queues of frames with at-least-once delivery and at-most-once effects.

The bus moves opaque frames plus a few string headers between named
destinations. It knows nothing of agents, envelopes or scheduling.

Delivery contract, shared by every backend (one contract test suite runs
against each):

* ``send`` is idempotent by message id: retrying it never makes a second entry.
* ``consume`` hands out each entry to one consumer at a time. An entry stays
  *pending* on that consumer until it is committed, retried or dead-lettered;
  entries idle longer than ``min_idle`` (a crashed or stuck consumer) are
  reclaimed by another consumer, and that redelivery counts.
* ``commit`` records the message as processed, queues its effects (replies,
  handoffs) and acknowledges it, in one atomic step, but only while the
  committing consumer still owns the entry (fencing). A message whose id was
  already processed is acknowledged as a duplicate and its effects dropped.
* After ``max_deliveries`` the entry goes to the dead-letter stream instead of
  being handed out again, with the reason and its delivery history.

The base class owns the policy (backoff, poison detection, when to reclaim
and promote, request/reply); a backend implements a handful of primitives.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, NamedTuple, Self

import anyio
import anyio.lowlevel

from acp.errors import BusClosed, ConfigError, RequestTimeout
from acp.logs import get_logger
from acp.protocol.ids import new_id
from acp.runtime.keys import INBOX_PREFIX, RESULTS, check_name, inbox_name

if TYPE_CHECKING:  # the store is built on the bus, not the other way round
    from acp.runtime.workflows.store import WorkflowStore

__all__ = [
    "Bus",
    "BusOptions",
    "CommitStatus",
    "DeadLetter",
    "Delivery",
    "Event",
    "Outgoing",
    "QueueStats",
    "ResultRecord",
]

log = get_logger("acp.bus")

#: header names the bus itself sets; user headers must not start with "acp-"
H_CORRELATION = "acp-corr"
#: on an item for ``RESULTS``: "1" when the record is final (a later record that is
#: not final leaves it alone: a late "running" never hides a reply)
H_FINAL = "acp-final"


def dead_payload(frame: bytes, most: int) -> tuple[bytes, dict[str, str]]:
    """What a dead letter keeps of ``frame``: all of it, or its first ``most`` bytes
    and the fields that say what was cut (its size and SHA-256)."""
    if len(frame) <= most:
        return frame, {}
    return frame[:most], {"size": str(len(frame)), "sha256": hashlib.sha256(frame).hexdigest()}


def derived_id(msg_id: str, what: str) -> str:
    """A message id made from another, the same every time: what a message causes
    gets the same id however often it runs, so the bus's dedup drops repeats."""
    return hashlib.blake2b(f"{msg_id}:{what}".encode(), digest_size=16).hexdigest()


def is_eager(dest: str) -> bool:
    """Replies to a client's inbox and result records leave with the commit itself
    (they carry no effects of their own, so a duplicate is harmless)."""
    return dest.startswith(INBOX_PREFIX) or dest == RESULTS


INBOX_CONSUMER = "client"
#: how often a consumer measures the server's clock again (hosts drift)
_CLOCK_SYNC_S = 60.0
#: the headers of an item that has none (read-only, so sharing it is safe)
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# Outgoing and Delivery are named tuples, not frozen dataclasses: one of each is
# made per message, and a tuple is built three times faster.


class Outgoing(NamedTuple):
    """A frame to put on a destination's queue. ``msg_id`` makes the send idempotent."""

    dest: str
    msg_id: str
    frame: bytes
    headers: Mapping[str, str] = NO_HEADERS


class Delivery(NamedTuple):
    """One entry handed to a consumer; ``deliveries`` counts this one too."""

    dest: str
    entry_id: str
    msg_id: str
    frame: bytes
    headers: Mapping[str, str]
    deliveries: int
    #: errors of earlier attempts, oldest first (kept for the dead-letter record)
    history: tuple[str, ...] = ()
    #: why the stream entry could not be read as an ACP writer makes it (empty when
    #: it could): such a delivery's ``frame`` holds the entry's raw fields, packed
    problem: str = ""


def spent_error(delivery: Delivery) -> str:
    """What a delivery past ``max_deliveries`` died of: its last error, if it had one."""
    return delivery.history[-1] if delivery.history else "redelivered after the consumer stopped"


def _time_out(waiter: asyncio.Future[Delivery], item: Outgoing, timeout: float) -> None:
    error = RequestTimeout(
        f"no reply from {item.dest!r} within {timeout:g}s (message {item.msg_id})"
    )
    _settle(waiter, None, error)


def _settle(
    waiter: asyncio.Future[Delivery], reply: Delivery | None, error: Exception | None
) -> None:
    """Resolve a request's future once: the first reply (or error) wins."""
    if not waiter.done():
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(reply)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Event:
    """A fan-out message on a topic; ``event_id`` is where to resume after it."""

    topic: str
    event_id: str
    frame: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dest: str
    entry_id: str
    msg_id: str
    frame: bytes
    headers: Mapping[str, str]
    reason: str
    error: str
    deliveries: int
    history: tuple[str, ...]
    dead_at: float
    #: the whole frame's size; ``frame`` holds at most ``dead_payload_max`` bytes of it
    size: int = 0
    #: the whole frame's SHA-256 (hex) when ``frame`` holds only its start
    sha256: str | None = None

    @property
    def cut(self) -> bool:
        """Only the frame's start was kept: it cannot be replayed."""
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """The latest record sent to ``RESULTS`` for one message (by its ``acp-corr`` header)."""

    msg_id: str
    headers: Mapping[str, str]
    frame: bytes
    #: server time of the write, epoch seconds
    updated_at: float

    @property
    def final(self) -> bool:
        return self.headers.get(H_FINAL) == "1"


@dataclass(frozen=True, slots=True)
class QueueStats:
    dest: str
    #: entries waiting to be handed out
    ready: int
    #: handed out, not yet committed
    pending: int
    delayed: int
    dead: int
    #: age in seconds of the oldest entry not yet committed (0 when idle)
    lag_s: float
    consumers: int


class CommitStatus(StrEnum):
    DONE = "done"
    #: the message id was already processed: nothing more committed, effects dropped
    DUPLICATE = "duplicate"
    #: another consumer owns the entry now and it is not processed: nothing committed
    LOST = "lost"


@dataclass(frozen=True)
class BusOptions:
    """Delivery policy, the same for every backend."""

    #: deliveries (crash redeliveries and retries included) before dead-lettering
    max_deliveries: int = 5
    #: an entry pending this long on one consumer is presumed abandoned
    min_idle: float = 30.0
    #: how often a consumer looks for abandoned entries and due retries
    reclaim_interval: float = 1.0
    #: how long a processed message id is remembered (duplicates within it are dropped)
    ledger_ttl: float = 24 * 3600.0
    #: how long a send's message id blocks a second entry with the same id
    dedup_ttl: float = 3600.0
    #: at most this many message ids are remembered per destination by the send dedup,
    #: and as many by the ledger, the oldest forgotten first: memory stays bounded
    #: whatever the rate (a duplicate is caught within both the time and this count).
    #: Trimmed with the age limit, at most once a second per destination and client,
    #: so a second's worth of ids may exceed it in between
    dedup_max: int = 100_000
    retry_base: float = 0.5
    retry_cap: float = 60.0
    #: reply inbox lifetime after its last reply
    inbox_ttl: float = 3600.0
    #: approximate cap on each topic stream's length
    topic_maxlen: int = 10_000
    #: outbox entries older than this were left by a committer that died before
    #: forwarding them; consumers of the destination forward them
    relay_after: float = 5.0
    #: result records (``RESULTS``) are kept this long after their last write ...
    result_ttl: float = 24 * 3600.0
    #: ... and at most this many, the oldest dropped first
    result_max: int = 100_000
    #: a consumer that read nothing for this long and holds nothing is forgotten (a
    #: worker that died, or was restarted under another name)
    consumer_ttl: float = 3600.0
    #: dead letters kept per destination, the oldest trimmed past it (each trim is
    #: logged and counted in ``Bus.dead_trimmed``)
    dead_max: int = 10_000
    #: a dead letter keeps at most this many bytes of its frame, with the whole
    #: frame's size and SHA-256: a 10 MB frame is not stored twice
    dead_payload_max: int = 64 * 1024


class Bus(abc.ABC):
    """Abstract bus; use ``RedisBus`` or ``MemoryBus`` inside ``async with``."""

    def __init__(self, options: BusOptions | None = None, *, client_id: str | None = None) -> None:
        self.options = options or BusOptions()
        self.client_id = client_id or new_id()[-12:]
        self._open = False
        #: requests waiting for their reply, by message id. A bare asyncio future and a
        #: timer handle cost a tenth of an anyio event and timeout scope, and a client
        #: with a hundred requests out pays them for every one (anyio runs on asyncio
        #: here: redis-py and the anthropic SDK need it)
        self._waiters: dict[str, asyncio.Future[Delivery]] = {}
        self._next_reclaim: dict[tuple[str, str], float] = {}
        #: the server's clock minus this host's, measured at connect and every minute
        self._clock_offset = 0.0
        self._clock_synced = -math.inf
        self._next_prune: dict[str, float] = {}
        self._drained: set[tuple[str, str]] = set()
        #: dead letters trimmed past ``dead_max``, by destination (a warning metric)
        self.dead_trimmed: Counter[str] = Counter()
        self._drain_after: dict[tuple[str, str], str] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._listening = False
        #: requests that go out with the listener's next read
        self._riders: list[Outgoing] = []
        #: the listener's read is on the wire (a request cannot ride with it)
        self._reading = False
        #: requests made while the listener's read is on the wire: one sender sends
        #: them all in one round trip (and whatever arrives meanwhile in the next)
        self._outbound: list[Outgoing] = []
        self._sending = False

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._connect()
            self._open = True
            await self.sync_clock()
        except BaseException:  # refused at start (a check failed): close what was opened
            self._open = False
            with anyio.CancelScope(shield=True):
                await self._disconnect()
            raise
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._open = True
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._tg is not None:
                # Close the bus's own background tasks (while the bus is still open, so
                # they end by cancellation, not errors) without handing them the caller's
                # exception: it must propagate unwrapped, not in a group.
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(None, None, None)
        finally:
            self._open = False
            self._tg = None
            with anyio.CancelScope(shield=True):
                await self._disconnect()

    def _check_open(self) -> None:
        if not self._open:
            raise BusClosed("the bus is not open: use it inside 'async with'")

    # -- primitives a backend implements ---------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    @abc.abstractmethod
    async def _send(self, items: Sequence[Outgoing], *, expire: float | None = None) -> None:
        """Append each item unless its message id was sent within ``dedup_ttl``; items
        for ``RESULTS`` replace the record of their ``acp-corr`` message instead (a
        record that is not final never replaces a final one), within ``result_ttl``
        and ``result_max``."""

    @abc.abstractmethod
    async def _read(
        self,
        dest: str,
        consumer: str,
        *,
        count: int,
        block: float,
        own: bool,
        after: str | None = None,
    ) -> list[Delivery]:
        """New entries, waiting up to ``block``; with ``own``, this consumer's pending
        entries after entry id ``after``, oldest first."""

    @abc.abstractmethod
    async def _reclaim(
        self, dest: str, consumer: str, *, min_idle: float, count: int
    ) -> list[Delivery]:
        """Take over entries idle at least ``min_idle`` on any consumer."""

    @abc.abstractmethod
    async def _promote(self, dest: str) -> int:
        """Move due delayed retries back onto the queue."""

    @abc.abstractmethod
    async def _commit(
        self,
        dest: str,
        consumer: str,
        items: Sequence[tuple[Delivery, Sequence[Outgoing]]],
        eager: Sequence[Outgoing],
    ) -> tuple[list[CommitStatus], list[str]]:
        """Atomically: fence, record processed, queue effects to the outbox, ack.
        Returns each item's status, and the outbox entry ids of the done items'
        effects in item order.

        ``eager`` effects (replies to client inboxes) are also sent right away,
        in the same round trip. A processor derives a reply's id from the message
        it answers, so the reply of a commit the ledger refuses is refused by the
        inbox's dedup: a caller never gets two."""

    @abc.abstractmethod
    async def _processed(self, dest: str, msg_ids: Sequence[str]) -> set[str]:
        """Which of ``msg_ids`` the ledger of ``dest`` holds (committed recently)."""

    @abc.abstractmethod
    async def _forward(self, dest: str, send: Sequence[Outgoing], done: Sequence[str]) -> None:
        """Send ``send`` (idempotently), then drop outbox entries ``done``
        (a backend may drop them later; the relay's resend would be deduplicated)."""

    @abc.abstractmethod
    async def _relay(self, dest: str, older_than: float) -> int:
        """Forward outbox entries a crashed committer left behind."""

    @abc.abstractmethod
    async def _retry(
        self, delivery: Delivery, consumer: str, *, due: float, error: str
    ) -> bool: ...

    @abc.abstractmethod
    async def _dead_letter(
        self, delivery: Delivery, consumer: str | None, *, reason: str, error: str
    ) -> str | None:
        """The dead letter's entry id, or None when ``consumer`` no longer owns it."""

    @abc.abstractmethod
    async def _renew(self, dest: str, consumer: str, entry_ids: Sequence[str]) -> list[bool]: ...

    @abc.abstractmethod
    async def _prune(self, dest: str, consumer: str, *, idle: float) -> int:
        """Delete consumers of ``dest`` (``consumer``, or any when empty) that hold no
        pending entry and were idle at least ``idle`` seconds; how many went."""

    # -- topics, presence, leases, counters, records, joins, dead letters ---------------
    # Public, concrete: each checks the bus is open and the names it is given (the rules
    # of ``check_name``, the same for every backend), then calls its primitive.

    async def publish(
        self, topic: str, frame: bytes, headers: Mapping[str, str] | None = None
    ) -> str:
        """Append an event to a topic (capped at ``topic_maxlen``); returns its id."""
        self._named(topic, "topic")
        return await self._publish(topic, frame, headers)

    def follow(self, dests: Sequence[str]) -> AsyncIterator[Delivery]:
        """New entries of ``dests`` as they arrive, without taking part in delivery
        (an observer, for ``acp tail``). Best effort: an entry consumed and deleted
        before the observer reads it is not seen."""
        self._check_open()
        if not dests:
            raise ConfigError("follow needs at least one destination")
        for dest in dests:
            check_name(dest)
        return self._follow(dests)

    async def latest(self, topic: str) -> Event | None:
        """The newest event of a topic, if any (what a status command shows)."""
        self._named(topic, "topic")
        return await self._latest(topic)

    def subscribe(self, topic: str, *, after: str = "$") -> AsyncIterator[Event]:
        """Events after ``after`` ("$": only new ones; "0": from the start), forever."""
        self._named(topic, "topic")
        return self._subscribe(topic, after=after)

    async def announce(self, group: str, member: str, info: bytes, *, ttl: float) -> None:
        """Say ``member`` of ``group`` is alive for ``ttl`` seconds (heartbeats renew it)."""
        self._named(group, "presence group")
        await self._announce(group, member, info, ttl=ttl)

    async def withdraw(self, group: str, member: str) -> None:
        self._named(group, "presence group")
        await self._withdraw(group, member)

    async def members(self, group: str) -> dict[str, bytes]:
        """Live members and what they announced; expired ones are dropped."""
        self._named(group, "presence group")
        return await self._members(group)

    async def lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        """Acquire or renew lease ``name`` for ``ttl`` seconds: its fencing token
        (larger for every new holder), or None while someone else holds it."""
        self._named(name, "lease")
        return await self._lease(name, holder, ttl=ttl)

    async def release(self, name: str, holder: str) -> None:
        self._named(name, "lease")
        await self._release(name, holder)

    async def add_to_counters(
        self,
        name: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
        once: str | None = None,
    ) -> bool:
        """Add to named float counters (spend per day, ...); ``ttl`` expires the set.
        With ``once``, add only if no earlier call named the same key (kept as long as
        the counters): replaying what was already counted changes nothing. True if
        the amounts were added."""
        self._named(name, "counters")
        return await self._add_to_counters(name, amounts, ttl=ttl, once=once)

    async def counters(self, name: str) -> dict[str, float]:
        """Every counter of ``name`` (an empty map once the set has expired)."""
        self._named(name, "counters")
        return await self._counters(name)

    async def mark(self, name: str, members: Sequence[str], *, ttl: float) -> None:
        """Mark ``members`` of the set ``name`` for ``ttl`` seconds from now (server
        time). Each member expires on its own, so a set marked without pause holds
        only what was marked within ``ttl``, not everything ever marked."""
        self._named(name, "marks")
        if members:
            await self._mark(name, members, ttl=ttl)

    async def marked(self, name: str, members: Sequence[str]) -> set[str]:
        """Those of ``members`` marked in ``name`` and not expired (one lookup each,
        whatever the size of the set)."""
        self._named(name, "marks")
        return await self._marked(name, members) if members else set()

    async def append_record(self, name: str, index: int, item: bytes, *, ttl: float) -> bool:
        """Put ``item`` at position ``index`` of the append-only record ``name`` if the
        record holds exactly ``index`` items; True also when it holds more (a re-run
        appending what it appended before). False on a gap. Each item is written
        once: a record costs what it holds, never a rewrite."""
        self._named(name, "record")
        return await self._append_record(name, index, item, ttl=ttl)

    async def read_record(self, name: str) -> list[bytes]:
        self._named(name, "record")
        return await self._read_record(name)

    async def open_join(
        self, name: str, expect: int, then: bytes, parts: Mapping[str, bytes], *, ttl: float
    ) -> None:
        """A rendezvous of ``expect`` parts (some already in: ``parts``) that hands
        ``then`` to whoever brings the last one. Opening it again changes nothing."""
        self._named(name, "join")
        await self._open_join(name, expect, then, parts, ttl=ttl)

    async def arrive(self, name: str, part: str, value: bytes) -> bytes | None:
        """Bring a part (the first value of a part wins): ``then`` when every part is
        in, else None. A part brought twice may complete it twice: what ``then``
        sends must be idempotent (it carries a fixed message id)."""
        self._named(name, "join")
        return await self._arrive(name, part, value)

    async def join_parts(self, name: str) -> dict[str, bytes]:
        self._named(name, "join")
        return await self._join_parts(name)

    async def dead_letters(self, dest: str, *, count: int = 100) -> list[DeadLetter]:
        self._named(dest, "destination")
        return await self._dead_letters(dest, count=count)

    async def replay(self, dest: str, entry_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back on the queue with a fresh delivery count."""
        self._named(dest, "destination")
        return await self._replay(dest, entry_ids)

    async def purge(self, dest: str, entry_ids: Sequence[str] | None = None) -> int:
        self._named(dest, "destination")
        return await self._purge(dest, entry_ids)

    async def stats(self, dest: str) -> QueueStats:
        """Ready, in flight, delayed, dead and lag of a destination; asking about one
        that never received work creates nothing."""
        self._named(dest, "destination")
        return await self._stats(dest)

    async def destinations(self) -> list[str]:
        """Every destination that ever received work."""
        self._check_open()
        return await self._destinations()

    async def take_over(
        self, dest: str, consumer: str, *, min_idle: float = 0.0, count: int = 100
    ) -> list[Delivery]:
        """Make ``consumer`` the owner of entries idle at least ``min_idle`` on any
        consumer of ``dest`` (a new coordinator takes over its intake this way: the
        old one's commits no longer own them)."""
        self._named(dest, "destination")
        return await self._reclaim(dest, consumer, min_idle=min_idle, count=count)

    def workflow_store(self) -> WorkflowStore:
        """Where workflows keep their state on this bus's server (every coordinator of
        a deployment sees the same)."""
        self._check_open()
        return self._workflow_store()

    def _named(self, name: str, what: str) -> None:
        self._check_open()
        check_name(name, what)

    # -- their primitives, one per backend ------------------------------------------

    @abc.abstractmethod
    async def _publish(
        self, topic: str, frame: bytes, headers: Mapping[str, str] | None = None
    ) -> str: ...

    @abc.abstractmethod
    def _follow(self, dests: Sequence[str]) -> AsyncIterator[Delivery]: ...

    @abc.abstractmethod
    async def _latest(self, topic: str) -> Event | None: ...

    @abc.abstractmethod
    def _subscribe(self, topic: str, *, after: str = "$") -> AsyncIterator[Event]: ...

    @abc.abstractmethod
    async def _announce(self, group: str, member: str, info: bytes, *, ttl: float) -> None: ...

    @abc.abstractmethod
    async def _withdraw(self, group: str, member: str) -> None: ...

    @abc.abstractmethod
    async def _members(self, group: str) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def _lease(self, name: str, holder: str, *, ttl: float) -> int | None: ...

    @abc.abstractmethod
    async def _release(self, name: str, holder: str) -> None: ...

    @abc.abstractmethod
    async def _add_to_counters(
        self,
        name: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
        once: str | None = None,
    ) -> bool: ...

    @abc.abstractmethod
    async def _counters(self, name: str) -> dict[str, float]: ...

    @abc.abstractmethod
    async def _mark(self, name: str, members: Sequence[str], *, ttl: float) -> None: ...

    @abc.abstractmethod
    async def _marked(self, name: str, members: Sequence[str]) -> set[str]: ...

    @abc.abstractmethod
    async def _append_record(self, name: str, index: int, item: bytes, *, ttl: float) -> bool: ...

    @abc.abstractmethod
    async def _read_record(self, name: str) -> list[bytes]: ...

    @abc.abstractmethod
    async def _open_join(
        self, name: str, expect: int, then: bytes, parts: Mapping[str, bytes], *, ttl: float
    ) -> None: ...

    @abc.abstractmethod
    async def _arrive(self, name: str, part: str, value: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def _join_parts(self, name: str) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def _dead_letters(self, dest: str, *, count: int = 100) -> list[DeadLetter]: ...

    @abc.abstractmethod
    async def _replay(self, dest: str, entry_ids: Sequence[str] | None = None) -> int: ...

    @abc.abstractmethod
    async def _purge(self, dest: str, entry_ids: Sequence[str] | None = None) -> int: ...

    @abc.abstractmethod
    async def _stats(self, dest: str) -> QueueStats: ...

    @abc.abstractmethod
    def _workflow_store(self) -> WorkflowStore: ...

    @abc.abstractmethod
    async def _entries(self, dest: str, *, count: int) -> list[Delivery]: ...

    @abc.abstractmethod
    async def _server_time(self) -> float:
        """The server's clock, epoch seconds."""

    @abc.abstractmethod
    async def _lookup_result(self, msg_id: str) -> ResultRecord | None:
        """The latest result record of ``msg_id``, if one is kept."""

    @abc.abstractmethod
    async def _destinations(self) -> list[str]: ...

    # -- the public surface, with the policy -----------------------------------

    async def send(self, item: Outgoing) -> None:
        await self.send_many([item])

    async def send_many(self, items: Sequence[Outgoing]) -> None:
        self._check_open()
        for item in items:
            check_name(item.dest)
        if items:
            await self._send(items)

    async def consume(
        self,
        dest: str,
        consumer: str,
        *,
        count: int = 100,
        block: float = 1.0,
        keep_spent: bool = False,
    ) -> list[Delivery]:
        """The next batch for ``consumer``: its own leftovers first (after a
        restart), then abandoned and due-retry entries, then new ones.

        Entries past ``max_deliveries`` are dead-lettered here and not returned,
        unless ``keep_spent``: then they are returned and the caller dead-letters
        them (a processor does, to tell the sender why).
        """
        self._check_open()
        check_name(dest)
        key = (dest, consumer)
        batch: list[Delivery] = []
        if key not in self._drained:
            # all of this consumer's leftovers first, a batch at a time, in id order
            batch = await self._read(
                dest, consumer, count=count, block=0, own=True, after=self._drain_after.get(key)
            )
            if batch:
                self._drain_after[key] = batch[-1].entry_id
            if len(batch) < count:
                self._drained.add(key)
        now = time.monotonic()
        if not batch and now >= self._next_reclaim.get(key, 0.0):
            self._next_reclaim[key] = now + self.options.reclaim_interval
            await self._promote(dest)
            await self._relay(dest, older_than=self.options.relay_after)
            batch = await self._reclaim(dest, consumer, min_idle=self.options.min_idle, count=count)
            if time.time() - self._clock_synced > _CLOCK_SYNC_S:
                await self.sync_clock()
            if now >= self._next_prune.get(dest, 0.0):
                self._next_prune[dest] = now + min(self.options.consumer_ttl / 4, 300.0)
                await self._prune(dest, "", idle=self.options.consumer_ttl)
        if not batch:
            batch = await self._read(dest, consumer, count=count, block=block, own=False)
        limit = self.options.max_deliveries
        if keep_spent:
            return batch
        spent = [d for d in batch if d.deliveries > limit]
        for delivery in spent:
            await self._dead_letter(
                delivery, consumer, reason="max_deliveries", error=spent_error(delivery)
            )
            log.warning(
                "dead_lettered", dest=dest, msg_id=delivery.msg_id, deliveries=delivery.deliveries
            )
        return [d for d in batch if d.deliveries <= limit] if spent else batch

    async def commit(
        self, consumer: str, items: Sequence[tuple[Delivery, Sequence[Outgoing]]]
    ) -> list[CommitStatus]:
        """Commit a batch (all from one destination); effects are forwarded at once
        and, if this process dies first, by the next consumer's relay."""
        self._check_open()
        if not items:
            return []
        dest = items[0][0].dest
        eager: list[Outgoing] = []
        for delivery, effects in items:
            if delivery.dest != dest:
                raise ValueError("a commit batch must hold deliveries of one destination")
            for effect in effects:
                check_name(effect.dest)
                if is_eager(effect.dest):
                    eager.append(effect)
        statuses, outbox = await self._commit(dest, consumer, items, eager)
        if outbox:  # the done items' effects are in the outbox: forward them now
            send = [
                effect
                for (_, effects), status in zip(items, statuses, strict=True)
                if status is CommitStatus.DONE
                for effect in effects
                if not is_eager(effect.dest)
            ]
            await self._forward(dest, send, outbox)
        return statuses

    def backoff(self, deliveries: int) -> float:
        """Exponential backoff with full jitter for the given delivery number."""
        ceiling = min(self.options.retry_cap, self.options.retry_base * 2 ** max(deliveries - 1, 0))
        return random.uniform(ceiling / 2, ceiling)

    async def retry(
        self, delivery: Delivery, consumer: str, *, error: str, delay: float | None = None
    ) -> bool:
        """Hand the entry back for another delivery after ``delay`` (default: backoff).
        Past ``max_deliveries`` it is dead-lettered instead. False if ownership was lost."""
        self._check_open()
        if delivery.deliveries >= self.options.max_deliveries:
            dead = await self._dead_letter(delivery, consumer, reason="max_deliveries", error=error)
            return dead is not None
        wait = self.backoff(delivery.deliveries) if delay is None else max(delay, 0.0)
        return await self._retry(delivery, consumer, due=time.time() + wait, error=error)

    async def dead_letter(
        self, delivery: Delivery, consumer: str, *, reason: str, error: str
    ) -> str | None:
        """Move the entry to the destination's dead-letter stream now (bad frame, fatal
        error): the dead letter's entry id, or None if ``consumer`` lost the entry."""
        self._check_open()
        return await self._dead_letter(delivery, consumer, reason=reason, error=error)

    async def processed(self, dest: str, msg_ids: Sequence[str]) -> set[str]:
        """Which of ``msg_ids`` were committed on ``dest`` within the ledger's window: a
        processor asks before running a batch, so a replayed message is not run again."""
        self._check_open()
        return await self._processed(dest, msg_ids) if msg_ids else set()

    def _count_trimmed(self, dest: str, trimmed: int) -> None:
        """Dead letters dropped past ``dead_max``: said, and counted for the metrics."""
        if trimmed > 0:
            self.dead_trimmed[dest] += trimmed
            log.warning(
                "dead_letters_trimmed", dest=dest, trimmed=trimmed, kept=self.options.dead_max,
                detail="the oldest dead letters were dropped: look at them sooner, or raise "
                "dead_max",
            )  # fmt: skip

    async def entries(self, dest: str, *, count: int = 10_000) -> list[Delivery]:
        """What ``dest`` holds now, waiting or in flight, oldest first, without taking any
        of it (a coordinator taking over reads what was dispatched before it led)."""
        self._check_open()
        return await self._entries(dest, count=count)

    def now(self) -> float:
        """Seconds since the epoch on the server's clock, as this client last measured it
        (``sync_clock``): the one clock every process compares ages and deadlines with,
        whatever its own clock says."""
        return time.time() + self._clock_offset

    async def sync_clock(self) -> float:
        """Measure the server's clock against this host's; returns the offset (seconds)."""
        self._check_open()
        before = time.time()
        server = await self._server_time()
        after = time.time()
        self._clock_offset = server - (before + after) / 2
        self._clock_synced = after
        return self._clock_offset

    async def leave(self, dest: str, consumer: str) -> bool:
        """A consumer that stops for good leaves the group of ``dest``, unless it still
        holds entries (they stay its own, for a restart under the same name to drain
        or another consumer to reclaim). True if it left."""
        self._check_open()
        return await self._prune(dest, consumer, idle=0.0) > 0

    async def renew(self, consumer: str, deliveries: Sequence[Delivery]) -> list[bool]:
        """Reset the idle clock of entries a long handler still works on; False where
        another consumer took the entry over (the handler must not commit it)."""
        self._check_open()
        if not deliveries:
            return []
        return await self._renew(deliveries[0].dest, consumer, [d.entry_id for d in deliveries])

    # -- request / reply ----------------------------------------------------------

    @property
    def inbox(self) -> str:
        """This bus client's reply destination: put it in ``reply_to``."""
        return inbox_name(self.client_id)

    async def request(self, item: Outgoing, *, timeout: float) -> Delivery:  # noqa: ASYNC109
        """Send ``item`` and wait for the reply whose correlation header is its id.

        The responder must address the reply to ``self.inbox`` with header
        ``acp-corr`` = the request's message id (``reply_headers`` helps).
        """
        self._check_open()
        check_name(item.dest)
        await self._ensure_listener()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Delivery] = loop.create_future()
        self._waiters[item.msg_id] = waiter
        timer = loop.call_later(timeout, _time_out, waiter, item, timeout)
        try:
            if self._reading:
                self._outbound.append(item)
                if not self._sending:
                    self._sending = True
                    assert self._tg is not None
                    self._tg.start_soon(self._send_outbound)
            else:
                # The listener is between reads: the request rides with its next
                # read, one round trip for both, as a hand-written loop would do.
                self._riders.append(item)
            return await waiter
        finally:
            timer.cancel()
            self._waiters.pop(item.msg_id, None)
            if not waiter.done():  # cancelled: nobody will read it
                waiter.cancel()
            if waiter.cancelled() or waiter.exception():  # timed out or cancelled
                for queue in (self._riders, self._outbound):
                    if item in queue:  # before it left: it need not leave now
                        queue.remove(item)

    async def result(self, msg_id: str) -> ResultRecord | None:
        """The latest result record of ``msg_id`` (see ``RESULTS``), if one is kept."""
        self._check_open()
        return await self._lookup_result(msg_id)

    async def _send_outbound(self) -> None:
        """Send the requests queued while the listener's read was on the wire, a batch
        per round trip, until none are left; a failed send fails its requests."""
        try:
            while self._outbound:
                batch, self._outbound = self._outbound, []
                try:
                    await self.send_many(batch)
                except Exception as exc:
                    for item in batch:
                        waiter = self._waiters.get(item.msg_id)
                        if waiter is not None:
                            _settle(waiter, None, exc)
        finally:
            self._sending = False

    @staticmethod
    def reply_headers(
        request_msg_id: str, headers: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        return {**(headers or {}), H_CORRELATION: request_msg_id}

    async def _ensure_listener(self) -> None:
        if self._listening:
            return
        assert self._tg is not None
        self._listening = True
        await self._tg.start(self._listen)

    async def _listen(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        batch: list[Delivery] = []
        while True:
            # one turn for requesters woken by the last batch to queue their next request
            await anyio.lowlevel.checkpoint()
            riders, self._riders = self._riders, []
            seen = batch
            self._reading = True
            try:
                batch = await self._read_inbox(seen, riders, count=100, block=1.0)
            except Exception as exc:
                if not riders:
                    raise  # the inbox itself cannot be read: the bus is in trouble
                # The requests that rode with this read fail with its error (an
                # out-of-memory server, say); the listener reads on.
                for item in riders:
                    waiter = self._waiters.get(item.msg_id)
                    if waiter is not None:
                        _settle(waiter, None, exc)
                batch = list(seen)  # still to be acknowledged
                continue
            finally:
                self._reading = False
            waiters = self._waiters
            for delivery in batch:
                waiter = waiters.get(delivery.headers.get(H_CORRELATION, ""))
                if waiter is not None:
                    _settle(waiter, delivery, None)

    async def _read_inbox(
        self, seen: Sequence[Delivery], sends: Sequence[Outgoing], *, count: int, block: float
    ) -> list[Delivery]:
        """Send ``sends``, acknowledge the replies already ``seen``, then read the next ones.

        The inbox is private and its replies carry no effects, so no ledger is
        needed: a backend may fold all three into one round trip."""
        if sends:
            await self._send(sends)
        if seen:
            await self.commit(INBOX_CONSUMER, [(d, ()) for d in seen])
        return await self.consume(self.inbox, INBOX_CONSUMER, count=count, block=block)
