"""Python function tools for Claude-backed agents (issue 16.1): a typed function is
offered with a schema from its signature, its input validated, its result given to
the model's next turn, and recorded so that a crash never runs a finished tool
again nor silently re-runs one whose outcome is unknown."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from pydantic import Field

from acp.agents import ClaudeAgent, tool
from acp.errors import ConfigError, Continue
from acp.protocol import Envelope
from acp.testing import TestContext
from tests.test_claude_agent import CONFIG, FakeAPI, message
from tests.test_delegation import ENGINEER, tool_use

pytestmark = pytest.mark.anyio

calls: list[dict[str, Any]] = []


@tool(idempotent=True)
async def pipeline_lag(component_id: str, window_minutes: int = 15) -> dict[str, Any]:
    """Processing lag of a pipeline component over the last minutes.

    Reads the metrics store; changes nothing."""
    calls.append({"lag": component_id, "window": window_minutes})
    return {"component_id": component_id, "lag_s": 42, "window_minutes": window_minutes}


@tool
def restart_consumer(component_id: str, replicas: int = Field(ge=1, le=8)) -> str:
    """Restart a component's stream consumers (not idempotent: it restarts them)."""
    calls.append({"restart": component_id, "replicas": replicas})
    return f"restarted {replicas} consumers of {component_id}"


def agent(api: FakeAPI) -> ClaudeAgent:
    return ClaudeAgent(
        ENGINEER, client=api.client(), config=CONFIG, tools=[pipeline_lag, restart_consumer]
    )


def step(*tools: tuple[str, dict[str, Any]]) -> httpx2.Response:
    return httpx2.Response(200, json=tool_use(*tools, model="claude-sonnet-5-5"))


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    param = pipeline_lag.param()
    assert param["name"] == "pipeline_lag"
    assert param["description"] == "Processing lag of a pipeline component over the last minutes."
    schema = param["input_schema"]
    assert schema["required"] == ["component_id"]
    assert schema["properties"]["window_minutes"]["default"] == 15
    assert restart_consumer.param()["input_schema"]["properties"]["replicas"]["maximum"] == 8
    assert pipeline_lag.idempotent
    assert not restart_consumer.idempotent

    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="docstring"):
        tool(undocumented)


async def test_a_tool_call_runs_and_its_result_is_the_next_turns_input() -> None:
    calls.clear()
    api = FakeAPI(step(("pipeline_lag", {"component_id": "etl"})))
    engineer = agent(api)
    env = Envelope.for_body({"cmd": "PIPELINE_STATUS"}, sender="t", recipient="data-engineer")
    records: dict[str, list[dict[str, Any]]] = {}
    offered = None
    with pytest.raises(Continue) as turn:
        await engineer.handle(env, TestContext(env, records=records))
    offered = json.loads(api.requests[0].content)["tools"]
    assert [t["name"] for t in offered] == ["pipeline_lag", "restart_consumer"]
    assert calls == [{"lag": "etl", "window": 15}]
    api.steps = [httpx2.Response(200, json=message('{"status": "lagging"}'))]
    nxt = env.evolve(headers=turn.value.state)
    body = await engineer.handle(nxt, TestContext(nxt, records=records))
    assert body is not None
    sent = json.loads(api.requests[-1].content)["messages"]
    result = sent[-1]["content"][0]
    assert result["type"] == "tool_result"
    assert json.loads(result["content"])["lag_s"] == 42
    assert result["is_error"] is False


async def test_bad_arguments_and_failures_are_tool_errors() -> None:
    calls.clear()
    api = FakeAPI(step(("restart_consumer", {"component_id": "etl", "replicas": 99})))
    engineer = agent(api)
    env = Envelope.for_body({"cmd": "FIX"}, sender="t", recipient="data-engineer")
    records: dict[str, list[dict[str, Any]]] = {}
    with pytest.raises(Continue):
        await engineer.handle(env, TestContext(env, records=records))
    (result,) = records[env.id][1]["content"]
    assert result["is_error"] is True
    assert "replicas" in result["content"]
    assert calls == [], "not run on invalid input"


async def test_a_finished_tool_is_not_run_again_and_an_interrupted_one_is_unknown() -> None:
    """The step delivered again after a crash: the finished restart's result is reused
    (it is not run twice); a restart whose worker died while it ran is reported as
    'outcome unknown', and is not run either."""
    calls.clear()
    restart = ("restart_consumer", {"component_id": "etl", "replicas": 2})
    api = FakeAPI(step(restart))
    engineer = agent(api)
    env = Envelope.for_body({"cmd": "FIX"}, sender="t", recipient="data-engineer")
    records: dict[str, list[dict[str, Any]]] = {}
    kept: dict[str, dict[str, bytes]] = {}
    with pytest.raises(Continue):
        await engineer.handle(env, TestContext(env, records=records, kept=kept))
    records[env.id].pop()  # as if the worker died before the user turn was recorded
    with pytest.raises(Continue):
        await engineer.handle(env, TestContext(env, records=records, kept=kept))
    assert calls == [{"restart": "etl", "replicas": 2}], "run once"
    (reused,) = records[env.id][1]["content"]
    assert "restarted 2 consumers" in reused["content"]
    # a second conversation whose restart was cut short: started, never finished
    calls.clear()
    other = Envelope.for_body({"cmd": "FIX"}, sender="t", recipient="data-engineer")
    interrupted: dict[str, dict[str, bytes]] = {f"{other.id}.1.tools": {"started.toolu_00": b"1"}}
    fresh: dict[str, list[dict[str, Any]]] = {}
    with pytest.raises(Continue):
        await engineer.handle(other, TestContext(other, records=fresh, kept=interrupted))
    (unknown,) = fresh[other.id][1]["content"]
    assert unknown["is_error"] is True
    assert "outcome unknown" in unknown["content"]
    assert calls == []
