"""Run a message handler over one destination's queue, losing nothing.

The processor is where frames become envelopes: it decodes each delivery,
sends what cannot be trusted (undecodable, oversized, tampered, addressed to
someone else, past its deadline, delivered too often) to the dead letters with a
typed reason, runs the handler on the rest with bounded concurrency, and commits
results in groups: a message, its effects (replies, handoffs) and its
acknowledgement land together or not at all.

A sender is never left waiting on a dead letter: when the message names a
``reply_to``, it gets an error reply at once with the reason, the agent, the
attempts and the dead letter's id to replay it. Tracked messages
(``acp.runtime.results``) also get their reply, or that error, recorded.

Long handlers keep their lease: the processor renews in-flight entries well
inside ``min_idle``; an entry another consumer took over is not committed.
``stop()`` stops reading and lets in-flight work finish within a grace
period; what does not finish stays pending and another consumer reclaims it.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from acp.errors import DecodeError, IntegrityError, Rejected, RetryableError
from acp.logs import Logger, get_logger
from acp.protocol.body import MessageKind
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.protocol.headers import H_ROOT
from acp.runtime.bus.base import (
    H_CORRELATION,
    Bus,
    CommitStatus,
    Delivery,
    Outgoing,
    derived_id,
    spent_error,
)
from acp.runtime.keys import INBOX_PREFIX, RESULTS
from acp.runtime.results import ResultState, is_tracked, result_record

__all__ = [
    "DeadLettered",
    "EnvelopeHandler",
    "Processor",
    "ProcessorStats",
    "current_delivery",
    "to_outgoing",
]

log = get_logger("acp.processor")
_REPLY_KINDS = frozenset({MessageKind.REPLY, MessageKind.ERROR})

#: the delivery a handler is running for, when it needs more than the envelope (the
#: entry's id says when the server received the message); set per message
current_delivery: ContextVar[Delivery] = ContextVar("current_delivery")


def _root(env: Envelope) -> str:
    """The message a chain of continuations started from: what its sender tracks."""
    return env.headers.get(H_ROOT) or env.id if env.headers else env.id


def _reply_ids(
    env: Envelope, results: Sequence[Envelope], route: Callable[[Envelope], str]
) -> Sequence[Envelope]:
    """Replies to a caller's inbox leave with the commit, before the ledger has said
    whether this run counts: each gets an id derived from the message it answers (and
    its place), so a second run's reply is dropped by the inbox's dedup."""
    if not any(r.recipient.startswith(INBOX_PREFIX) for r in results):
        return results
    return [
        r.evolve(id=derived_id(env.id, f"reply.{n}"), hash=None)
        if r is not env and route(r).startswith(INBOX_PREFIX)
        else r
        for n, r in enumerate(results)
    ]


#: takes a message, returns the messages it causes (replies, handoffs, statuses)
EnvelopeHandler = Callable[[Envelope], Awaitable[Sequence[Envelope]]]


def to_outgoing(env: Envelope, frame: bytes, dest: str | None = None) -> Outgoing:
    """The bus item for ``env``: to its recipient unless ``dest`` says otherwise."""
    headers = {H_CORRELATION: env.correlation_id} if env.correlation_id else {}
    return Outgoing(dest or env.recipient, env.id, frame, headers)


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A message this processor moved to the dead letters (what ``on_dead`` hears)."""

    delivery: Delivery
    #: None when the frame could not be decoded
    env: Envelope | None
    reason: str
    error: str
    #: the dead letter's entry id (what ``acp dlq replay`` takes)
    entry_id: str
    #: whether the handler ran (False: refused at admission, before any work)
    ran: bool = False


@dataclass
class ProcessorStats:
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    lost: int = 0
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)


