"""Send commands to agents and wait for their replies, from any program.

The CLI's ``acp send`` is a thin wrapper around this; applications that embed
the runtime use it directly. Every message gets a W3C trace context so its
path through coordinator and workers can be followed.

A caller that stops waiting also stops paying: a request's timeout is its
message's deadline, so the coordinator and the workers drop it (as a dead
letter with reason ``deadline``) instead of running it for nobody. Pass
``deadline=None`` to keep the work going after the wait ends.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Mapping
from typing import Any, Literal

from acp.errors import RequestTimeout
from acp.protocol.body import MessageKind
from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.runtime.bus.base import Bus, Outgoing
from acp.runtime.keys import COORDINATORS, WORKERS, intake_queue, is_intake
from acp.runtime.processor import to_outgoing
from acp.runtime.records import announced_partitions, read_presence
from acp.runtime.results import TRACK, Result, ResultState, read_result, result_record

__all__ = ["Client", "Result", "ResultState", "new_traceparent"]

_rng = random.Random()  # seeded from the OS; again in a forked child, not to share ids
os.register_at_fork(after_in_child=_rng.seed)
_random_bits = _rng.getrandbits
#: ``deadline=`` default of :meth:`Client.request`: the deadline is the timeout
AT_TIMEOUT: Literal["timeout"] = "timeout"


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, sampled). Trace ids must be unique and
    random enough to sample by, not secret: the process's PRNG is a quarter of the
    cost of the OS's, which a client sending thousands a second notices."""
    bits = _random_bits(192) | 1 << 191  # never all zeros, which W3C forbids
    return f"00-{bits >> 64:032x}-{bits & 0xFFFFFFFFFFFFFFFF | 1:016x}-01"


