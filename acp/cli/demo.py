"""``acp demo``: the whole runtime on one screen, on the embedded default.

It starts a private Redis-protocol server, the coordinator and the catalogue's
workers; drives real traffic through the coordinator to a Python agent; feeds
two broken frames to show the dead letters; then the pipeline monitor measures
the runtime's own streams and sends ``PIPELINE_STATUS`` to the data engineer,
which answers through Claude when ``ANTHROPIC_API_KEY`` is set. Without a key
the command waits, visibly, for a Claude worker.

The demo's own agents (the pipeline doctor and monitor, the data engineer) ship
in the package: a catalogue that lacks them gets them from there. Every wait has
a deadline; one that passes stops the demo with a ``Stalled`` error naming what
did not answer and what the runtime saw of it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from acp.agents.config import RuntimeConfig
from acp.agents.loader import Catalogue, load_catalogue
from acp.catalogue import shipped_agents
from acp.errors import RequestTimeout, Stalled
from acp.protocol.ids import new_id
from acp.protocol.render import render_body
from acp.runtime.bus.base import Bus, Outgoing
from acp.runtime.client import Client
from acp.runtime.options import Deployment
from acp.runtime.stack import Stack, plan_agents
from acp.runtime.status import read_status

__all__ = ["DEMO_AGENTS", "run_demo", "with_demo_agents"]

T = TypeVar("T")
#: the agents the demo's script talks to
DEMO_AGENTS = ("pipeline-doctor", "pipeline-monitor", "data-engineer")


def with_demo_agents(catalogue: Catalogue) -> tuple[Catalogue, list[str]]:
    """``catalogue`` plus the shipped definitions of the demo's agents it lacks."""
    missing = [name for name in DEMO_AGENTS if name not in catalogue]
    if not missing:
        return catalogue, []
    shipped = load_catalogue(shipped_agents())
    added = {name: shipped.get(name) for name in missing}
    return Catalogue({**catalogue.definitions, **added}, list(catalogue.errors)), missing


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


async def _seen_of(bus: Bus, agent: str) -> str:
    """What the runtime can say about an agent that did not answer."""
    status = await read_status(bus)
    workers = [w for w in status["workers"] if w.get("agent") == agent]
    queue = status["queues"].get(agent)
    seen = f"{len(workers)} live worker(s) of {agent}"
    if queue:
        seen += (
            f"; its queue holds {queue['ready']} ready, {queue['in_flight']} in flight, "
            f"{queue['dead']} dead letters"
        )
    platform = status.get("platform") or {}
    parked = platform.get("agents", {}).get("waiting_for_a_worker")
    if parked:
        seen += f"; {parked} command(s) parked in the coordinator for want of a worker"
    if not status["coordinators"]:
        seen += "; no coordinator is alive"
    return seen


async def _within(
    seconds: float, what: str, why: Callable[[], Awaitable[str]], work: Callable[[], Awaitable[T]]
) -> T:
    """``work()`` within ``seconds``, or ``Stalled`` saying what did not happen and why."""
    try:
        with anyio.fail_after(seconds):
            return await work()
    except (TimeoutError, RequestTimeout):
        raise Stalled(f"{what} within {seconds:g} s: {await why()}") from None


async def run_demo(
    catalogue: Catalogue,
    config: RuntimeConfig,
    *,
    say: Callable[[str], None],
    deployment: Deployment | None = None,
    messages: int = 300,
    concurrency: int = 32,
    answer_timeout: float = 120.0,
    request_timeout: float = 30.0,
) -> dict[str, Any]:
    """Run the demo, narrating through ``say``; returns the summary it ends with."""
    catalogue, borrowed = with_demo_agents(catalogue)
    plan = plan_agents(catalogue, config)
    deployment = deployment or Deployment.from_config(config)
    stack = Stack(plan, config, catalogue.definitions, status_interval=1.0, deployment=deployment)
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
        if borrowed:
            say(f"   (the demo's own agents from the shipped catalogue: {', '.join(borrowed)})")
        if plan.waiting_for_key:
            say(
                f"   Claude-backed, waiting for ANTHROPIC_API_KEY: {', '.join(sorted(plan.waiting_for_key))}."
            )
        async with deployment.bus(stack.settings.url) as bus:
            client = Client(bus, sender="demo", codec=deployment.codec)
            latencies: list[float] = []
            errors: list[str] = []
            limit = anyio.Semaphore(concurrency)
            finished: list[float] = []

            async def one(i: int) -> None:
                async with limit:
                    sent_at = time.perf_counter()
                    reply = await client.request(
                        "pipeline-doctor", _traffic_body(i), timeout=request_timeout
                    )
                    if "error" in reply.body:
                        errors.append(str(reply.body.get("detail") or reply.body["error"]))
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

            async def traffic() -> None:
                async with anyio.create_task_group() as group:
                    for i in range(messages):
                        group.start_soon(one, i)
                        if i % concurrency == 0:
                            await anyio.sleep(0.01)  # a steady stream, not one burst

            async with anyio.create_task_group() as both:
                both.start_soon(
                    _within,
                    answer_timeout + 30,
                    "the pipeline monitor did not answer MEASURE",
                    lambda: _seen_of(bus, "pipeline-monitor"),
                    ask_monitor,
                )
                started = time.perf_counter()
                await _within(
                    request_timeout + messages / 50,
                    f"pipeline-doctor did not answer all {messages} PIPELINE_STATUS commands "
                    f"({len(finished)} answered)",
                    lambda: _seen_of(bus, "pipeline-doctor"),
                    traffic,
                )
            if errors:
                raise Stalled(
                    f"pipeline-doctor answered {len(errors)} of {messages} commands with an error, "
                    f"the first: {errors[0]}"
                )
            elapsed = max(finished) - started  # the traffic alone, not the monitor's window
            latencies.sort()
            say(
                f"2. Sent {messages} PIPELINE_STATUS commands through the coordinator to pipeline-doctor: "
                f"{messages / elapsed:,.0f} round trips/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
                f"p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.1f} ms."
            )
            for junk in (b"\x00not an ACP frame", b"\xa2\x02\x05garbage"):
                await bus.send(Outgoing("pipeline-doctor", new_id(), junk))

            async def two_dead() -> None:
                while (await bus.stats("pipeline-doctor")).dead < 2:  # noqa: ASYNC110 - server state
                    await anyio.sleep(0.05)

            await _within(
                10,
                "the 2 broken frames did not reach the dead letters",
                lambda: _seen_of(bus, "pipeline-doctor"),
                two_dead,
            )
            letters = await bus.dead_letters("pipeline-doctor")
            say(
                f"3. Fed 2 broken frames straight to the queue: both in the dead letters "
                f"({', '.join(d.reason for d in letters)}); the worker kept going."
            )
            (report,) = report_box
            if "error" in report.body:
                raise Stalled(f"the pipeline monitor failed: {report.body}")
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