class Processor:
    """Drive ``handler`` on ``dest``; ``await run()`` until ``stop()`` or cancellation."""

    def __init__(
        self,
        bus: Bus,
        dest: str,
        handler: EnvelopeHandler,
        *,
        codec: WireCodec | None = None,
        consumer: str | None = None,
        concurrency: int = 16,
        batch: int = 100,
        block: float = 1.0,
        grace: float = 30.0,
        accept: Callable[[Envelope], bool] | None = None,
        route: Callable[[Envelope], str] | None = None,
        agent_of: Callable[[Envelope], str] | None = None,
        on_start: Callable[[Envelope], Awaitable[None]] | None = None,
        on_dead: Callable[[DeadLettered], Awaitable[None]] | None = None,
        check_ledger: bool = False,
    ) -> None:
        """``agent_of`` names the agent a message is for in error replies (default: its
        recipient); ``on_start`` runs before the handler, ``on_dead`` after a message
        went to the dead letters (and its sender was told). ``check_ledger`` asks the
        ledger, one round trip per batch read, whether a message was committed
        already (a replay): for handlers whose work costs (a paid model call), which
        then run once per message id; others may run a replay again, and its commit
        drops the effects, as after a crash."""
        self.bus = bus
        self.dest = dest
        self.handler = handler
        self.codec = codec or WireCodec()
        #: stable across restarts of the same worker, so it drains its own leftovers
        self.consumer = consumer or f"{socket.gethostname()}-{dest}"
        self.concurrency = max(1, concurrency)
        self.batch = batch
        self.block = block
        self.grace = grace
        self.accept = accept or (lambda env: env.recipient == dest)
        #: where an effect goes (default: its recipient); a worker routes commands
        #: through the coordinator when one runs
        self.route = route or (lambda env: env.recipient)
        self.agent_of = agent_of or (lambda env: env.recipient)
        self.on_start = on_start
        self.on_dead = on_dead
        self.check_ledger = check_ledger
        #: a stopped processor with nothing in flight leaves the consumer group
        self.leave_on_stop = True
        self.stats = ProcessorStats()
        self._in_flight: dict[str, Delivery] = {}
        #: message id -> the entry running it here, and later copies set aside meanwhile
        self._running: dict[str, tuple[str, list[Delivery]]] = {}
        #: entries another consumer took over: their results are discarded, not committed
        self._lost: set[str] = set()
        self._done: list[tuple[Delivery, list[Outgoing]]] = []
        self._flushing = False
        #: the batch whose commit is on the wire
        self._committing: list[tuple[Delivery, list[Outgoing]]] = []
        self._room = anyio.Event()
        self._queue: deque[Delivery] = deque()
        self._wake = anyio.Event()
        self._idle = 0
        self._workers = 0
        self._starting = 0
        self._handlers: anyio.abc.TaskGroup
        self._stopping = anyio.Event()
        self._paused_until = 0.0
        self._log = log.bind(dest=dest, consumer=self.consumer)

    def stop(self) -> None:
        """Stop reading; in-flight work finishes within ``grace`` seconds."""
        self._stopping.set()

    def pause(self, seconds: float) -> None:
        """Stop taking new work for ``seconds`` (a spend limit, an outage upstream);
        what is queued waits, nothing is lost."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._log.warning("paused", seconds=seconds)

    @property
    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    async def _wait_for_pause(self) -> None:
        with anyio.move_on_after(min(self._paused_until - time.monotonic(), 1.0)):
            await self._stopping.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._renew_leases)
            async with anyio.create_task_group() as handlers:
                self._handlers = handlers
                task_status.started()
                self._log.info("processor_started", concurrency=self.concurrency)
                await self._read_loop()
                with anyio.move_on_after(self.grace) as grace:
                    while self._in_flight:
                        await self._room.wait()
                        self._room = anyio.Event()
                if grace.cancelled_caught:
                    self._log.warning("grace_expired", unfinished=len(self._in_flight))
                handlers.cancel_scope.cancel()
            await self._flush()
            outer.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            if not self._in_flight and self.leave_on_stop:
                await self.bus.leave(self.dest, self.consumer)  # nothing left to drain
        self._log.info("processor_stopped", handled=self.stats.handled)

    # -- reading and handling ----------------------------------------------------------
    #
    # Workers drain a shared deque back to back. Before starting a handler, a
    # worker makes sure a spare worker exists while items are still queued, so a
    # handler that blocks (an LLM call) never holds up the queue, while fast
    # handlers run a whole batch without a task switch per message.

    async def _read_loop(self) -> None:
        while not self._stopping.is_set():
            if self.paused:
                await self._wait_for_pause()
                continue
            free = self.concurrency - len(self._in_flight)
            if free <= 0:
                # Entries awaiting their commit count too: memory stays bounded.
                with anyio.move_on_after(1.0):
                    await self._room.wait()
                self._room = anyio.Event()
                continue
            batch = await self.bus.consume(
                self.dest,
                self.consumer,
                count=min(free, self.batch),
                block=self.block,
                keep_spent=True,  # dead-lettered here, where the sender can be told
            )
            if batch:
                self._in_flight.update({d.entry_id: d for d in batch})
                if self.check_ledger:
                    batch = await self._skip_processed(batch)
                self._queue.extend(batch)
                self._ensure_worker()
                # Let the worker start before the next read goes out: a lone request
                # is handled one loop turn sooner, a batch is barely delayed (the
                # worker yields at its first commit).
                await anyio.lowlevel.checkpoint()
            self.stats.in_flight = len(self._in_flight)

    async def _skip_processed(self, batch: list[Delivery]) -> list[Delivery]:
        """Leave out messages the ledger says were committed already (a replay, or a
        copy written past the sender's dedup): they are acknowledged, never run, so
        a paid call is not made twice. One round trip per batch read."""
        done = await self.bus.processed(self.dest, [d.msg_id for d in batch if not d.problem])
        if not done:
            return batch
        fresh = []
        for delivery in batch:
            if delivery.msg_id in done and not delivery.problem:
                self._log.info("already_processed", msg_id=delivery.msg_id)
                self._done.append((delivery, []))  # acknowledged as a duplicate
            else:
                fresh.append(delivery)
        await self._flush()
        return fresh

    def _ensure_worker(self) -> None:
        """Make sure one worker is free to take the next queued item."""
        if self._idle:
            self._wake.set()
        elif not self._starting and self._workers < self.concurrency:
            self._workers += 1
            self._starting += 1
            self._handlers.start_soon(self._serve)

    async def _serve(self) -> None:
        self._starting -= 1
        queue = self._queue
        try:
            while True:
                if not queue:
                    self._idle += 1
                    try:
                        await self._wake.wait()
                    finally:
                        self._idle -= 1
                    self._wake = anyio.Event()
                    continue
                if self._paused_until and self.paused:
                    # a read already on the wire when the pause began: hold its
                    # entries (their leases are renewed) until the pause ends
                    await self._wait_for_pause()
                    continue
                delivery = queue.popleft()
                if queue and not (self._idle and self._wake.is_set()):
                    self._ensure_worker()
                await self._handle(delivery)
        finally:
            self._workers -= 1

    def _release(self, entry_id: str) -> None:
        delivery = self._in_flight.pop(entry_id, None)
        self._lost.discard(entry_id)
        self._room.set()
        if delivery is not None and self._running:
            self._ended(delivery, committed=False)

    def _ended(self, delivery: Delivery, *, committed: bool) -> None:
        """A message stopped running here: copies of it set aside meanwhile are
        acknowledged as duplicates once it is committed, else run in their turn."""
        running = self._running.get(delivery.msg_id)
        if running is None or running[0] != delivery.entry_id:
            return
        del self._running[delivery.msg_id]
        waiting = running[1]
        if not waiting:
            return
        if committed:
            self._done.extend((delivery, []) for delivery in waiting)
        else:
            self._queue.extend(waiting)
            self._ensure_worker()

    async def _handle(self, delivery: Delivery) -> None:
        """Admit, handle and queue for commit one delivery: one coroutine per message,
        the handler's own aside, because a batch runs them back to back."""
        outcome: list[Outgoing] | None = None
        if (running := self._running.get(delivery.msg_id)) is not None:
            running[1].append(delivery)  # the same message runs here now: it waits for it
            return
        try:
            env = self._admit(delivery)
            if type(env) is tuple:
                await self._reject(delivery, *env)
            else:
                assert isinstance(env, Envelope)
                self._running[delivery.msg_id] = (delivery.entry_id, [])
                try:
                    if self.on_start is not None:
                        await self.on_start(env)
                    current_delivery.set(delivery)
                    results = await self.handler(env)
                    # a result that cannot be encoded fails its message, not the worker; the
                    # message itself passed on unchanged (a forward) keeps its frame
                    encode, route, frame = self.codec.encode, self.route, delivery.frame
                    effects = (
                        [
                            to_outgoing(r, frame if r is env else encode(r), route(r))
                            for r in _reply_ids(env, results, route)
                        ]
                        if results
                        else []
                    )
                    if effects and env.headers and is_tracked(env):
                        effects = self._record_replies(env, results, effects)
                except Rejected as exc:
                    await self._reject(delivery, exc.reason, str(exc), env, ran=True)
                except RetryableError as exc:
                    if delivery.deliveries >= self.bus.options.max_deliveries:
                        await self._reject(delivery, "max_deliveries", str(exc), env, ran=True)
                    else:
                        self._about(env).warning("handler_retry", error=str(exc))
                        await self.bus.retry(
                            delivery, self.consumer, error=str(exc), delay=exc.retry_after
                        )
                        self.stats.retried += 1
                except Exception as exc:
                    self._about(env).exception("handler_failed")
                    error = f"{type(exc).__name__}: {exc}"
                    await self._reject(delivery, "handler_error", error, env, ran=True)
                else:
                    outcome = effects
        finally:
            lost = delivery.entry_id in self._lost
            if outcome is None or lost:
                # retried, dead-lettered, lease lost or shut down: nothing to commit
                self._release(delivery.entry_id)
            else:
                self._done.append((delivery, outcome))
        if outcome is not None and not lost and not self._flushing:
            await self._flush()

    def _admit(self, delivery: Delivery) -> Envelope | tuple[str, str, Envelope | None]:
        """The envelope to hand to the handler, or why the delivery is a dead letter
        (with the envelope when there is one, so its sender can be told)."""
        if delivery.problem:
            return "bad_entry", delivery.problem, None
        try:
            env = self.codec.decode(delivery.frame)
        except IntegrityError as exc:  # readable, but not from anyone holding our keys
            return "integrity", str(exc), None
        except DecodeError as exc:
            return f"decode:{exc.reason}", str(exc), None
        if env.id != delivery.msg_id:
            # the dedup and the ledger key on the entry's id: it must be the (signed) one
            return (
                "id_mismatch",
                f"entry id field {delivery.msg_id!r} is not the envelope's id {env.id!r}",
                None,
            )
        if delivery.deliveries > self.bus.options.max_deliveries:
            return "max_deliveries", spent_error(delivery), env
        if not self.accept(env):
            return (
                "unknown_recipient",
                f"addressed to {env.recipient!r}, read from {self.dest!r}",
                env,
            )
        if env.deadline is not None and (now := self.bus.now()) >= env.deadline:
            return "deadline", f"deadline passed {now - env.deadline:.1f}s ago", env
        if delivery.deliveries != env.attempt:
            env = env.evolve(attempt=delivery.deliveries)
        return env

    def _record_replies(
        self, env: Envelope, results: Sequence[Envelope], effects: list[Outgoing]
    ) -> list[Outgoing]:
        """A tracked message's reply is also its result record (committed with it)."""
        out: list[Outgoing] = []
        answers_to = env.correlation_id or env.id  # a continuation answers its chain's root
        for result, effect in zip(results, effects, strict=True):
            is_reply = result.correlation_id == answers_to and result.kind in _REPLY_KINDS
            if effect.dest != RESULTS:
                out.append(effect)
            if is_reply:
                out.append(
                    result_record(
                        _root(env), ResultState.DONE, agent=self.agent_of(env),
                        command=env.command, frame=effect.frame,
                    )
                )  # fmt: skip
        return out

    def _about(self, env: Envelope) -> Logger:
        """The logger for one message (bound only when there is something to say)."""
        return self._log.bind(msg_id=env.id, command=env.command, attempt=env.attempt)

    async def _reject(
        self,
        delivery: Delivery,
        reason: str,
        error: str,
        env: Envelope | None = None,
        *,
        ran: bool = False,
    ) -> None:
        self._log.warning("dead_letter", msg_id=delivery.msg_id, reason=reason, error=error)
        entry_id = await self.bus.dead_letter(delivery, self.consumer, reason=reason, error=error)
        if entry_id is None:
            return  # another consumer took the entry over: it is theirs to settle
        self.stats.dead_lettered += 1
        letter = DeadLettered(delivery, env, reason, error, entry_id, ran)
        if env is not None and (env.reply_to or (env.headers and is_tracked(env))):
            await self.bus.send_many(self._dead_notices(letter, env))
        if self.on_dead is not None:
            await self.on_dead(letter)

    def _dead_notices(self, letter: DeadLettered, env: Envelope) -> list[Outgoing]:
        """The error reply a dead letter's sender gets, and its result record."""
        dest, entry_id = letter.delivery.dest, letter.entry_id
        agent = self.agent_of(env)
        body = {
            "error": "dead_letter",
            "reason": letter.reason,
            "agent": agent,
            "command": env.command,
            "attempts": letter.delivery.deliveries,
            "detail": letter.error,
            "dead_letter": {"dest": dest, "entry_id": entry_id},
            "replay": f"acp dlq replay {dest} {entry_id}",
        }
        # the same id however often this runs: a repeat is dropped by the bus
        reply = env.reply(body, kind=MessageKind.ERROR, id=derived_id(env.id, "dead"))
        frame = self.codec.encode(reply)
        out = [to_outgoing(reply, frame)] if env.reply_to else []
        if env.headers and is_tracked(env):
            out.append(
                result_record(
                    _root(env), ResultState.DEAD, agent=agent, command=env.command,
                    detail=f"{letter.reason}: {letter.error}", frame=frame,
                    extra={"dlq_dest": dest, "dlq_entry": entry_id, "reason": letter.reason,
                           "attempts": str(letter.delivery.deliveries)},
                )
            )  # fmt: skip
        return out

    # -- committing --------------------------------------------------------------------

    async def _flush(self) -> None:
        """Group commit: the first finisher commits everything done so far; what
        finishes meanwhile joins the next round, which it also runs."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._done:
                items, self._done = self._done, []
                # on the wire: renewing these now would race their acknowledgement
                self._committing = items
                try:
                    with anyio.CancelScope(shield=True):
                        statuses = await self.bus.commit(self.consumer, items)
                finally:
                    self._committing = []
                in_flight = self._in_flight
                for delivery, _ in items:
                    in_flight.pop(delivery.entry_id, None)
                running = self._running
                if running:
                    for (delivery, _), status in zip(items, statuses, strict=True):
                        if delivery.msg_id in running:
                            self._ended(delivery, committed=status is not CommitStatus.LOST)
                if self._lost:  # taken over while it waited for this commit (fenced)
                    self._lost.difference_update(delivery.entry_id for delivery, _ in items)
                done = statuses.count(CommitStatus.DONE)
                self.stats.handled += done
                if done < len(statuses):
                    for (delivery, _), status in zip(items, statuses, strict=True):
                        if status is CommitStatus.DUPLICATE:
                            self.stats.duplicates += 1
                        elif status is CommitStatus.LOST:
                            self.stats.lost += 1
                            self._log.warning("commit_fenced", msg_id=delivery.msg_id)
                self._room.set()
        finally:
            self._flushing = False

    # -- leases ------------------------------------------------------------------------

    def _committing_ids(self) -> set[str]:
        return {delivery.entry_id for delivery, _ in self._committing}

    async def _renew_leases(self) -> None:
        interval = max(self.bus.options.min_idle / 3, 0.05)
        while True:
            await anyio.sleep(interval)
            skip = self._lost | self._committing_ids()
            held = [d for d in self._in_flight.values() if d.entry_id not in skip]
            if not held:
                continue
            owned = await self.bus.renew(self.consumer, held)
            committing = self._committing_ids()
            for delivery, ok in zip(held, owned, strict=True):
                # a commit may have started or finished while the renewal was on the wire
                entry_id = delivery.entry_id
                current = self._in_flight.get(entry_id) is delivery and entry_id not in committing
                if not ok and current:
                    self._lost.add(entry_id)
                    self.stats.lost += 1
                    self._log.warning("lease_lost", msg_id=delivery.msg_id)
