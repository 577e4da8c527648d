"""The pipeline monitor: a Python agent that measures the runtime's own streams
(depth, lag, throughput, in flight, dead letters) and asks the data engineer
about them with a PIPELINE_STATUS command. ``acp demo`` runs it;
``agents/pipeline-monitor.md`` names it as its entrypoint.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from acp.agents import Agent, Context

agent = Agent(
    "pipeline-monitor",
    tier="haiku",
    complexity="low",
    description="Measures the runtime's streams.",
)


def _handled(platform: dict[str, Any]) -> int:
    return sum(int(w.get("handled", 0)) for w in platform["workers"])


@agent.command("MEASURE")
async def measure(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
    # two samples, a window apart: throughput is a rate, not a count
    window = float(body.get("window_s", 2.0))
    first, started = await ctx.platform(), time.monotonic()
    await anyio.sleep(window)
    platform = await ctx.platform()
    rate = max(_handled(platform) - _handled(first), 0) / (time.monotonic() - started)
    # the agents' queues; the coordinator's own (intake, workflows) are plumbing
    queues = {
        q: v
        for q, v in platform["queues"].items()
        if not q.startswith(("coordinator", "workflows"))
    }
    depth = sum(q["ready"] + q["in_flight"] for q in queues.values())
    dead = sum(q["dead"] for q in queues.values())
    lag = max((q["lag_s"] for q in queues.values()), default=0.0)
    quality = 1.0 - dead / max(_handled(platform) + dead, 1)
    status = {
        "cmd": "PIPELINE_STATUS",
        "component_id": body.get("component_id", "acp_runtime"),
        "data_flow": {
            "ingestion_rate": f"{rate:.0f} msg/s",
            "processing_lag": f"{lag:.1f}s",
            "quality_score": round(quality, 3),
        },
        "infrastructure": {
            "workers": len(platform["workers"]),
            "queue_depth": depth,
            "in_flight": sum(q["in_flight"] for q in queues.values()),
            "dead_letters": dead,
        },
        "outputs": sorted(queues),
        "respond_format": "STRUCTURED_JSON",
    }
    live = {w["agent"] for w in platform["workers"]}
    target = body.get("report_to", "data-engineer")
    ctx.log.info("measured", depth=depth, dead=dead, lag=lag)
    if target in live:
        answer = await ctx.send(target, status, wait=True, timeout=float(body.get("timeout", 120)))
        return {"measured": status, "sent_to": target, "answer": answer}
    await ctx.send(target, status)  # a handoff, committed with this message: it waits for a worker
    return {
        "measured": status,
        "sent_to": target,
        "answer": None,
        "waiting": f"no {target} worker is running",
    }
