"""``acp tail`` follows messages as they flow, without consuming them."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from test_cli_worker import ACP, ROOT, acp, env_for


def test_tail_prints_each_message_as_it_arrives(redis_url: str) -> None:
    acp(redis_url, "send", "data-engineer", "--json", '{"cmd": "WARM_UP"}')  # the queue exists
    tail = subprocess.Popen(
        [*ACP, "tail", "--agent", "data-engineer"], cwd=ROOT, env=env_for(redis_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        body = {"cmd": "PIPELINE_STATUS", "component_id": "etl"}
        sent = acp(redis_url, "send", "data-engineer", "--json", json.dumps(body))
        assert sent.returncode == 0, sent.stderr
        time.sleep(1.5)
    finally:
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=20)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [m["body"] for m in lines] == [body], err
    assert lines[0]["to"] == "data-engineer"
    assert lines[0]["from"] == "cli"


def test_tail_human_shows_a_delegation_and_its_answer(redis_url: str) -> None:
    import redis as redis_py

    from acp.agents.delegation import child_command
    from acp.protocol import Envelope, WireCodec
    from acp.runtime.bus.base import Outgoing
    from acp.runtime.keys import Keys

    parent = Envelope.for_body({"cmd": "PLAN"}, sender="cli", recipient="planner")
    child = child_command(parent, "planner", "checker", {"cmd": "CHECK"}, "conv.1", "toolu_1")
    answer = child.reply({"healthy": True})
    acp(redis_url, "send", "checker", "--json", '{"cmd": "WARM_UP"}')
    acp(redis_url, "send", "planner", "--json", '{"cmd": "WARM_UP"}')
    tail = subprocess.Popen(
        [*ACP, "tail", "--agent", "checker", "--agent", "planner", "--human"], cwd=ROOT,
        env=env_for(redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        client = redis_py.Redis.from_url(redis_url)
        codec = WireCodec()
        for env, dest in ((child, "checker"), (answer, "planner")):
            item = Outgoing(dest, env.id, codec.encode(env))
            client.xadd(Keys(dest).stream, {"m": item.msg_id, "f": item.frame})
        client.close()
        time.sleep(1.5)
    finally:
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=20)
    assert f"checker's queue; delegated by planner (tree {parent.id})" in out, out + err
    assert f"planner's queue; answer to planner (tree {parent.id})" in out


def test_tail_human_shows_tool_calls_even_before_any_queue_exists(redis_url: str) -> None:
    """Tool calls are events on the tools topic, not messages: tail follows them too,
    and waits for queues to exist instead of failing on a fresh server."""
    import anyio

    from acp.protocol import Envelope, WireCodec
    from acp.runtime import RedisBus
    from acp.runtime.keys import TOOLS_TOPIC

    tail = subprocess.Popen(
        [*ACP, "tail", "--human"], cwd=ROOT, env=env_for(redis_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    call = {"agent": "stock-keeper", "tool": "mcp__inventory__stock", "call_id": "toolu_1",
            "duration_ms": 2.4, "outcome": "ok"}  # fmt: skip

    async def report() -> None:
        async with RedisBus.from_url(redis_url) as bus:
            env = Envelope.for_body({"tool_call": call, "msg_id": "m-1"}, sender="stock-keeper",
                                    recipient=TOOLS_TOPIC)  # fmt: skip
            await bus.publish(TOOLS_TOPIC, WireCodec().encode(env))

    try:
        time.sleep(2.5)
        anyio.run(report)
        time.sleep(1.5)
    finally:
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=20)
    assert out.strip() == (
        "-- tool call: stock-keeper ran mcp__inventory__stock: ok in 2.4 ms (message m-1)"
    ), err
