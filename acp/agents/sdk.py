"""Write an agent in plain Python: a name, a tier, and typed handlers per command.

::

    agent = Agent("pipeline-doctor", tier="haiku", complexity="low")

    @agent.command(PipelineStatusCommand)
    async def diagnose(cmd: PipelineStatusCommand, ctx: Context) -> dict:
        ctx.log.info("checking", component=cmd.component_id)
        return {"component_id": cmd.component_id, "healthy": cmd.data_flow.quality_score > 0.9}

A handler gets the typed command (or the raw body for commands without a
model) and a :class:`Context`, and returns the reply body (a dict or a
pydantic model), or ``None`` for no reply. Agents never see the bus: the
context is implemented by the runtime that drives them.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

from pydantic import BaseModel

from acp.agents.ratelimits import RateLimitCallback
from acp.errors import UnknownCommand
from acp.protocol.body import MessageKind
from acp.protocol.commands import CommandModel, CommandRegistry
from acp.protocol.envelope import Envelope

__all__ = ["Agent", "AgentBase", "Context", "Handler", "Reply"]

#: what a handler may return: a reply body, a model to dump, or nothing
Reply = Mapping[str, Any] | BaseModel | None
Handler = Callable[[Any, "Context"], Awaitable[Reply]]
H = TypeVar("H", bound=Handler)


@runtime_checkable
class Context(Protocol):
    """What a handler can do besides returning its reply; the runtime implements it."""

    @property
    def envelope(self) -> Envelope:
        """The message being handled (ids, sender, trace context, attempt)."""

    @property
    def log(self) -> Any:
        """A structlog logger bound to message id, agent and trace id."""

    @property
    def deadline(self) -> float | None:
        """Epoch seconds by which the sender needs the answer, if it said (on the
        runtime's shared clock: compare it with :meth:`now`)."""

    def now(self) -> float:
        """Epoch seconds on the clock every process of the runtime shares (the bus
        server's), whatever this host's clock says."""

    @property
    def cancelled(self) -> bool:
        """True once a CANCEL for this message arrived; long handlers should stop."""

    async def send(
        self,
        recipient: str,
        body: Mapping[str, Any],
        *,
        wait: bool = False,
        timeout: float = 60.0,  # noqa: ASYNC109 - a Protocol; implementations use anyio scopes
        tier: str | None = None,
    ) -> dict[str, Any] | None:
        """Hand work to another agent. Without ``wait`` it is sent with this
        message's commit (all or nothing); with ``wait`` it is sent now and the
        reply body is returned (raises ``RequestTimeout``)."""

    async def publish(self, body: Mapping[str, Any]) -> None:
        """Publish a status update on the agent's status topic."""

    async def turns(self, conversation: str) -> list[dict[str, Any]]:
        """The recorded turns of an agent loop's conversation, oldest first."""

    async def add_turn(self, conversation: str, index: int, turn: Mapping[str, Any]) -> None:
        """Record turn ``index`` (once: a re-run recording it again changes nothing)."""

    async def answers(self, join: str) -> dict[str, bytes]:
        """The answers that met at rendezvous ``join``, by part (a tool call's id)."""

    async def keep(self, join: str, part: str, value: bytes) -> None:
        """Record ``value`` as ``part`` of ``join`` (the first value kept wins)."""

    async def delegate(
        self, calls: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Ask other agents, durably: ``(agent, command body)`` pairs, sent at once as
        ordinary commands; their reply bodies, in order (an error reply's body has
        ``error``). The handler does not wait holding a slot: it is suspended, and
        run again from the start once every answer is in; this call then returns
        them. So a handler must reach its ``delegate`` calls the same way each run
        (what it did before them runs again: keep that idempotent)."""

    async def tool_used(self, event: Mapping[str, Any]) -> None:
        """A tool call ended (agent, tool, call id, duration, outcome): an event for
        ``acp tail``, metrics and spans. Never its arguments or output."""

    async def progress(self, fraction: float, note: str = "") -> None:
        """Report how far the work is (0.0-1.0) to anyone following the message."""

    async def platform(self) -> dict[str, Any]:
        """The runtime's own state, as ``acp status --json`` shows it: live workers,
        queues (ready, in flight, delayed, dead, lag) and the coordinator's update."""


class AgentBase(abc.ABC):
    """What a runtime needs from an agent, whatever implements it."""

    name: str
    tier: str
    complexity: str
    version: str = "0"
    #: "python" for handlers in code; "claude" for agents whose work is model calls,
    #: the only work that uses model capacity (the coordinator schedules it)
    kind: str = "python"
    #: its work costs (a paid call): each message id runs at most once here, a
    #: replayed or copied one is acknowledged without running (one ledger round trip
    #: per batch). Off for plain handlers, which may run a replay again, as after a
    #: crash; its effects are dropped at commit either way
    once_per_message: bool = False
    #: the most the API's server tools (web search) may bill for one of its turns, USD:
    #: announced, so that the coordinator reserves it with the tokens
    server_tools_usd: float = 0.0

    def lifespan(self) -> AbstractAsyncContextManager[Any]:
        """Held by the worker while the agent runs: what it needs open across messages
        (MCP server connections) lives in it."""
        return nullcontext()

    def watch_rate_limits(self, callback: RateLimitCallback) -> None:
        """Hand the model API's rate-limit headers to ``callback`` after each call
        (a worker publishes them for the coordinator); agents that call no model
        have nothing to report."""
        return None

    @abc.abstractmethod
    async def handle(self, env: Envelope, ctx: Context) -> dict[str, Any] | None:
        """The reply body for ``env``, or None."""

    def commands(self) -> list[str]:
        """Commands this agent declares it handles (``[]``: any)."""
        return []


class Agent(AgentBase):
    """A Python agent: handlers registered per command name or typed model."""

    def __init__(
        self,
        name: str,
        *,
        tier: str = "haiku",
        complexity: str = "low",
        description: str = "",
        version: str = "0",
        registry: CommandRegistry | None = None,
    ) -> None:
        self.name = name
        self.tier = tier
        self.complexity = complexity
        self.description = description
        self.version = version
        self.registry = registry or CommandRegistry.with_builtins()
        self._handlers: dict[str, Handler] = {}
        self._fallback: Handler | None = None
        self._on_status: Handler | None = None

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, tier={self.tier!r}, commands={self.commands()})"

    @overload
    def command(self, name: str | type[CommandModel]) -> Callable[[H], H]: ...

    @overload
    def command(self, name: None = None) -> Callable[[H], H]: ...

    def command(self, name: str | type[CommandModel] | None = None) -> Callable[[H], H]:
        """Register a handler for a command name, or for a typed model (which is
        also added to this agent's registry). Without a name: every command no
        other handler takes."""

        def register(fn: H) -> H:
            if name is None:
                self._fallback = fn
            elif isinstance(name, str):
                self._handlers[name] = fn
            else:
                self.registry.register(name)
                self._handlers[name.command] = fn
            return fn

        return register

    def on_status(self, fn: H) -> H:
        """Register a handler for status updates and events sent to this agent."""
        self._on_status = fn
        return fn

    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def handle(self, env: Envelope, ctx: Context) -> dict[str, Any] | None:
        if env.kind is not MessageKind.COMMAND:
            if self._on_status is None:
                return None
            return _as_body(await self._on_status(env.body, ctx))
        name = env.command or ""
        handler = self._handlers.get(name, self._fallback)
        if handler is None:
            raise UnknownCommand(
                f"{self.name} has no handler for {name!r} (it handles {', '.join(self.commands()) or 'nothing'})"
            )
        typed = self.registry.parse(env.body)  # raises SchemaError with field paths
        return _as_body(await handler(typed if typed is not None else env.body, ctx))


def _as_body(reply: Reply) -> dict[str, Any] | None:
    if reply is None:
        return None
    if isinstance(reply, BaseModel):
        return reply.model_dump(mode="json", exclude_none=True)
    return dict(reply)
