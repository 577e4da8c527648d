"""The records one process writes and another reads, typed in one place: what a
worker or a coordinator announces in its presence group, what a worker reports when
a message is done (the coordinator settles budgets and capacity from it), and the
platform status the coordinator publishes (``acp status``, ``ctx.platform()``).

They travel as JSON (presence) or inside ACP bodies (completions, status), so they
are ``TypedDict``s: plain dicts on the wire, checked by mypy where they are built
and where they are read. A reader must still expect fields to be missing: a
record can come from an older or newer process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

__all__ = [
    "AgentsHealth",
    "Completion",
    "CoordinatorPresence",
    "PlatformStatus",
    "QueueHealth",
    "WorkerPresence",
    "announced_partitions",
    "read_presence",
]


class WorkerPresence(TypedDict):
    """One agent served by one worker (member ``<worker>/<agent>`` of ``WORKERS``)."""

    worker: str
    agent: str
    tier: str
    complexity: str
    #: "claude" work uses model capacity (the coordinator schedules it); "python" not
    kind: str
    capacity: int
    in_flight: int
    handled: int
    version: str
    host: str
    pid: int
    started_at: float
    #: what a turn's server tools may bill (absent from older workers: the
    #: coordinator prices them by its own ``[tools]``)
    server_tools_usd: NotRequired[float]


class CoordinatorPresence(TypedDict):
    """A live coordinator (member of ``COORDINATORS``)."""

    id: str
    leading: bool
    token: int | None
    #: intake partitions senders should use (absent from older coordinators: 1)
    partitions: NotRequired[int]


class Completion(TypedDict):
    """A message that no longer holds capacity, and what its call cost (``COMPLETIONS_TOPIC``,
    in batches: ``{"completed": [Completion, ...]}``)."""

    msg_id: str
    agent: str
    tier: str | None
    model: str | None
    ok: bool
    #: the call's token usage as the API reported it (``acp.agents.Usage`` fields)
    usage: dict[str, int] | None
    cost_usd: float
    tenant: str | None
    created_at: float
    finished_at: float
    attempt: int
    #: the dead-letter reason, when the message died
    dead: NotRequired[str]
    #: the step that continues it as new work (a repair, a retry, the next turn)
    continued: NotRequired[str]


class AgentsHealth(TypedDict):
    running: int
    workers: int
    waiting_for_a_worker: int
    failed: int
    success_rate: float | None


class QueueHealth(TypedDict):
    depth: int
    lag_s: float
    dead: int


class PlatformHealth(TypedDict):
    agents: AgentsHealth
    queues: dict[str, QueueHealth]
    scheduling: dict[str, Any]
    latency: dict[str, float | None]
    cost_today: dict[str, Any]
    coordinator: CoordinatorPresence


class PlatformStatus(TypedDict):
    """What the coordinator publishes on ``PLATFORM_TOPIC``: a ``data_platform``
    status update, with the label a status carries."""

    data_platform: PlatformHealth
    hash: str


def read_presence(raw: bytes | str) -> dict[str, Any]:
    """A presence member's record (worker or coordinator), or ``{}`` when it is not
    a JSON object (a member written by something else is skipped, not fatal)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def announced_partitions(coordinators: Mapping[str, bytes]) -> int:
    """The intake partitions senders use: the leading coordinator's, else the largest
    any live coordinator announces, else one."""
    found = [read_presence(raw) for raw in coordinators.values()]
    leading = [p for p in found if p.get("leading")]
    counts = [int(p.get("partitions") or 1) for p in (leading or found)]
    return max(counts, default=1)