class Client:
    """``await Client(bus).request("data-engineer", {"cmd": ...})`` -> the reply envelope.

    ``via``: ``"auto"`` (default) sends through the coordinator when one is
    alive, else straight to the agent; ``"coordinator"`` or ``"direct"`` force it.
    ``recheck``: how many seconds an ``"auto"`` choice stands before the coordinators
    are looked up again (a long-lived client meets coordinators that start later).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        codec: WireCodec | None = None,
        sender: str = "client",
        via: Literal["auto", "coordinator", "direct"] = "auto",
        recheck: float = 5.0,
    ) -> None:
        self.bus = bus
        self.codec = codec or WireCodec()
        self.sender = sender
        self.via = via
        self.recheck = recheck
        self._intake: bool | None = None if via == "auto" else via == "coordinator"
        #: the intake partitions the coordinators announce (read with ``_intake``)
        self._partitions = 0
        self._looked_at = -math.inf

    async def _outgoing(self, env: Envelope) -> Outgoing:
        stale = self.via == "auto" and time.monotonic() - self._looked_at >= self.recheck
        if stale or (self._intake and not self._partitions):
            coordinators = await self.bus.members(COORDINATORS)
            self._looked_at = time.monotonic()
            if self.via == "auto":
                self._intake = bool(coordinators)
            self._partitions = announced_partitions(coordinators)
        dest = intake_queue(env.recipient, self._partitions) if self._intake else None
        return to_outgoing(env, self.codec.encode(env), dest)

    def command(
        self,
        agent: str,
        body: Mapping[str, Any],
        *,
        reply: bool = False,
        tier: str | None = None,
        priority: int = 5,
        timeout: float | None = None,
        deadline: float | None = None,
        tenant: str | None = None,
        traceparent: str | None = None,
        track: bool = False,
    ) -> Envelope:
        """The command envelope. ``deadline`` is epoch seconds on the server's clock
        (``Bus.now``); ``timeout`` sets it that many seconds from now. ``track`` records
        where it stands for ``result``."""
        now = self.bus.now()
        if deadline is None and timeout:
            deadline = now + timeout
        return Envelope.for_body(
            dict(body),
            sender=self.sender,
            recipient=agent,
            reply_to=self.bus.inbox if reply else None,
            tier=tier,
            priority=priority,
            deadline=deadline,
            created_at=now,
            tenant=tenant,
            traceparent=traceparent or new_traceparent(),
            **({"headers": {TRACK: "1"}} if track else {}),
        )

    async def _send(self, env: Envelope) -> Outgoing:
        """Send ``env``; a tracked one is recorded as queued in the same round trip."""
        item = await self._outgoing(env)
        if env.headers.get(TRACK) == "1":
            queued = result_record(
                env.id, ResultState.QUEUED, agent=env.recipient, command=env.command,
                detail=f"sent to {'the coordinator' if is_intake(item.dest) else env.recipient}",
            )  # fmt: skip
            await self.bus.send_many([queued, item])
        else:
            await self.bus.send(item)
        return item

    async def send(
        self, agent: str, body: Mapping[str, Any], *, track: bool = True, **fields: Any
    ) -> Envelope:
        """Queue a command without waiting; returns what was sent. Its id is what
        :meth:`result` takes (unless ``track=False``)."""
        env = self.command(agent, body, track=track, **fields)
        await self._send(env)
        return env

    async def request(
        self,
        agent: str,
        body: Mapping[str, Any],
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - the bus scopes the wait
        deadline: float | Literal["timeout"] | None = AT_TIMEOUT,
        **fields: Any,
    ) -> Envelope:
        """Send a command and wait for its reply (raises ``RequestTimeout`` naming the
        agent and where the command stands). The command's deadline is the end of the
        wait unless ``deadline`` says otherwise (``None``: no deadline)."""
        when = self.bus.now() + timeout if deadline == AT_TIMEOUT else deadline
        assert not isinstance(when, str)
        env = self.command(agent, body, reply=True, deadline=when, **fields)
        return await self.request_envelope(env, timeout=timeout)

    async def request_envelope(self, env: Envelope, *, timeout: float = 60.0) -> Envelope:  # noqa: ASYNC109
        """Send a prepared command (with ``reply_to`` set) and wait for its reply."""
        item = await self._outgoing(env)
        try:
            reply = await self.bus.request(item, timeout=timeout)
        except RequestTimeout:
            raise RequestTimeout(await self._why_no_reply(env, timeout)) from None
        return self.codec.decode(reply.frame)

    async def result(self, msg_id: str, *, wait: float | None = None) -> Result:
        """Where a tracked message stands (queued, parked, running, done, dead) and
        its reply once there is one; ``wait`` polls that many seconds for the end."""
        return await read_result(self.bus, msg_id, codec=self.codec, wait=wait)

    async def _why_no_reply(self, env: Envelope, waited: float) -> str:
        """A timeout message that names the agent, the command and where it stands."""
        what = f"{env.command or env.kind.value} (message {env.id})"
        message = f"no reply from {env.recipient!r} within {waited:g}s to {what}"
        try:
            live = [
                read_presence(i).get("agent") for i in (await self.bus.members(WORKERS)).values()
            ]
            record = await self.bus.result(env.id)
        except Exception:  # an explanation must never hide the timeout itself
            return message
        if record is not None and record.headers.get("detail"):
            message += f": {record.headers.get('state')}, {record.headers['detail']}"
        elif env.recipient not in live:
            via = " (the coordinator holds it)" if self._intake else ""
            message += f": no live worker for {env.recipient}{via}"
        else:
            message += f": {live.count(env.recipient)} worker(s) of {env.recipient} alive"
        if env.deadline is not None:
            message += "; it had this deadline, so it is dropped rather than run late"
        return message

    async def cancel(self, agent: str, msg_id: str, *, timeout: float = 10.0) -> Envelope:  # noqa: ASYNC109
        return await self.request(
            agent, {"cmd": "CANCEL", "msg_id": msg_id}, timeout=timeout, priority=9
        )


def is_error(reply: Envelope) -> bool:
    return reply.kind is MessageKind.ERROR or "error" in reply.body
