"""The bus in process memory, for embedding and tests of code above the bus.

Same semantics as the Redis bus, not a shortcut: entries stay pending on a
consumer until committed, idle ones are reclaimed and counted, commits fence
on ownership and dedup by message id, retries wait in a delayed set, poison
messages reach the dead letters. Several ``MemoryBus`` clients share one
``MemoryBroker``, as several processes share one Redis. Nothing survives the
process: that is what the Redis bus is for.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from acp.runtime.bus.base import (
    H_CORRELATION,
    H_FINAL,
    Bus,
    BusOptions,
    CommitStatus,
    DeadLetter,
    Delivery,
    Event,
    Outgoing,
    QueueStats,
    ResultRecord,
    dead_payload,
)
from acp.runtime.keys import RESULTS, check_name

if TYPE_CHECKING:  # built on the bus, not imported by it
    from acp.runtime.workflows.store import WorkflowStore

__all__ = ["MemoryBroker", "MemoryBus"]


@dataclass
class _Entry:
    msg_id: str
    frame: bytes
    headers: Mapping[str, str]
    attempts: int = 0
    history: tuple[str, ...] = ()


@dataclass
class _Pending:
    consumer: str
    since: float
    times: int


@dataclass
class _Queue:
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    ready: deque[str] = field(default_factory=deque)
    pending: dict[str, _Pending] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    delayed: list[tuple[float, _Entry]] = field(default_factory=list)
    outbox: OrderedDict[str, Outgoing] = field(default_factory=OrderedDict)
    dead: OrderedDict[str, DeadLetter] = field(default_factory=OrderedDict)
    #: consumers by when they last read (monotonic seconds)
    consumers: dict[str, float] = field(default_factory=dict)
    arrived: anyio.Event = field(default_factory=anyio.Event)
    #: the latest appends, for observers (``follow``)
    recent: deque[tuple[str, _Entry]] = field(default_factory=lambda: deque(maxlen=1000))


@dataclass
class _Topic:
    events: deque[Event] = field(default_factory=deque)
    arrived: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class _Join:
    expect: int | None = None
    then: bytes = b""
    parts: dict[str, bytes] = field(default_factory=dict)


class MemoryBroker:
    """The shared state several ``MemoryBus`` clients talk to."""

    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        self.topics: dict[str, _Topic] = {}
        self.presence: dict[str, dict[str, tuple[float, bytes]]] = {}
        #: lease name -> (holder, token, expires at); tokens only grow
        self.leases: dict[str, tuple[str, int, float]] = {}
        self.lease_tokens: dict[str, int] = {}
        self.counters: dict[str, dict[str, float]] = {}
        #: marked sets: name -> member -> until (epoch seconds)
        self.marks: dict[str, dict[str, float]] = {}
        #: append-only records, and joins (parts, expected count, payload)
        self.records: dict[str, list[bytes]] = {}
        self.joins: dict[str, _Join] = {}
        #: the workflows' state, made when a coordinator first asks
        self.workflows: WorkflowStore | None = None
        #: the ``once`` keys each counters set has counted
        self.counted: dict[str, set[str]] = {}
        #: result records by message id, oldest write first
        self.results: OrderedDict[str, ResultRecord] = OrderedDict()
        #: (kind, name) -> when the counters, record, join or marks of that name go
        #: (as the server expires their keys); swept at most once a second
        self.expiries: dict[tuple[str, str], float] = {}
        self._next_sweep = 0.0
        self._seq = itertools.count()
        self._last_ms = 0

    def _stores(self, kind: str) -> tuple[dict[str, Any], ...]:
        if kind == "counters":
            return self.counters, self.counted
        if kind == "records":
            return (self.records,)
        return (self.joins,) if kind == "joins" else (self.marks,)

    def expire(self, kind: str, name: str, ttl: float | None) -> None:
        """``name``'s ``kind`` goes ``ttl`` seconds from now (each write renews it)."""
        if ttl:
            self.expiries[kind, name] = time.time() + ttl

    def held(self, kind: str, name: str) -> None:
        """Drop ``name``'s ``kind`` if its time is up (and, once a second, everything
        else whose time is): called before each read or write of one."""
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            gone = [key for key, until in self.expiries.items() if until <= now]
        elif self.expiries.get((kind, name), now + 1.0) <= now:
            gone = [(kind, name)]
        else:
            return
        for key in gone:
            del self.expiries[key]
            for store in self._stores(key[0]):
                store.pop(key[1], None)

    def queue(self, dest: str) -> _Queue:
        q = self.queues.get(dest)
        if q is None:
            q = self.queues[dest] = _Queue()
        return q

    def next_id(self) -> str:
        """Stream-style ids ("<ms>-<seq>") that only increase."""
        ms = max(int(time.time() * 1000), self._last_ms)
        self._last_ms = ms
        return f"{ms}-{next(self._seq)}"

    @staticmethod
    def wake(q: _Queue | _Topic) -> None:
        q.arrived.set()
        q.arrived = anyio.Event()


