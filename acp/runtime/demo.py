"""``acp demo``: the whole runtime on one screen, on the embedded default.

It starts a private Redis-protocol server, the coordinator and the catalogue's
workers; drives real traffic through the coordinator to a Python agent; feeds
two broken frames to show the dead letters; then the pipeline monitor measures
the runtime's own streams and sends ``PIPELINE_STATUS`` to the data engineer,
which answers through Claude when ``ANTHROPIC_API_KEY`` is set. Without a key
the command waits, visibly, for a Claude worker.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

from acp.agents.config import RuntimeConfig
from acp.agents.loader import Catalogue
from acp.protocol.ids import new_id
from acp.protocol.render import render_body
from acp.runtime.bus.base import Outgoing
from acp.runtime.bus.redis import RedisBus
from acp.runtime.client import Client
from acp.runtime.stack import Stack, plan_agents
from acp.runtime.status import read_status

__all__ = ["run_demo"]

TRAFFIC_AGENT = "examples.pipeline_doctor:agent"


def _traffic_body(i: int) -> dict[str, Any]:
    return {
        "cmd": "PIPELINE_STATUS",
        "component_id": f"stream_{i % 12:02d}",
        "data_flow": {
            "quality_score": round(0.8 + (i % 20) / 100, 2),
            "processing_lag": f"{i % 30}m",
        },
        "respond_format": "STRUCTURED_JSON",
    }


async def run_demo(
    catalogue: Catalogue,
    config: RuntimeConfig,
    *,
    say: Callable[[str], None],
    messages: int = 300,
    concurrency: int = 32,
    answer_timeout: float = 120.0,
) -> dict[str, Any]:
    """Run the demo, narrating through ``say``; returns the summary it ends with."""
    plan = plan_agents(catalogue, config, extra=[TRAFFIC_AGENT])
    stack = Stack(plan, config, catalogue.definitions, status_interval=1.0)
    summary: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        await tg.start(stack.run)
        assert stack.settings is not None
        say(
            f"1. Started a private Redis-protocol server at {stack.settings.redacted_url} (AOF on, noeviction),"
        )
        say(
            f"   the coordinator, and workers for: {', '.join(sorted(a.name for a in plan.agents))}."
        )
        if plan.waiting_for_key:
            say(
                f"   Claude-backed, waiting for ANTHROPIC_API_KEY: {', '.join(sorted(plan.waiting_for_key))}."
            )
        async with RedisBus.from_url(stack.settings.url) as bus:
            client = Client(bus, sender="demo")
            latencies: list[float] = []
            limit = anyio.Semaphore(concurrency)

            finished: list[float] = []

            async def one(i: int) -> None:
                async with limit:
                    sent_at = time.perf_counter()
                    await client.request("pipeline-doctor", _traffic_body(i), timeout=30)
                    finished.append(time.perf_counter())
                    latencies.append(finished[-1] - sent_at)

            report_box: list[Any] = []

            async def ask_monitor() -> None:
                await anyio.sleep(0.5)  # measure while the traffic flows
                report_box.append(
                    await client.request(
                        "pipeline-monitor",
                        {"cmd": "MEASURE", "component_id": "acp_demo", "timeout": answer_timeout},
                        timeout=answer_timeout + 30,
                    )
                )

            started = time.perf_counter()
            async with anyio.create_task_group() as traffic:
                traffic.start_soon(ask_monitor)
                for i in range(messages):
                    traffic.start_soon(one, i)
                    if i % concurrency == 0:
                        await anyio.sleep(0.01)  # a steady stream, not one burst
            elapsed = max(finished) - started  # the traffic alone, not the monitor's window
            latencies.sort()
            say(
                f"2. Sent {messages} PIPELINE_STATUS commands through the coordinator to pipeline-doctor: "
                f"{messages / elapsed:,.0f} round trips/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
                f"p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.1f} ms."
            )
            for junk in (b"\x00not an ACP frame", b"\xa2\x02\x05garbage"):
                await bus.send(Outgoing("pipeline-doctor", new_id(), junk))
            with anyio.fail_after(10):
                while (await bus.stats("pipeline-doctor")).dead < 2:  # noqa: ASYNC110 - server state
                    await anyio.sleep(0.05)
            letters = await bus.dead_letters("pipeline-doctor")
            say(
                f"3. Fed 2 broken frames straight to the queue: both in the dead letters "
                f"({', '.join(d.reason for d in letters)}); the worker kept going."
            )
            (report,) = report_box
            measured = report.body.get("measured", {})
            say(
                "4. The pipeline monitor measured the runtime's own streams and sent the data engineer:"
            )
            say("\n".join("   " + line for line in render_body(measured).splitlines()))
            answer = report.body.get("answer")
            cost = 0.0
            if answer:
                cost = float(answer.get("_acp", {}).get("cost_usd", 0.0))
                say("5. The data engineer answered through Claude:")
                say("\n".join("   " + line for line in render_body(answer).splitlines()))
            else:
                await anyio.sleep(1.5)  # let the coordinator publish its view of the parked command
                platform = (await read_status(bus)).get("platform") or {}
                waiting = platform.get("agents", {}).get("waiting_for_a_worker", "?")
                say(
                    "5. No ANTHROPIC_API_KEY is set, so no Claude worker runs: the data engineer's command is"
                )
                say(
                    f"   queued in Redis and waits for one (commands waiting for a worker: {waiting})."
                )
                say(
                    "   Set ANTHROPIC_API_KEY and run `acp demo` again to see Claude's recommendations."
                )
            status = await read_status(bus)
            handled = sum(int(w.get("handled", 0)) for w in status["workers"])
            summary = {
                "messages": messages,
                "handled": handled,
                "round_trips_per_s": round(messages / elapsed, 1),
                "latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
                "latency_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 2),
                "dead_letters": len(letters),
                "cost_usd": round(cost, 6),
                "claude": bool(answer),
            }
        stack.stop()
    return summary
