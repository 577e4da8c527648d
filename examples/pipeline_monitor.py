"""The pipeline monitor: a Python agent that measures the runtime's own streams
(depth, lag, throughput, in flight, dead letters) and asks the data engineer
about them with a PIPELINE_STATUS command. ``acp demo`` runs it;
``agents/pipeline-monitor.md`` names it as its entrypoint.
"""

from __future__ import annotations

import time
from typing import Any

from acp.agents import Agent, Context

agent = Agent(
    "pipeline-monitor",
    tier="haiku",
    complexity="low",
    description="Measures the runtime's streams.",
)
_last: dict[str, tuple[float, int]] = {}


def _throughput(name: str, handled: int, now: float) -> float:
    """Messages per second since the previous measurement of this agent."""
    before = _last.get(name)
    _last[name] = (now, handled)
    if before is None or now <= before[0]:
        return 0.0
    return max(handled - before[1], 0) / (now - before[0])


@agent.command("MEASURE")
async def measure(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
    platform = await ctx.platform()
    now = time.time()
    queues = {q: v for q, v in platform["queues"].items() if not q.startswith("coordinator")}
    handled = {w["agent"]: w.get("handled", 0) for w in platform["workers"]}
    depth = sum(q["ready"] + q["in_flight"] for q in queues.values())
    dead = sum(q["dead"] for q in queues.values())
    lag = max((q["lag_s"] for q in queues.values()), default=0.0)
    rate = sum(_throughput(a, n, now) for a, n in handled.items())
    quality = 1.0 - dead / max(sum(handled.values()) + dead, 1)
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
    return {"measured": status, "sent_to": target, "answer": None, "waiting": f"no {target} worker is running"}
