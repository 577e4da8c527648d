"""Delegation benchmark: what one delegation hop adds to a request.

    python bench/delegation.py                  # 200 requests of each kind
    python bench/delegation.py --requests 500 --json

One process, its own embedded server, a coordinator and a worker, and the real
``anthropic`` SDK talking to an instant fake model (``httpx2.MockTransport``):
every model turn is answered at once, so what is measured is the runtime.
Requests go one at a time through the coordinator, as ``acp send --wait`` does:

* direct: a Claude-backed agent answers in one model turn (the baseline);
* delegating: the same agent delegates once on its first turn (its step is
  recorded and suspended, the child command is scheduled and answered by a
  Python agent, the answer resumes the parent), then answers on its second.

The difference is the runtime's cost of a hop: suspend, child, resume, and the
second model turn's scheduling. Figures are p50 and p95 of each kind, measured
in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from anywhere: make ``acp`` importable
    sys.path.insert(0, str(_ROOT))


from acp.agents import Agent, AgentDefinition, load_config  # noqa: E402
from acp.agents.claude import ClaudeAgent  # noqa: E402
from acp.runtime import Client, Coordinator, RedisBus, Worker  # noqa: E402
from acp.runtime.embedded import EmbeddedServer  # noqa: E402
from bench._fake_model import message, percentile, scripted_client  # noqa: E402

PARENT = AgentDefinition(
    name="planner",
    description="Plans work and asks the checker.",
    model="haiku",
    computational_complexity="low",
    system_prompt="You are the planner.",
    delegates_to=["checker"],
)
CHECKER = AgentDefinition(
    name="checker",
    description="Checks a component.",
    model="haiku",
    computational_complexity="low",
    entrypoint="bench.delegation:checker",
)

checker = Agent("checker", tier="haiku", complexity="low")


@checker.command("CHECK")
async def check(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"component_id": body.get("component_id"), "healthy": True}


def instant_model(request: httpx2.Request) -> httpx2.Response:
    """Delegate on the first turn when asked to, answer otherwise: at once."""
    body = json.loads(request.content)
    messages = body["messages"]
    asked = json.loads(messages[0]["content"])
    if asked.get("delegate") and len(messages) == 1:
        call = {
            "type": "tool_use",
            "id": "toolu_bench",
            "name": "delegate",
            "input": {"to": "checker", "body": {"cmd": "CHECK", "component_id": "etl"}},
        }
        return httpx2.Response(200, json=message([call], "tool_use"))
    return httpx2.Response(200, json=message([{"type": "text", "text": "done"}], "end_turn"))


async def run(url: str, requests: int) -> dict[str, Any]:
    config = load_config()
    client = scripted_client(instant_model)
    catalogue = {d.name: d for d in (PARENT, CHECKER)}
    planner = ClaudeAgent(PARENT, client=client, config=config, catalogue=catalogue)
    times: dict[str, list[float]] = {"direct": [], "delegating": []}
    async with (
        RedisBus.from_url(url) as worker_bus,
        RedisBus.from_url(url) as coordinator_bus,
        RedisBus.from_url(url) as client_bus,
        anyio.create_task_group() as tg,
    ):
        coordinator = Coordinator(coordinator_bus, config, definitions=catalogue)
        await tg.start(coordinator.run)
        worker = Worker(worker_bus, [planner, checker])
        await tg.start(worker.run)
        caller = Client(client_bus, sender="bench", via="coordinator")
        for n in range(requests + 20):  # the first 20 warm up
            for kind in ("direct", "delegating"):
                body = {"cmd": "PLAN", "n": n, "delegate": kind == "delegating"}
                started = time.perf_counter()
                await caller.request("planner", body, timeout=30)
                if n >= 20:
                    times[kind].append((time.perf_counter() - started) * 1000)
        worker.stop()
        coordinator.stop()
    out: dict[str, Any] = {"requests": requests}
    for kind, samples in times.items():
        out[kind] = {
            "p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(percentile(samples, 0.95), 2),
        }
    out["added_p50_ms"] = round(out["delegating"]["p50_ms"] - out["direct"]["p50_ms"], 2)
    out["added_p95_ms"] = round(out["delegating"]["p95_ms"] - out["direct"]["p95_ms"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with EmbeddedServer() as server:
        result = anyio.run(run, server.url, args.requests)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'':28}{'p50 ms':>10}{'p95 ms':>10}")
    for kind, label in (
        ("direct", "direct (one model turn)"),
        ("delegating", "one delegation hop"),
    ):
        print(f"{label:28}{result[kind]['p50_ms']:>10}{result[kind]['p95_ms']:>10}")
    print(f"{'added by the hop':28}{result['added_p50_ms']:>10}{result['added_p95_ms']:>10}")
    print(f"{args.requests} requests of each kind, one at a time, through the coordinator")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
