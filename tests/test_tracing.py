"""With an OpenTelemetry SDK configured, each hop is a span of the sender's trace,
carrying agent, command, tier, tokens and cost."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fake_anthropic import FakeAnthropic
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from acp.agents import AgentDefinition, ClaudeAgent, claude_client, load_config
from acp.runtime.bus import MemoryBroker, MemoryBus
from acp.runtime.client import Client, new_traceparent
from acp.runtime.coordinator import Coordinator
from acp.runtime.worker import Worker

pytestmark = pytest.mark.anyio
EXPORTER = InMemorySpanExporter()
# the global provider can be set once per process: this module owns it
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)

AUDITOR = AgentDefinition(
    name="stream-auditor", description="Audits streams.", model="sonnet", computational_complexity="medium",
    system_prompt="You audit streaming pipelines and answer in JSON.",
)  # fmt: skip


async def test_each_hop_is_a_child_span_of_the_senders_trace() -> None:
    EXPORTER.clear()
    config = load_config(env={})
    broker = MemoryBroker()
    with FakeAnthropic() as api:
        agent = ClaudeAgent(
            AUDITOR, client=claude_client(api_key="t", base_url=api.url), config=config
        )
        async with MemoryBus(broker) as a, MemoryBus(broker) as b, MemoryBus(broker) as c:
            coordinator = Coordinator(
                a, config, definitions={AUDITOR.name: AUDITOR}, registry_interval=0.05
            )
            worker = Worker(b, [agent], heartbeat=0.1)
            async with anyio.create_task_group() as tg:
                await tg.start(coordinator.run)
                await tg.start(worker.run)
                await coordinator.has_led.wait()
                await anyio.sleep(0.3)  # the coordinator has seen the worker
                traceparent = new_traceparent()
                body: dict[str, Any] = {"cmd": "AUDIT", "component_id": "clickstream"}
                reply = await Client(c).request(
                    AUDITOR.name, body, timeout=20, traceparent=traceparent
                )
                worker.stop()
                coordinator.stop()
                tg.cancel_scope.cancel()
    trace_id = traceparent.split("-")[1]
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    admit, handle = spans["coordinator admit"], spans["stream-auditor AUDIT"]
    assert format(admit.context.trace_id, "032x") == trace_id
    assert format(handle.context.trace_id, "032x") == trace_id
    assert handle.parent is not None
    assert handle.parent.span_id == admit.context.span_id
    assert handle.attributes is not None
    assert handle.attributes["acp.agent"] == "stream-auditor"
    assert handle.attributes["acp.command"] == "AUDIT"
    assert handle.attributes["acp.tier"] == "sonnet"
    assert handle.attributes["acp.tokens.output_tokens"] == 60
    assert handle.attributes["acp.cost_usd"] == reply.body["_acp"]["cost_usd"]
    assert reply.traceparent is not None
    assert reply.traceparent.split("-")[1] == trace_id


async def test_a_delegated_commands_span_nests_under_its_parents() -> None:
    """Delegations carry the delegating hop's span: the child's hop is its child."""
    from acp.agents import Agent

    EXPORTER.clear()
    config = load_config(env={})
    lead_def = AgentDefinition(name="lead", description="Asks.", model="haiku",
                               entrypoint="tests.agents:x")  # fmt: skip
    helper_def = AgentDefinition(name="helper", description="Answers.", model="haiku",
                                 entrypoint="tests.agents:x")  # fmt: skip
    lead = Agent("lead", tier="haiku", complexity="low")
    helper = Agent("helper", tier="haiku", complexity="low")

    @lead.command("ASK")
    async def ask(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        (answer,) = await ctx.delegate([("helper", {"cmd": "HELP"})])
        return answer

    @helper.command("HELP")
    async def help_(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"helped": True}

    broker = MemoryBroker()
    async with MemoryBus(broker) as a, MemoryBus(broker) as b, MemoryBus(broker) as c:
        definitions = {"lead": lead_def, "helper": helper_def}
        coordinator = Coordinator(a, config, definitions=definitions, registry_interval=0.05)
        worker = Worker(b, [lead, helper], heartbeat=0.1)
        async with anyio.create_task_group() as tg:
            await tg.start(coordinator.run)
            await tg.start(worker.run)
            await coordinator.has_led.wait()
            reply = await Client(c, via="coordinator").request(
                "lead", {"cmd": "ASK"}, timeout=20, traceparent=new_traceparent()
            )
            worker.stop()
            coordinator.stop()
            tg.cancel_scope.cancel()
    assert reply.body == {"helped": True}
    spans = EXPORTER.get_finished_spans()
    asks = [s for s in spans if s.name == "lead ASK"]
    (helps,) = [s for s in spans if s.name == "helper HELP"]
    (admitted,) = [s for s in spans if s.name == "coordinator admit"
                   and helps.parent and s.context.span_id == helps.parent.span_id]  # fmt: skip
    assert admitted.parent is not None
    assert admitted.parent.span_id in {s.context.span_id for s in asks}, "under the lead's hop"


async def test_a_tool_call_is_a_span_under_its_hop_and_a_metric() -> None:
    """Each tool call of an agent loop: a span nested under the hop that ran it, and
    the worker's acp_tool_calls_total and acp_tool_call_seconds."""
    from acp.agents import tool
    from acp.runtime.metrics import Metrics

    @tool(idempotent=True)
    def lag(component_id: str) -> dict[str, Any]:
        """Processing lag of a component."""
        return {"component_id": component_id, "lag_s": 3}

    def answer(request: dict[str, Any], number: int) -> str | dict[str, Any] | None:
        if len(request["messages"]) > 1:
            return '{"done": true}'
        call = {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "lag",
            "input": {"component_id": "etl"},
        }
        return {"content": [call], "stop_reason": "tool_use"}

    EXPORTER.clear()
    config = load_config(env={})
    broker = MemoryBroker()
    metrics = Metrics()
    with FakeAnthropic(answer=answer) as api:
        client = claude_client(api_key="t", base_url=api.url)
        agent = ClaudeAgent(AUDITOR, client=client, config=config, tools=[lag])
        async with MemoryBus(broker) as b, MemoryBus(broker) as c:
            worker = Worker(b, [agent], heartbeat=0.1, metrics=metrics)
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                body = {"cmd": "AUDIT", "respond_format": "STRUCTURED_JSON"}
                reply = await Client(c).request(AUDITOR.name, body, timeout=20)
                worker.stop()
                tg.cancel_scope.cancel()
    assert reply.body["done"] is True
    spans = EXPORTER.get_finished_spans()
    used = next(s for s in spans if s.name == "tool lag")
    assert used.parent is not None
    hop = next(s for s in spans if s.context.span_id == used.parent.span_id)
    assert hop.name == "stream-auditor AUDIT"
    assert used.attributes is not None
    assert used.attributes["acp.outcome"] == "ok"
    assert used.attributes["acp.agent"] == "stream-auditor"
    text = await metrics.render()
    assert 'acp_tool_calls_total{agent="stream-auditor",outcome="ok",tool="lag"} 1' in text
    assert 'acp_tool_call_seconds_count{agent="stream-auditor",tool="lag"} 1' in text
