"""Helpers for testing agents and code built on the runtime, shipped with it (as
structlog ships ``structlog.testing``).

::

    from acp.testing import TestContext

    ctx = TestContext(Envelope.for_body({"cmd": "PING"}, sender="t", recipient="me"))
    reply = await agent.handle(ctx.envelope, ctx)
    assert ctx.published == [] and ctx.log.named("pong")

:class:`TestContext` runs a handler with no bus: what it sends, publishes, records
and reports is kept in lists and dicts to assert on. :func:`bus_clients` makes bus
clients that all meet, on one in-memory broker or one Redis server, for code that
needs a real bus.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from acp.protocol.envelope import Envelope

__all__ = ["BusFactory", "CapturedLog", "TestContext", "bus_clients"]

#: makes bus clients that all meet: ``factory(options, **kwargs)``
BusFactory = Callable[..., Any]


class CapturedLog:
    """A structlog-like logger that keeps ``(level, event, fields)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level.startswith("_"):
            raise AttributeError(level)

        def log(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return log

    def bind(self, **fields: Any) -> CapturedLog:
        return self

    def named(self, event: str) -> list[dict[str, Any]]:
        """The fields of every event of that name."""
        return [fields for _, e, fields in self.events if e == event]


class TestContext:
    """The runtime's side of an agent handler (``acp.agents.Context``), in memory.

    ``records``, ``kept`` and ``log`` may be shared by several contexts, as the steps
    of one conversation share the server's; ``replies`` answers ``send(..., wait=True)``
    and ``delegate`` by recipient."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        env: Envelope,
        *,
        records: dict[str, list[dict[str, Any]]] | None = None,
        kept: dict[str, dict[str, bytes]] | None = None,
        deadline: float | None = None,
        cancelled: bool = False,
        clock: Callable[[], float] = time.time,
        replies: Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]] | None = None,
        platform: dict[str, Any] | None = None,
        log: CapturedLog | None = None,
    ) -> None:
        self._env = env
        self._deadline = deadline if deadline is not None else env.deadline
        self._cancelled = cancelled
        self._clock = clock
        self._replies = dict(replies or {})
        self._platform = platform or {"workers": [], "queues": {}, "coordinators": [],
                                      "platform": None}  # fmt: skip
        #: what the handler logged (shared when given, as by the steps of one request)
        self.log = log if log is not None else CapturedLog()
        self.records = {} if records is None else records
        self.kept = {} if kept is None else kept
        #: ``(recipient, body)`` of everything sent
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.published: list[dict[str, Any]] = []
        self.progress_reports: list[tuple[float, str]] = []
        self.tool_calls: list[dict[str, Any]] = []

    @property
    def envelope(self) -> Envelope:
        return self._env

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def now(self) -> float:
        return self._clock()

    async def send(
        self,
        recipient: str,
        body: Mapping[str, Any],
        *,
        wait: bool = False,
        timeout: float = 60.0,  # noqa: ASYNC109 - the Context protocol's signature
        tier: str | None = None,
    ) -> dict[str, Any] | None:
        self.sent.append((recipient, dict(body)))
        return self._answer(recipient, body) if wait else None

    def _answer(self, recipient: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if recipient not in self._replies:
            raise AssertionError(f"no reply given for {recipient!r} (TestContext(replies=...))")
        return self._replies[recipient](body)

    async def publish(self, body: Mapping[str, Any]) -> None:
        self.published.append(dict(body))

    async def progress(self, fraction: float, note: str = "") -> None:
        self.progress_reports.append((fraction, note))

    async def platform(self) -> dict[str, Any]:
        return self._platform

    async def turns(self, conversation: str) -> list[dict[str, Any]]:
        # as the server keeps them: JSON, so a turn read back is a copy of plain values
        return [json.loads(json.dumps(t)) for t in self.records.get(conversation, [])]

    async def add_turn(self, conversation: str, index: int, turn: Mapping[str, Any]) -> None:
        record = self.records.setdefault(conversation, [])
        if len(record) == index:
            record.append(json.loads(json.dumps(turn)))
        elif len(record) < index:
            raise AssertionError(f"conversation {conversation}: turn {index} would leave a gap")

    async def answers(self, join: str) -> dict[str, bytes]:
        return dict(self.kept.get(join, {}))

    async def keep(self, join: str, part: str, value: bytes) -> None:
        self.kept.setdefault(join, {}).setdefault(part, value)

    async def delegate(
        self, calls: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        for recipient, body in calls:
            self.sent.append((recipient, dict(body)))
        return [self._answer(recipient, body) for recipient, body in calls]

    async def tool_used(self, event: Mapping[str, Any]) -> None:
        self.tool_calls.append(dict(event))


def bus_clients(where: str, options: Any = None) -> BusFactory:
    """Bus clients that all meet: ``where`` is ``"memory"`` (one broker, made here)
    or a Redis URL. ``bus_clients(url)(options, client_id=...)`` is a new client."""
    from acp.runtime.bus import BusOptions, MemoryBroker, MemoryBus, RedisBus

    if where == "memory":
        broker = MemoryBroker()

        def memory(opts: BusOptions | None = options, **kwargs: Any) -> MemoryBus:
            return MemoryBus(broker, opts, **kwargs)

        return memory

    def on_redis(opts: BusOptions | None = options, **kwargs: Any) -> RedisBus:
        return RedisBus.from_url(where, opts, **kwargs)

    return on_redis
