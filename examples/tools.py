"""A Claude-backed agent with one Python tool and one MCP server, end to end, with no
API key.

    python examples/tools.py             # on a private embedded server
    python examples/tools.py memory      # on the in-memory bus

The stock-keeper (``examples/tools/stock-keeper.md``) lists ``reorder_point`` (a
typed Python function, below) and ``mcp__inventory__stock`` (a tool of the MCP
server ``examples/tools/inventory_server.py``, started by the worker over stdio) in
its ``tools:``. The model is scripted (the real ``anthropic`` SDK over
``httpx2.MockTransport``): its first turn calls both tools, its second answers from
their results. Everything between is the runtime: the worker runs the tools,
records their results before the next turn, and reports each call; the script ends
with the calls as ``acp trace`` lists them.
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any

import anthropic
import anyio
import httpx2
from pydantic import Field

from acp.agents import (
    ClaudeAgent,
    McpServerConfig,
    Toolbox,
    ToolsConfig,
    load_catalogue,
    load_config,
    tool,
)
from acp.runtime import Client, Coordinator, MemoryBroker, MemoryBus, RedisBus, Worker
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.trace import read_trace

HERE = Path(__file__).resolve().parent / "tools"
REORDER_POINTS = {"A1": 20, "B7": 100, "C3": 5}


@tool(idempotent=True)
def reorder_point(sku: Annotated[str, Field(pattern=r"^[A-Z]\d+$")]) -> dict[str, Any]:
    """The stock level below which a product is reordered."""
    return {"sku": sku, "reorder_point": REORDER_POINTS.get(sku, 0)}


def scripted_model(request: httpx2.Request) -> httpx2.Response:
    """Turn 1: call both tools. Turn 2: answer from what they returned."""
    body = json.loads(request.content)
    messages = body["messages"]
    sku = json.loads(messages[0]["content"])["sku"]
    if len(messages) == 1:
        calls = [
            {"type": "tool_use", "id": "toolu_stock", "name": "mcp__inventory__stock",
             "input": {"sku": sku}},
            {"type": "tool_use", "id": "toolu_point", "name": "reorder_point",
             "input": {"sku": sku}},
        ]  # fmt: skip
        return _answer(body["model"], calls, "tool_use")
    results = {r["tool_use_id"]: json.loads(r["content"]) for r in messages[-1]["content"]}
    units = results["toolu_stock"]["units"]
    point = results["toolu_point"]["reorder_point"]
    answer = {"sku": sku, "units": units, "reorder_point": point, "reorder": units < point}
    return _answer(body["model"], [{"type": "text", "text": json.dumps(answer)}])


def _answer(model: str, content: list[dict[str, Any]], stop: str = "end_turn") -> httpx2.Response:
    return httpx2.Response(200, json={
        "id": "msg_example", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": 700, "output_tokens": 90},
    })  # fmt: skip


async def main(backend: str) -> None:
    config = load_config()
    catalogue = load_catalogue(HERE).definitions
    client = anthropic.AsyncAnthropic(
        api_key="sk-ant-example",
        base_url="http://anthropic.example",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(scripted_model)),
    )
    # what [tools] in runtime/acp.toml would say: the MCP server, the Python tool
    server = McpServerConfig(command=sys.executable, args=[str(HERE / "inventory_server.py")])
    toolbox = Toolbox(ToolsConfig(mcp={"inventory": server}), functions=[reorder_point])
    keeper = ClaudeAgent(catalogue["stock-keeper"], client=client, config=config, toolbox=toolbox)
    async with AsyncExitStack() as stack:
        if backend == "memory":
            broker = MemoryBroker()
            buses = [await stack.enter_async_context(MemoryBus(broker)) for _ in range(3)]
        else:
            embedded = await stack.enter_async_context(EmbeddedServer())
            buses = [
                await stack.enter_async_context(RedisBus.from_url(embedded.url)) for _ in range(3)
            ]
        tg = await stack.enter_async_context(anyio.create_task_group())
        coordinator = Coordinator(buses[0], config, definitions=catalogue)
        await tg.start(coordinator.run)
        worker = Worker(buses[1], [keeper])
        await tg.start(worker.run)
        caller = Client(buses[2], sender="warehouse-bot", via="coordinator")
        for sku in ("A1", "B7"):
            request = {"cmd": "REORDER_CHECK", "sku": sku, "respond_format": "STRUCTURED_JSON"}
            reply = await caller.request("stock-keeper", request, timeout=30)
            answer = {k: v for k, v in reply.body.items() if k != "_acp"}
            print(f"{backend}: stock-keeper says {json.dumps(answer)}")
            tree = await read_trace(buses[2], reply.correlation_id or "")
            tree.meta, tree.outcome = reply.body["_acp"], "answered"
            print("\n".join(tree.render()))
        server_starts = toolbox.mcp.servers["inventory"].starts if toolbox.mcp else 0
        print(f"MCP server started {server_starts} time(s) for both requests")
        worker.stop()
        coordinator.stop()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "redis")
