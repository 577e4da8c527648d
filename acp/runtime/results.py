"""Where a message stands, for whoever sent it: queued, parked, running, done or dead.

A *tracked* message (``acp send`` tracks every message; ``Client.send`` by
default) carries the envelope header ``track``. Each hop that moves it writes a
small record to the bus's ``RESULTS`` destination: the client when it sends
(queued), the coordinator when it parks it for want of a worker (parked), the
worker when it starts (running); the reply itself (done) travels with the
worker's commit, like any effect, and a dead letter writes the error reply the
sender gets (dead). A final record is never replaced by a later one that is not,
so a late "running" cannot hide a reply. The bus keeps records for
``result_ttl`` seconds and at most ``result_max`` of them (``[results]`` in
``runtime/acp.toml``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from acp.protocol.codec import WireCodec
from acp.protocol.envelope import Envelope
from acp.protocol.ids import new_id
from acp.runtime.bus.base import H_CORRELATION, H_FINAL, Bus, Outgoing, ResultRecord
from acp.runtime.keys import RESULTS

__all__ = ["TRACK", "Result", "ResultState", "is_tracked", "read_result", "result_record"]

#: the envelope header that asks every hop to record where the message stands
TRACK = "track"


class ResultState(StrEnum):
    #: no record: never tracked, expired, or not sent yet
    UNKNOWN = "unknown"
    QUEUED = "queued"
    #: waiting for a worker of its agent (the coordinator holds it)
    PARKED = "parked"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


_FINAL = frozenset({ResultState.DONE, ResultState.DEAD})


def is_tracked(env: Envelope) -> bool:
    return env.headers.get(TRACK) == "1"


def result_record(
    msg_id: str,
    state: ResultState,
    *,
    agent: str | None = None,
    command: str | None = None,
    detail: str = "",
    frame: bytes = b"",
    extra: Mapping[str, str] | None = None,
) -> Outgoing:
    """The bus item that records ``state`` for message ``msg_id``."""
    headers = {
        H_CORRELATION: msg_id,
        H_FINAL: "1" if state in _FINAL else "0",
        "state": state.value,
        "agent": agent or "",
        "command": command or "",
        "detail": detail,
        **(extra or {}),
    }
    return Outgoing(RESULTS, new_id(), frame, headers)


@dataclass(frozen=True)
class Result:
    """What ``Client.result`` and ``acp result`` report about one message."""

    msg_id: str
    state: ResultState
    agent: str | None = None
    command: str | None = None
    #: why it is parked, or what it died of
    detail: str = ""
    #: the reply, or for a dead message the error reply its sender got
    reply: Envelope | None = None
    #: where the dead letter is: ``{"dest": ..., "entry_id": ...}``
    dead_letter: dict[str, str] | None = None
    #: epoch seconds of the last record
    updated_at: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in _FINAL

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``acp result --json``."""
        return {
            "msg_id": self.msg_id,
            "state": self.state.value,
            "agent": self.agent,
            "command": self.command,
            "detail": self.detail or None,
            "reply": self.reply.body if self.reply is not None else None,
            "dead_letter": self.dead_letter,
            "updated_at": self.updated_at,
        }


def _from_record(record: ResultRecord, codec: WireCodec) -> Result:
    h = dict(record.headers)
    reply = codec.decode(record.frame) if record.frame else None
    dead = (
        {"dest": h["dlq_dest"], "entry_id": h["dlq_entry"]}
        if h.get("dlq_dest") and h.get("dlq_entry")
        else None
    )
    try:
        state = ResultState(h.get("state", ""))
    except ValueError:
        state = ResultState.UNKNOWN
    return Result(
        msg_id=record.msg_id,
        state=state,
        agent=h.get("agent") or None,
        command=h.get("command") or None,
        detail=h.get("detail", ""),
        reply=reply,
        dead_letter=dead,
        updated_at=record.updated_at,
        extra={k: v for k, v in h.items() if not k.startswith("acp-")},
    )


async def read_result(
    bus: Bus, msg_id: str, *, codec: WireCodec | None = None, wait: float | None = None
) -> Result:
    """Where ``msg_id`` stands; with ``wait``, poll up to that many seconds for a final state."""
    codec = codec or WireCodec(verify=False)
    give_up = time.monotonic() + (wait or 0.0)
    delay = 0.02
    while True:
        record = await bus.result(msg_id)
        result = _from_record(record, codec) if record else Result(msg_id, ResultState.UNKNOWN)
        if result.final or wait is None or time.monotonic() >= give_up:
            return result
        await anyio.sleep(min(delay, max(give_up - time.monotonic(), 0.0)))
        delay = min(delay * 2, 0.5)
