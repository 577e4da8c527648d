"""Send commands to agents and wait for their replies, from any program.

The CLI's ``acp send`` is a thin wrapper around this; applications that embed
the runtime use it directly. Every message gets a W3C trace context so its
path through coordinator and workers can be followed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, Literal

from acp.protocol.body import MessageKind
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.runtime.bus.base import Bus, Outgoing
from acp.runtime.keys import COORDINATORS, INTAKE
from acp.runtime.processor import to_outgoing

__all__ = ["Client", "new_traceparent"]


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


class Client:
    """``await Client(bus).request("data-engineer", {"cmd": ...})`` -> the reply envelope.

    ``via``: ``"auto"`` (default) sends through the coordinator when one is
    alive, else straight to the agent; ``"coordinator"`` or ``"direct"`` force it.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        codec: WireCodec | None = None,
        sender: str = "client",
        via: Literal["auto", "coordinator", "direct"] = "auto",
    ) -> None:
        self.bus = bus
        self.codec = codec or WireCodec()
        self.sender = sender
        self.via = via
        self._intake: bool | None = None if via == "auto" else via == "coordinator"

    async def _outgoing(self, env: Envelope) -> Outgoing:
        if self._intake is None:
            self._intake = bool(await self.bus.members(COORDINATORS))
        return to_outgoing(env, self.codec.encode(env), INTAKE if self._intake else None)

    def command(
        self,
        agent: str,
        body: Mapping[str, Any],
        *,
        reply: bool = False,
        tier: str | None = None,
        priority: int = 5,
        timeout: float | None = None,
        tenant: str | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        return Envelope.for_body(
            dict(body),
            sender=self.sender,
            recipient=agent,
            reply_to=self.bus.inbox if reply else None,
            tier=tier,
            priority=priority,
            deadline=time.time() + timeout if timeout else None,
            tenant=tenant,
            traceparent=traceparent or new_traceparent(),
        )

    async def send(self, agent: str, body: Mapping[str, Any], **fields: Any) -> Envelope:
        """Queue a command without waiting; returns what was sent (its id tracks it)."""
        env = self.command(agent, body, **fields)
        await self.bus.send(await self._outgoing(env))
        return env

    async def request(
        self,
        agent: str,
        body: Mapping[str, Any],
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - the bus scopes the wait
        **fields: Any,
    ) -> Envelope:
        """Send a command and wait for its reply (raises ``RequestTimeout``)."""
        return await self.request_envelope(
            self.command(agent, body, reply=True, **fields), timeout=timeout
        )

    async def request_envelope(self, env: Envelope, *, timeout: float = 60.0) -> Envelope:  # noqa: ASYNC109
        """Send a prepared command (with ``reply_to`` set) and wait for its reply."""
        reply = await self.bus.request(await self._outgoing(env), timeout=timeout)
        return self.codec.decode(reply.frame)

    async def cancel(self, agent: str, msg_id: str, *, timeout: float = 10.0) -> Envelope:  # noqa: ASYNC109
        return await self.request(
            agent, {"cmd": "CANCEL", "msg_id": msg_id}, timeout=timeout, priority=9
        )


def is_error(reply: Envelope) -> bool:
    return reply.kind is MessageKind.ERROR or "error" in reply.body
