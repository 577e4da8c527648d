"""A release orchestrator (opus) that asks a pipeline engineer (sonnet) and an incident
triage agent (haiku) before deciding, end to end, with no API key.

    python examples/delegation.py            # on a private embedded server
    python examples/delegation.py memory     # on the in-memory bus

The definitions are in ``examples/delegation/``. The model is scripted (the real
``anthropic`` SDK over ``httpx2.MockTransport``): the orchestrator's first turn
calls ``delegate`` twice, its second decides from the two answers; the
specialists answer at once. Everything else is the runtime: the coordinator
schedules each turn and each delegated command by tier, the orchestrator is
suspended while the specialists work, and their answers resume it. The script
ends with the tree as ``acp trace`` prints it.
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2

from acp.agents import load_catalogue, load_config
from acp.agents.claude import ClaudeAgent
from acp.runtime import Client, Coordinator, MemoryBroker, MemoryBus, RedisBus, Worker
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.trace import read_trace

HERE = Path(__file__).resolve().parent / "delegation"


def scripted_model(request: httpx2.Request) -> httpx2.Response:
    """What each agent's model says, by the system prompt it was given."""
    body = json.loads(request.content)
    system = " ".join(block["text"] for block in body["system"])
    messages = body["messages"]
    asked = json.loads(messages[0]["content"])
    if "coordinate releases" in system and len(messages) == 1:
        components = asked["components"]
        content: list[dict[str, Any]] = [
            {"type": "tool_use", "id": "toolu_pipelines", "name": "delegate", "input": {
                "to": "pipeline-engineer",
                "body": {"cmd": "PIPELINE_STATUS", "component_id": components[0],
                         "respond_format": "STRUCTURED_JSON"}}},
            {"type": "tool_use", "id": "toolu_incidents", "name": "delegate", "input": {
                "to": "incident-triage",
                "body": {"cmd": "OPEN_INCIDENTS", "components": components,
                         "respond_format": "STRUCTURED_JSON"}}},
        ]  # fmt: skip
        return _answer(body["model"], content, "tool_use")
    if "coordinate releases" in system:
        answers = [json.loads(b["content"]) for b in messages[-1]["content"]]
        healthy = all(a.get("healthy", True) for a in answers)
        blocking = any(a.get("blocking") for a in answers)
        decision = {
            "version": asked["version"],
            "decision": "ship" if healthy and not blocking else "hold",
            "reasons": ["pipelines healthy" if healthy else "a pipeline is degraded",
                        "an incident blocks" if blocking else "no blocking incident"],
        }  # fmt: skip
        return _answer(body["model"], [{"type": "text", "text": json.dumps(decision)}])
    if "data pipelines" in system:
        status = {"component_id": asked["component_id"], "healthy": True, "lag": "40s",
                  "quality_score": 0.98}  # fmt: skip
        return _answer(body["model"], [{"type": "text", "text": json.dumps(status)}])
    triage = {"open": [{"id": "INC-311", "severity": "sev3"}], "blocking": False}
    return _answer(body["model"], [{"type": "text", "text": json.dumps(triage)}])


def _answer(model: str, content: list[dict[str, Any]], stop: str = "end_turn") -> httpx2.Response:
    return httpx2.Response(200, json={
        "id": "msg_example", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": 900, "output_tokens": 120},
    })  # fmt: skip


async def main(backend: str) -> None:
    config = load_config()
    catalogue = load_catalogue(HERE).definitions
    client = anthropic.AsyncAnthropic(
        api_key="sk-ant-example",
        base_url="http://anthropic.example",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(scripted_model)),
    )
    agents = [
        ClaudeAgent(d, client=client, config=config, catalogue=catalogue)
        for d in catalogue.values()
    ]
    async with AsyncExitStack() as stack:
        if backend == "memory":
            broker = MemoryBroker()
            buses = [await stack.enter_async_context(MemoryBus(broker)) for _ in range(3)]
        else:
            server = await stack.enter_async_context(EmbeddedServer())
            buses = [
                await stack.enter_async_context(RedisBus.from_url(server.url)) for _ in range(3)
            ]
        tg = await stack.enter_async_context(anyio.create_task_group())
        coordinator = Coordinator(buses[0], config, definitions=catalogue)
        await tg.start(coordinator.run)
        worker = Worker(buses[1], agents)
        await tg.start(worker.run)
        caller = Client(buses[2], sender="release-bot", via="coordinator")
        request = {"cmd": "RELEASE_CHECK", "version": "4.2.0", "components": ["orders-etl"],
                   "respond_format": "STRUCTURED_JSON"}  # fmt: skip
        reply = await caller.request("release-orchestrator", request, timeout=30)
        decision = {k: v for k, v in reply.body.items() if k != "_acp"}
        print(f"{backend}: release-orchestrator says {json.dumps(decision)}")
        tree = await read_trace(buses[2], reply.correlation_id or "")
        tree.meta, tree.outcome = reply.body["_acp"], "answered"
        print("\n".join(tree.render()))
        print(f"tree cost ${tree.total_cost():.4f}")
        worker.stop()
        coordinator.stop()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "redis")