class MemoryBus(Bus):
    """An in-process bus; pass the same ``broker`` to clients that should meet."""

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        options: BusOptions | None = None,
        *,
        client_id: str | None = None,
    ) -> None:
        super().__init__(options, client_id=client_id)
        self.broker = broker or MemoryBroker()

    def __repr__(self) -> str:
        return f"MemoryBus(queues={len(self.broker.queues)})"

    async def _connect(self) -> None:
        pass

    async def _disconnect(self) -> None:
        pass

    # -- primitives -------------------------------------------------------------------

    def _append(self, dest: str, entry: _Entry) -> None:
        q = self.broker.queue(dest)
        entry_id = self.broker.next_id()
        q.entries[entry_id] = entry
        q.ready.append(entry_id)
        q.recent.append((entry_id, entry))
        self.broker.wake(q)

    async def _send(self, items: Sequence[Outgoing], *, expire: float | None = None) -> None:
        now = time.time()
        for item in items:
            if item.dest == RESULTS:
                self._record(item, now)
                continue
            q = self.broker.queue(item.dest)
            _expire(q.sent, now - self.options.dedup_ttl, self.options.dedup_max)
            if item.msg_id in q.sent:
                continue
            q.sent[item.msg_id] = now
            self._append(item.dest, _Entry(item.msg_id, item.frame, dict(item.headers)))
        await anyio.lowlevel.checkpoint()

    def _record(self, item: Outgoing, now: float) -> None:
        records = self.broker.results
        msg_id = item.headers.get(H_CORRELATION, item.msg_id)
        old = records.get(msg_id)
        if old is not None and old.final and item.headers.get(H_FINAL) != "1":
            return
        records.pop(msg_id, None)
        records[msg_id] = ResultRecord(msg_id, dict(item.headers), item.frame, now)
        cutoff = now - self.options.result_ttl
        while records and (
            len(records) > self.options.result_max
            or next(iter(records.values())).updated_at < cutoff
        ):
            records.popitem(last=False)

    def _deliver(self, dest: str, entry_id: str, consumer: str, times: int) -> Delivery:
        q = self.broker.queue(dest)
        e = q.entries[entry_id]
        q.pending[entry_id] = _Pending(consumer, time.monotonic(), times)
        q.consumers[consumer] = time.monotonic()
        return Delivery(dest, entry_id, e.msg_id, e.frame, e.headers, e.attempts + times, e.history)

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
        q = self.broker.queue(dest)
        q.consumers[consumer] = time.monotonic()
        if own:
            floor = _id_key(after) if after else (-1, -1)
            mine = sorted(
                (
                    eid
                    for eid, p in q.pending.items()
                    if p.consumer == consumer and _id_key(eid) > floor
                ),
                key=_id_key,
            )[:count]
            return [self._deliver(dest, eid, consumer, q.pending[eid].times + 1) for eid in mine]
        if not q.ready and block > 0:
            with anyio.move_on_after(block):
                await q.arrived.wait()
        out: list[Delivery] = []
        while q.ready and len(out) < count:
            entry_id = q.ready.popleft()
            if entry_id in q.entries:
                out.append(self._deliver(dest, entry_id, consumer, 1))
        await anyio.lowlevel.checkpoint()
        return out

    async def _reclaim(
        self, dest: str, consumer: str, *, min_idle: float, count: int
    ) -> list[Delivery]:
        q = self.broker.queue(dest)
        cutoff = time.monotonic() - min_idle
        idle = [eid for eid, p in q.pending.items() if p.since <= cutoff][:count]
        out: list[Delivery] = []
        for eid in idle:
            times = q.pending[eid].times + 1
            if eid in q.entries:
                out.append(self._deliver(dest, eid, consumer, times))
            else:
                del q.pending[eid]
        await anyio.lowlevel.checkpoint()
        return out

    async def _promote(self, dest: str) -> int:
        q = self.broker.queue(dest)
        now = time.time()
        due = [entry for when, entry in q.delayed if when <= now]
        q.delayed = [(when, entry) for when, entry in q.delayed if when > now]
        for entry in due:
            self._append(dest, entry)
        return len(due)

    def _owned(self, q: _Queue, entry_id: str, consumer: str) -> bool:
        p = q.pending.get(entry_id)
        return p is not None and p.consumer == consumer

    def _ack(self, q: _Queue, entry_id: str) -> None:
        q.pending.pop(entry_id, None)
        q.entries.pop(entry_id, None)

    async def _commit(
        self,
        dest: str,
        consumer: str,
        items: Sequence[tuple[Delivery, Sequence[Outgoing]]],
        eager: Sequence[Outgoing],
    ) -> tuple[list[CommitStatus], list[str]]:
        q = self.broker.queue(dest)
        now = time.time()
        _expire(q.done, now - self.options.ledger_ttl, self.options.dedup_max - len(items))
        statuses: list[CommitStatus] = []
        outbox: list[str] = []
        for delivery, effects in items:
            if not self._owned(q, delivery.entry_id, consumer):
                already = delivery.msg_id in q.done
                statuses.append(CommitStatus.DUPLICATE if already else CommitStatus.LOST)
                continue
            self._ack(q, delivery.entry_id)
            if delivery.msg_id in q.done:
                statuses.append(CommitStatus.DUPLICATE)
                continue
            q.done[delivery.msg_id] = now
            for effect in effects:
                oid = self.broker.next_id()
                q.outbox[oid] = effect
                outbox.append(oid)
            statuses.append(CommitStatus.DONE)
        if eager:  # as on Redis: sent whatever the status; the inbox drops a repeat
            await self._send(eager)
        await anyio.lowlevel.checkpoint()
        return statuses, outbox

    async def _processed(self, dest: str, msg_ids: Sequence[str]) -> set[str]:
        q = self.broker.queue(dest)
        _expire(q.done, time.time() - self.options.ledger_ttl, self.options.dedup_max)
        await anyio.lowlevel.checkpoint()
        return {m for m in msg_ids if m in q.done}

    async def _forward(self, dest: str, send: Sequence[Outgoing], done: Sequence[str]) -> None:
        if send:
            await self._send(send)
        q = self.broker.queue(dest)
        for oid in done:
            q.outbox.pop(oid, None)

    async def _relay(self, dest: str, older_than: float) -> int:
        q = self.broker.queue(dest)
        cutoff = (time.time() - older_than) * 1000
        old = [(oid, e) for oid, e in q.outbox.items() if int(oid.split("-")[0]) <= cutoff]
        if old:
            await self._forward(dest, [e for _, e in old], [oid for oid, _ in old])
        return len(old)

    async def _retry(self, delivery: Delivery, consumer: str, *, due: float, error: str) -> bool:
        q = self.broker.queue(delivery.dest)
        if not self._owned(q, delivery.entry_id, consumer):
            return False
        self._ack(q, delivery.entry_id)
        entry = _Entry(
            delivery.msg_id,
            delivery.frame,
            delivery.headers,
            delivery.deliveries,
            (*delivery.history, error),
        )
        q.delayed.append((due, entry))
        await anyio.lowlevel.checkpoint()
        return True

    async def _dead_letter(
        self, delivery: Delivery, consumer: str | None, *, reason: str, error: str
    ) -> str | None:
        q = self.broker.queue(delivery.dest)
        if consumer is not None and not self._owned(q, delivery.entry_id, consumer):
            return None
        self._ack(q, delivery.entry_id)
        history = (
            (*delivery.history, error)
            if error and error not in delivery.history[-1:]
            else delivery.history
        )
        dead_id = self.broker.next_id()
        frame, cut = dead_payload(delivery.frame, self.options.dead_payload_max)
        q.dead[dead_id] = DeadLetter(
            dest=delivery.dest,
            entry_id=dead_id,
            msg_id=delivery.msg_id,
            frame=frame,
            size=len(delivery.frame),
            sha256=cut.get("sha256"),
            headers=delivery.headers,
            reason=reason,
            error=error,
            deliveries=delivery.deliveries,
            history=history,
            dead_at=time.time(),
        )
        trimmed = 0
        while len(q.dead) > self.options.dead_max:
            del q.dead[next(iter(q.dead))]
            trimmed += 1
        self._count_trimmed(delivery.dest, trimmed)
        await anyio.lowlevel.checkpoint()
        return dead_id

    async def _prune(self, dest: str, consumer: str, *, idle: float) -> int:
        q = self.broker.queue(dest)
        holding = {p.consumer for p in q.pending.values()}
        cutoff = time.monotonic() - idle
        gone = [
            name
            for name, seen in q.consumers.items()
            if (not consumer or name == consumer) and name not in holding and seen <= cutoff
        ]
        for name in gone:
            del q.consumers[name]
        await anyio.lowlevel.checkpoint()
        return len(gone)

    async def _renew(self, dest: str, consumer: str, entry_ids: Sequence[str]) -> list[bool]:
        q = self.broker.queue(dest)
        out = []
        for eid in entry_ids:
            owned = self._owned(q, eid, consumer)
            if owned:
                q.pending[eid].since = time.monotonic()
            out.append(owned)
        await anyio.lowlevel.checkpoint()
        return out

    # -- topics -----------------------------------------------------------------------

    async def _publish(
        self, topic: str, frame: bytes, headers: Mapping[str, str] | None = None
    ) -> str:
        check_name(topic, "topic")
        t = self.broker.topics.setdefault(topic, _Topic())
        event = Event(topic, self.broker.next_id(), frame, dict(headers or {}))
        t.events.append(event)
        while len(t.events) > self.options.topic_maxlen:
            t.events.popleft()
        self.broker.wake(t)
        await anyio.lowlevel.checkpoint()
        return event.event_id

    async def _follow(self, dests: Sequence[str]) -> AsyncIterator[Delivery]:
        queues = {dest: self.broker.queue(dest) for dest in dests}
        last = {dest: (q.recent[-1][0] if q.recent else "0-0") for dest, q in queues.items()}
        while True:
            seen = False
            for dest, q in queues.items():
                for entry_id, e in list(q.recent):
                    if _id_key(entry_id) > _id_key(last[dest]):
                        last[dest] = entry_id
                        seen = True
                        yield Delivery(dest, entry_id, e.msg_id, e.frame, e.headers, 0, e.history)
            if not seen:
                await anyio.sleep(0.05)  # an observer: polling its own memory is cheap

    async def _latest(self, topic: str) -> Event | None:
        await anyio.lowlevel.checkpoint()
        t = self.broker.topics.get(topic)
        return t.events[-1] if t and t.events else None

    async def _subscribe(self, topic: str, *, after: str = "$") -> AsyncIterator[Event]:
        check_name(topic, "topic")
        t = self.broker.topics.setdefault(topic, _Topic())
        last = (t.events[-1].event_id if t.events else "0-0") if after == "$" else after
        while True:
            newer = [e for e in t.events if _id_key(e.event_id) > _id_key(last)]
            if not newer:
                await t.arrived.wait()
                continue
            for event in newer:
                last = event.event_id
                yield event

    # -- presence ---------------------------------------------------------------------

    async def _announce(self, group: str, member: str, info: bytes, *, ttl: float) -> None:
        self.broker.presence.setdefault(group, {})[member] = (time.time() + ttl, info)
        await anyio.lowlevel.checkpoint()

    async def _withdraw(self, group: str, member: str) -> None:
        self.broker.presence.get(group, {}).pop(member, None)
        await anyio.lowlevel.checkpoint()

    async def _members(self, group: str) -> dict[str, bytes]:
        now = time.time()
        live = self.broker.presence.setdefault(group, {})
        for name in [m for m, (expires, _) in live.items() if expires <= now]:
            del live[name]
        await anyio.lowlevel.checkpoint()
        return {m: info for m, (_, info) in live.items()}

    async def _add_to_counters(
        self,
        name: str,
        amounts: Mapping[str, float],
        *,
        ttl: float | None = None,
        once: str | None = None,
    ) -> bool:
        await anyio.lowlevel.checkpoint()
        self.broker.held("counters", name)
        if once:
            seen = self.broker.counted.setdefault(name, set())
            if once in seen:
                return False
            seen.add(once)
        counters = self.broker.counters.setdefault(name, {})
        for field_name, amount in amounts.items():
            counters[field_name] = counters.get(field_name, 0.0) + amount
        self.broker.expire("counters", name, ttl)
        return True

    async def _counters(self, name: str) -> dict[str, float]:
        await anyio.lowlevel.checkpoint()
        self.broker.held("counters", name)
        return dict(self.broker.counters.get(name, {}))

    async def _mark(self, name: str, members: Sequence[str], *, ttl: float) -> None:
        await anyio.lowlevel.checkpoint()
        self.broker.held("marks", name)
        now = time.time()
        marks = self.broker.marks.setdefault(name, {})
        for member in [m for m, until in marks.items() if until <= now]:
            del marks[member]
        marks.update(dict.fromkeys(members, now + ttl))
        self.broker.expire("marks", name, ttl)

    async def _marked(self, name: str, members: Sequence[str]) -> set[str]:
        await anyio.lowlevel.checkpoint()
        now, marks = time.time(), self.broker.marks.get(name, {})
        return {m for m in members if marks.get(m, 0.0) > now}

    async def _append_record(self, name: str, index: int, item: bytes, *, ttl: float) -> bool:
        await anyio.lowlevel.checkpoint()
        self.broker.held("records", name)
        record = self.broker.records.setdefault(name, [])
        if len(record) == index:
            record.append(item)
            self.broker.expire("records", name, ttl)
        return len(record) > index

    async def _read_record(self, name: str) -> list[bytes]:
        await anyio.lowlevel.checkpoint()
        self.broker.held("records", name)
        return list(self.broker.records.get(name, []))

    async def _open_join(
        self, name: str, expect: int, then: bytes, parts: Mapping[str, bytes], *, ttl: float
    ) -> None:
        await anyio.lowlevel.checkpoint()
        self.broker.held("joins", name)
        join = self.broker.joins.setdefault(name, _Join())
        if join.expect is None:
            join.expect, join.then = expect, then
        for part, value in parts.items():
            join.parts.setdefault(part, value)
        self.broker.expire("joins", name, ttl)

    async def _arrive(self, name: str, part: str, value: bytes) -> bytes | None:
        await anyio.lowlevel.checkpoint()
        self.broker.held("joins", name)
        join = self.broker.joins.setdefault(name, _Join())
        join.parts.setdefault(part, value)
        if ("joins", name) not in self.broker.expiries:  # came after the join went
            self.broker.expire("joins", name, self.options.ledger_ttl)
        if join.expect is None or len(join.parts) < join.expect:
            return None
        return join.then

    async def _join_parts(self, name: str) -> dict[str, bytes]:
        await anyio.lowlevel.checkpoint()
        self.broker.held("joins", name)
        join = self.broker.joins.get(name)
        return dict(join.parts) if join else {}

    async def _lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        now = time.time()
        current = self.broker.leases.get(name)
        await anyio.lowlevel.checkpoint()
        if current is None or current[2] <= now:
            token = self.broker.lease_tokens.get(name, 0) + 1
            self.broker.lease_tokens[name] = token
            self.broker.leases[name] = (holder, token, now + ttl)
            return token
        if current[0] == holder:
            self.broker.leases[name] = (holder, current[1], now + ttl)
            return current[1]
        return None

    async def _release(self, name: str, holder: str) -> None:
        current = self.broker.leases.get(name)
        if current is not None and current[0] == holder:
            del self.broker.leases[name]
        await anyio.lowlevel.checkpoint()

    # -- administration -------------------------------------------------------------------

    async def _dead_letters(self, dest: str, *, count: int = 100) -> list[DeadLetter]:
        return list(self.broker.queue(dest).dead.values())[:count]

    async def _replay(self, dest: str, entry_ids: Sequence[str] | None = None) -> int:
        q = self.broker.queue(dest)
        chosen = list(dict.fromkeys(entry_ids)) if entry_ids else list(q.dead)[:1000]
        moved = 0
        for dead_id in chosen:
            letter = q.dead.get(dead_id)
            if letter is not None and not letter.cut:  # a cut frame cannot run: it stays
                del q.dead[dead_id]
                self._append(dest, _Entry(letter.msg_id, letter.frame, letter.headers))
                moved += 1
        return moved

    async def _purge(self, dest: str, entry_ids: Sequence[str] | None = None) -> int:
        q = self.broker.queue(dest)
        chosen = list(entry_ids) if entry_ids else list(q.dead)
        return sum(q.dead.pop(i, None) is not None for i in chosen)

    async def _stats(self, dest: str) -> QueueStats:
        q = self.broker.queues.get(dest)
        if q is None:  # never received work: nothing to count, nothing to create
            return QueueStats(dest=dest, ready=0, pending=0, delayed=0, dead=0, lag_s=0.0,
                              consumers=0)  # fmt: skip
        oldest = next(iter(q.entries), None)
        lag = max(time.time() - int(oldest.split("-")[0]) / 1000, 0.0) if oldest else 0.0
        return QueueStats(
            dest=dest,
            ready=len(q.entries) - len(q.pending),
            pending=len(q.pending),
            delayed=len(q.delayed),
            dead=len(q.dead),
            lag_s=round(lag, 3),
            consumers=len(q.consumers),
        )

    def _workflow_store(self) -> WorkflowStore:
        from acp.runtime.workflows.store import MemoryWorkflowStore

        if self.broker.workflows is None:
            self.broker.workflows = MemoryWorkflowStore()
        return self.broker.workflows

    async def _destinations(self) -> list[str]:
        return sorted(self.broker.queues)

    async def _entries(self, dest: str, *, count: int) -> list[Delivery]:
        await anyio.lowlevel.checkpoint()
        q = self.broker.queue(dest)
        return [
            Delivery(dest, entry_id, e.msg_id, e.frame, e.headers, e.attempts, e.history)
            for entry_id, e in list(q.entries.items())[:count]
        ]

    async def _server_time(self) -> float:
        await anyio.lowlevel.checkpoint()
        return time.time()  # the broker lives in this process: its clock is the server's

    async def _lookup_result(self, msg_id: str) -> ResultRecord | None:
        await anyio.lowlevel.checkpoint()
        record = self.broker.results.get(msg_id)
        if record is not None and record.updated_at < time.time() - self.options.result_ttl:
            return None
        return record


def _expire(stamps: dict[str, float], before: float, most: int) -> None:
    """Drop ids stamped before ``before``, and the oldest past ``most`` (dicts keep
    insertion order: oldest first)."""
    while stamps:
        first = next(iter(stamps))
        if stamps[first] >= before and len(stamps) <= max(most, 0):
            return
        del stamps[first]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
