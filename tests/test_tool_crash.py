"""A worker that dies in the middle of a turn's tool calls (issue 16): a real ``acp
worker`` process, a real server, the loopback fake API, a Python tool and an MCP
tool registered in the runtime config. The turn asks for three calls: ship an order
(Python, not idempotent), reserve stock (MCP), and a tool that SIGKILLs its own
worker the first time. After the restart the turn is not paid again, the order is
not shipped twice, the stock not reserved twice, and the call that was cut off is
reported to the model as "outcome unknown" instead of being run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from acp.protocol import WireCodec
from acp.runtime import Client, RedisBus
from acp.runtime.keys import TOOLS_TOPIC
from acp.runtime.trace import read_trace
from tests.fake_anthropic import FakeAnthropic
from tests.test_tools import config_with_tools

ROOT = Path(__file__).resolve().parents[1]

SHIPPER = """---
name: shipper
description: Ships orders and reserves their stock.
model: haiku
computational_complexity: low
tools: [ship_order, mcp__inventory__reserve, checkpoint]
---
You are the shipper. Reply in compact JSON.
"""

TOOLS = '''
import os, signal
from pathlib import Path
from acp.agents import tool

@tool
def ship_order(order_id: str) -> str:
    """Ship an order to its customer (not idempotent: it ships)."""
    with open(os.environ["SHIP_LOG"], "a") as log:
        log.write(order_id + "\\n")
    return "shipped " + order_id

@tool
def checkpoint() -> str:
    """Record a checkpoint (the first one ever kills its worker)."""
    marker = Path(os.environ["SHIP_LOG"] + ".killed")
    if not marker.exists():
        marker.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return "checkpoint"
'''


def answer(request: dict[str, Any], number: int) -> str | dict[str, Any] | None:
    messages = request["messages"]
    if len(messages) == 1:
        calls = [("ship_order", {"order_id": "o-17"}),
                 ("mcp__inventory__reserve", {"sku": "A1", "units": 2}),
                 ("checkpoint", {})]  # fmt: skip
        content = [{"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": args}
                   for n, (name, args) in enumerate(calls)]  # fmt: skip
        return {"content": content, "stop_reason": "tool_use"}
    results = {r["tool_use_id"]: r for r in messages[-1]["content"]}
    return json.dumps({"results": {k: [r["is_error"], r["content"]] for k, r in results.items()}})


@pytest.mark.timeout(120)
def test_a_recorded_tool_is_not_run_again_and_a_cut_one_is_unknown(
    redis_url: str, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "shipper.md").write_text(SHIPPER)
    (tmp_path / "shiptools.py").write_text(TOOLS)
    config = tmp_path / "acp.toml"
    config.write_text(config_with_tools(
        'python = { ship_order = "shiptools:ship_order", checkpoint = "shiptools:checkpoint" }',
        tables=f"\n[tools.mcp.inventory]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(ROOT / 'tests' / 'mcp_inventory.py'))}]\n"
        f"env = {{ INVENTORY_LOG = {json.dumps(str(tmp_path / 'reserved.log'))} }}\n",
    ))  # fmt: skip
    ship_log = tmp_path / "shipped.log"
    with FakeAnthropic(answer=answer) as api:
        env = {
            **os.environ,
            "ACP_REDIS_URL": redis_url,
            "ACP_CONFIG": str(config),
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": api.url,
            "SHIP_LOG": str(ship_log),
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        }
        cmd = [sys.executable, "-m", "acp", "worker", "shipper", "--agents", str(agents),
               "--name", "w1"]  # fmt: skip
        log = (tmp_path / "worker.log").open("ab")
        worker = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:

            async def send() -> str:
                async with RedisBus.from_url(redis_url) as bus:
                    client = Client(bus, sender="tester", via="direct")
                    body = {"cmd": "SHIP", "order_id": "o-17", "respond_format": "STRUCTURED_JSON"}
                    return (await client.send("shipper", body)).id

            sent = anyio.run(send)
            assert worker.wait(timeout=60) == -9, "the checkpoint kills the worker"
            worker = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)

            async def outcome() -> tuple[dict[str, Any], list[Any], list[Any]]:
                async with RedisBus.from_url(redis_url) as bus:
                    result = await Client(bus, sender="tester").result(sent, wait=60)
                    assert result.reply is not None, f"no reply: {result}"
                    trace = await read_trace(bus, sent)
                    events = []
                    with anyio.move_on_after(2):
                        async for event in bus.subscribe(TOOLS_TOPIC, after="0-0"):
                            events.append(WireCodec().decode(event.frame).body["tool_call"])
                            if len(events) == 3:
                                break
                    return result.reply.body, trace.tools, events

            body, traced, events = anyio.run(outcome)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()
        calls = [(t["tool"], t["outcome"]) for t in traced]
        assert calls == [("ship_order", "ok"), ("mcp__inventory__reserve", "ok"),
                         ("checkpoint", "unknown")]  # fmt: skip
        assert [(e["tool"], e["outcome"]) for e in events] == calls
        results = body["results"]
        assert results["toolu_0"] == [False, '{"result":"shipped o-17"}']
        assert results["toolu_1"][0] is False
        assert "reserved 2 of A1" in results["toolu_1"][1]
        assert results["toolu_2"][0] is True
        assert "outcome unknown" in results["toolu_2"][1]
        assert ship_log.read_text() == "o-17\n", "shipped once"
        assert (tmp_path / "reserved.log").read_text() == "A1 2\n", "reserved once"
        first_turns = [r for r in api.requests if len(r["body"]["messages"]) == 1]
        assert len(first_turns) == 1, "the recorded turn was not paid for again"
