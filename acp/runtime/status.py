"""What ``acp status`` shows: live workers, queues, dead letters, and the
coordinator's latest platform update (scheduling, latency, cost against budget)."""

from __future__ import annotations

from typing import Any

from acp.protocol.codec import WireCodec
from acp.runtime.bus.base import Bus, QueueStats
from acp.runtime.keys import COORDINATORS, INBOX_PREFIX, PLATFORM_TOPIC, WORKERS
from acp.runtime.records import read_presence

__all__ = ["agent_queues", "read_status"]


async def agent_queues(bus: Bus) -> dict[str, QueueStats]:
    """Statistics of every destination except clients' reply inboxes."""
    return {
        dest: await bus.stats(dest)
        for dest in await bus.destinations()
        if not dest.startswith(INBOX_PREFIX)
    }


async def read_status(bus: Bus) -> dict[str, Any]:
    workers = [read_presence(v) for v in (await bus.members(WORKERS)).values()]
    coordinators = [read_presence(v) for v in (await bus.members(COORDINATORS)).values()]
    queues: dict[str, Any] = {}
    for dest, stats in (await agent_queues(bus)).items():
        queues[dest] = {
            "ready": stats.ready,
            "in_flight": stats.pending,
            "delayed": stats.delayed,
            "dead": stats.dead,
            "lag_s": stats.lag_s,
            "consumers": stats.consumers,
        }
    platform = None
    event = await bus.latest(PLATFORM_TOPIC)
    if event is not None:
        platform = WireCodec(verify=False).decode(event.frame).body.get("data_platform")
    return {
        "workers": sorted(workers, key=lambda w: (w.get("agent", ""), w.get("worker", ""))),
        "coordinators": coordinators,
        "queues": queues,
        "platform": platform,
    }
