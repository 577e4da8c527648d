"""Run a message handler over one destination's queue, losing nothing.

The processor is where frames become envelopes: it decodes each delivery,
sends what cannot be trusted (undecodable, oversized, tampered, addressed to
someone else, past its deadline) to the dead letters with a typed reason,
runs the handler on the rest with bounded concurrency, and commits results
in groups: a message, its effects (replies, handoffs) and its acknowledgement
land together or not at all.

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
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskStatus

from acp.errors import DecodeError, Rejected, RetryableError
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.runtime.bus.base import H_CORRELATION, Bus, CommitStatus, Delivery, Outgoing

__all__ = ["Handler", "Processor", "ProcessorStats", "to_outgoing"]

log = structlog.get_logger("acp.processor")

#: takes a message, returns the messages it causes (replies, handoffs, statuses)
Handler = Callable[[Envelope], Awaitable[Sequence[Envelope]]]


def to_outgoing(env: Envelope, frame: bytes, dest: str | None = None) -> Outgoing:
    """The bus item for ``env``: to its recipient unless ``dest`` says otherwise."""
    headers = {H_CORRELATION: env.correlation_id} if env.correlation_id else {}
    return Outgoing(dest or env.recipient, env.id, frame, headers)


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
        handler: Handler,
        *,
        codec: WireCodec | None = None,
        consumer: str | None = None,
        concurrency: int = 16,
        batch: int = 100,
        block: float = 1.0,
        grace: float = 30.0,
        accept: Callable[[Envelope], bool] | None = None,
        route: Callable[[Envelope], str] | None = None,
    ) -> None:
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
        self.stats = ProcessorStats()
        self._in_flight: dict[str, Delivery] = {}
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
                self.dest, self.consumer, count=min(free, self.batch), block=self.block
            )
            if batch:
                self._in_flight.update({d.entry_id: d for d in batch})
                self._queue.extend(batch)
                self._ensure_worker()
                # Let the worker start before the next read goes out: a lone request
                # is handled one loop turn sooner, a batch is barely delayed (the
                # worker yields at its first commit).
                await anyio.lowlevel.checkpoint()
            self.stats.in_flight = len(self._in_flight)

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
        self._in_flight.pop(entry_id, None)
        self._lost.discard(entry_id)
        self._room.set()

    async def _handle(self, delivery: Delivery) -> None:
        """Admit, handle and queue for commit one delivery: one coroutine per message,
        the handler's own aside, because a batch runs them back to back."""
        outcome: list[Outgoing] | None = None
        try:
            env = self._admit(delivery)
            if type(env) is tuple:
                await self._reject(delivery, *env)
            else:
                assert isinstance(env, Envelope)
                try:
                    results = await self.handler(env)
                    # a result that cannot be encoded fails its message, not the worker
                    encode, route = self.codec.encode, self.route
                    effects = (
                        [to_outgoing(r, encode(r), route(r)) for r in results] if results else []
                    )
                except Rejected as exc:
                    await self._reject(delivery, exc.reason, str(exc))
                except RetryableError as exc:
                    self._about(env).warning("handler_retry", error=str(exc))
                    await self.bus.retry(
                        delivery, self.consumer, error=str(exc), delay=exc.retry_after
                    )
                    self.stats.retried += 1
                except Exception as exc:
                    self._about(env).exception("handler_failed")
                    await self._reject(delivery, "handler_error", f"{type(exc).__name__}: {exc}")
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

    def _admit(self, delivery: Delivery) -> Envelope | tuple[str, str]:
        """The envelope to hand to the handler, or why the delivery is a dead letter."""
        try:
            env = self.codec.decode(delivery.frame)
        except DecodeError as exc:
            return f"decode:{exc.reason}", str(exc)
        if not self.accept(env):
            return "unknown_recipient", f"addressed to {env.recipient!r}, read from {self.dest!r}"
        if env.deadline is not None and env.expired():
            return "deadline", f"deadline passed {time.time() - env.deadline:.1f}s ago"
        if delivery.deliveries != env.attempt:
            env = env.evolve(attempt=delivery.deliveries)
        return env

    def _about(self, env: Envelope) -> structlog.stdlib.BoundLogger:
        """The logger for one message (bound only when there is something to say)."""
        bound: structlog.stdlib.BoundLogger = self._log.bind(
            msg_id=env.id, command=env.command, attempt=env.attempt
        )
        return bound

    async def _reject(self, delivery: Delivery, reason: str, error: str) -> None:
        self._log.warning("dead_letter", msg_id=delivery.msg_id, reason=reason, error=error)
        await self.bus.dead_letter(delivery, self.consumer, reason=reason, error=error)
        self.stats.dead_lettered += 1

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
