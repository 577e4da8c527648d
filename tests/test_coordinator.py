"""The coordinator on real buses: routing, caps seen from the API, parked work,
budgets, restarts and failover."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from fake_anthropic import FakeAnthropic

from acp.agents import (
    Agent,
    AgentDefinition,
    ClaudeAgent,
    Context,
    RuntimeConfig,
    claude_client,
    load_catalogue,
    load_config,
)
from acp.agents.config import ToolsConfig
from acp.catalogue import shipped_agents
from acp.catalogue.pipeline_doctor import agent as doctor_agent
from acp.protocol import Envelope, MessageKind, PipelineStatusCommand
from acp.runtime.bus import Bus, BusOptions, MemoryBus
from acp.runtime.client import Client
from acp.runtime.coordinator import Coordinator, _Live
from acp.runtime.dispatches import Reservation
from acp.runtime.keys import COORDINATOR_EVENTS_TOPIC as EVENTS_TOPIC
from acp.runtime.keys import INTAKE, intake_queue, intake_queues
from acp.runtime.processor import current_delivery
from acp.runtime.tracing import tracing
from acp.runtime.worker import Worker

pytestmark = pytest.mark.anyio
BUS_OPTIONS = BusOptions(min_idle=3.0, reclaim_interval=0.1)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]
AUDITOR = AgentDefinition(
    name="stream-auditor", description="Audits streams.", model="sonnet", computational_complexity="medium",
    system_prompt="You audit streaming pipelines and answer in JSON.",
)  # fmt: skip
PIPELINE = {"cmd": "PIPELINE_STATUS", "component_id": "etl", "data_flow": {"quality_score": 0.5}}
#: known to the coordinator (so its work is parked, not refused, while no worker runs)
DOCTOR = load_catalogue(shipped_agents()).get("pipeline-doctor")


def config(**overrides: Any) -> RuntimeConfig:
    env = {f"ACP_{k.upper()}": str(v) for k, v in overrides.items()}
    return load_config(env=env)


class Recording(ClaudeAgent):
    """A Claude agent that keeps every envelope it is handed (as dispatched to it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Envelope] = []

    async def handle(self, env: Any, ctx: Context) -> dict[str, Any] | None:
        self.seen.append(env)
        return await super().handle(env, ctx)


def auditor(api: FakeAnthropic, cfg: RuntimeConfig) -> ClaudeAgent:
    return ClaudeAgent(AUDITOR, client=claude_client(api_key="test", base_url=api.url), config=cfg)


@asynccontextmanager
async def coordinator(
    make_bus: MakeBus, cfg: RuntimeConfig, **kw: Any
) -> AsyncIterator[Coordinator]:
    async with make_bus() as bus, anyio.create_task_group() as tg:
        coord = Coordinator(
            bus,
            cfg,
            definitions=kw.pop(
                "definitions", {"stream-auditor": AUDITOR, "pipeline-doctor": DOCTOR}
            ),
            lease_ttl=1.0,
            status_interval=0.5,
            registry_interval=0.1,
            **kw,
        )
        await tg.start(coord.run)
        with anyio.fail_after(5):
            while not coord.leading:
                await anyio.sleep(0.02)
        yield coord
        coord.stop()
        tg.cancel_scope.cancel()


@asynccontextmanager
async def worker(make_bus: MakeBus, *agents: Any) -> AsyncIterator[Worker]:
    async with make_bus() as bus, anyio.create_task_group() as tg:
        w = Worker(bus, list(agents), heartbeat=0.2, grace=1)
        await tg.start(w.run)
        yield w
        w.stop()


async def test_python_agent_work_goes_through_the_coordinator(make_bus: MakeBus) -> None:
    async with (
        coordinator(make_bus, config()) as coord,
        worker(make_bus, doctor_agent),
        make_bus() as bus,
    ):
        client = Client(bus)
        reply = await client.request("pipeline-doctor", PIPELINE, timeout=10)
        assert client._intake is True
        assert reply.body["healthy"] is False
        stats = await coord.bus.stats(INTAKE)
        assert (stats.ready, stats.pending) == (0, 0)


async def test_a_python_agents_command_reaches_it_as_the_client_sent_it(
    make_bus: MakeBus,
) -> None:
    """A forward that needs no decision leaves the coordinator byte for byte as it came:
    no header is added, so it is not sealed, encoded or read slowly a second time."""
    frames: list[bytes] = []
    echo = Agent("frame-echo", tier="haiku", complexity="low")

    @echo.command("ECHO")
    async def answer(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        frames.append(current_delivery.get().frame)
        return {"headers": dict(ctx.envelope.headers)}

    async with coordinator(make_bus, config()), worker(make_bus, echo), make_bus() as bus:
        client = Client(bus, via="coordinator")
        env = client.command("frame-echo", {"cmd": "ECHO"}, reply=True, timeout=10)
        reply = await client.request_envelope(env, timeout=10)
    sent = client.codec.encode(env)
    if not tracing():  # with a tracer the forward carries the coordinator's span, unsealed
        assert frames == [sent]
    got, expected = (client.codec.decode(f).model_dump() for f in (frames[0], sent))
    assert got.pop("traceparent")[:35] == expected.pop("traceparent")[:35]  # same trace
    assert got == expected  # no header added, the client's tag kept
    assert reply.body == {"headers": {}}


async def test_a_dispatch_for_model_capacity_carries_the_age_and_the_reservation(
    make_bus: MakeBus,
) -> None:
    """What a Python agent's forward leaves out, a Claude agent's dispatch carries: the
    server time its chain first reached the coordinator (its later steps keep it) and
    what the coordinator reserved for it."""
    cfg = config()
    with FakeAnthropic() as api:
        agent = Recording(AUDITOR, client=claude_client(api_key="test", base_url=api.url),
                          config=cfg)  # fmt: skip
        async with (
            coordinator(make_bus, cfg) as coord,
            worker(make_bus, agent),
            make_bus() as bus,
        ):
            before = coord.now()
            body = {"cmd": "AUDIT", "component_id": "c1"}
            reply = await Client(bus).request("stream-auditor", body, timeout=30)
            after = coord.now()
    assert reply.kind is MessageKind.REPLY
    [headers] = [env.headers for env in agent.seen]
    assert before - 0.05 <= float(headers["acp-since"]) <= after + 0.05
    assert "acp-res" in headers


async def test_a_dispatch_reserves_what_its_server_tools_may_cost(make_bus: MakeBus) -> None:
    """An agent offered web search may run ``web_max_uses`` searches in a turn, billed
    per use: its dispatch reserves their price beside the tokens' (it reserved the
    tokens only, so searches could take a budget past its limit). What the worker
    offers decides it (it announces the price), whatever the coordinator's own
    ``[tools]`` say."""
    searcher = AUDITOR.model_copy(update={"tools": ["WebSearch"]})

    def with_search(on: bool) -> RuntimeConfig:
        return config().model_copy(update={"tools": ToolsConfig(web_search=on)})

    async def reserved(coordinator_search: bool, worker_search: bool) -> float:
        cfg = with_search(worker_search)
        with FakeAnthropic() as api:
            agent = Recording(searcher, client=claude_client(api_key="test", base_url=api.url),
                              config=cfg)  # fmt: skip
            async with (
                coordinator(make_bus, with_search(coordinator_search)),
                worker(make_bus, agent),
                make_bus() as bus,
            ):
                await Client(bus).request("stream-auditor", {"cmd": "AUDIT"}, timeout=30)
        [env] = agent.seen
        reservation = Reservation.of(env)
        assert reservation is not None
        return reservation.cost_usd

    tokens = await reserved(False, False)
    five_searches = 5 * 10.0 / 1000
    assert await reserved(True, True) - tokens == pytest.approx(five_searches)
    assert await reserved(False, True) - tokens == pytest.approx(five_searches)
    assert await reserved(True, False) == pytest.approx(tokens)


def test_a_worker_that_does_not_announce_its_server_tools_is_priced_by_the_coordinator() -> None:
    """Workers older than the announcement: the coordinator's own ``[tools]`` price
    the definition."""
    searcher = AUDITOR.model_copy(update={"tools": ["WebSearch"]})
    cfg = config().model_copy(update={"tools": ToolsConfig(web_search=True, web_max_uses=3)})
    coord = Coordinator(MemoryBus(), cfg)
    silent = _Live(kind="claude", tier="sonnet", complexity="medium", workers=1)
    assert coord._server_tools_usd(searcher, silent) == pytest.approx(3 * 10.0 / 1000)
    assert coord._server_tools_usd(None, silent) == 0.0
    told = _Live(kind="claude", tier="sonnet", complexity="medium", workers=1,
                 server_tools_usd=0.0)  # fmt: skip
    assert coord._server_tools_usd(searcher, told) == 0.0


async def test_a_coordinator_that_starts_later_is_used_at_once_by_workers_and_clients(
    make_bus: MakeBus,
) -> None:
    """Work sent while no coordinator runs goes straight to the agent; once one starts,
    a running worker's commands (told by the coordinator, not at its next heartbeat) and
    a long-lived client's requests (after ``recheck``) go through it."""
    handoff = Envelope.for_body(PIPELINE, sender="pipeline-doctor", recipient="stream-auditor")
    async with make_bus() as worker_bus, make_bus() as bus, anyio.create_task_group() as tg:
        w = Worker(worker_bus, [doctor_agent], heartbeat=60)
        await tg.start(w.run)
        client = Client(bus, recheck=0.3)
        await client.request("pipeline-doctor", PIPELINE, timeout=10)
        assert (client._intake, w.route(handoff)) == (False, "stream-auditor")
        async with coordinator(make_bus, config()):
            with anyio.fail_after(3):
                while w.route(handoff) != INTAKE:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)
            reply = await client.request("pipeline-doctor", PIPELINE, timeout=10)
            assert client._intake is True
            assert reply.body["healthy"] is False
        w.stop()
        tg.cancel_scope.cancel()


async def test_assign_is_routed_to_the_agent_named_in_to(make_bus: MakeBus) -> None:
    async with coordinator(make_bus, config()), worker(make_bus, doctor_agent), make_bus() as bus:
        body = {"cmd": "ASSIGN", "to": "pipeline-doctor", "component_id": "etl"}
        reply = await Client(bus).request("project-orchestrator", body, timeout=10)
    assert reply.sender == "pipeline-doctor"
    assert reply.body["error"] == "unknown_command"  # the doctor got it (and does not do ASSIGN)


async def test_a_tier_concurrency_cap_is_never_exceeded_as_seen_by_the_api(
    make_bus: MakeBus,
) -> None:
    cfg = config(tier_sonnet_concurrency=2)
    with FakeAnthropic(delay=0.3) as api:
        async with (
            coordinator(make_bus, cfg),
            worker(make_bus, auditor(api, cfg)),
            make_bus() as bus,
        ):
            client = Client(bus)
            replies: list[Any] = []

            async def ask(i: int) -> None:
                body = {
                    "cmd": "AUDIT",
                    "component_id": f"c{i}",
                    "respond_format": "STRUCTURED_JSON",
                }
                replies.append(await client.request("stream-auditor", body, timeout=30))

            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(ask, i)
    assert len(replies) == 8
    assert all(r.kind is MessageKind.REPLY for r in replies)
    assert api.max_in_flight == 2
    assert len(api.requests) == 8


async def test_work_for_an_agent_without_a_worker_waits_and_is_not_lost(make_bus: MakeBus) -> None:
    async with coordinator(make_bus, config()) as coord, make_bus() as bus:
        client = Client(bus)
        sent = await client.send("pipeline-doctor", PIPELINE, reply=True)
        with anyio.fail_after(5):
            while (await coord.platform_status())["data_platform"]["agents"][
                "waiting_for_a_worker"
            ] != 1:
                await anyio.sleep(0.05)
        async with worker(make_bus, doctor_agent):
            with anyio.fail_after(10):
                while not (await bus.stats(bus.inbox)).ready:
                    await anyio.sleep(0.05)
        (reply,) = await bus.consume(bus.inbox, "t", block=1)
        assert client.codec.decode(reply.frame).correlation_id == sent.id


async def test_work_over_budget_is_refused_with_an_event_and_never_reaches_the_api(
    make_bus: MakeBus,
) -> None:
    cfg = config(budget_daily_usd=0.01)  # below one medium sonnet call's worst case
    with FakeAnthropic() as api:
        async with (
            coordinator(make_bus, cfg) as coord,
            worker(make_bus, auditor(api, cfg)),
            make_bus() as bus,
        ):
            events: list[Any] = []

            async def follow() -> None:
                async for event in bus.subscribe(EVENTS_TOPIC):
                    events.append(json.loads(event.frame)["coordinator_event"])
                    if len(events) == 2:
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await anyio.sleep(0.1)
                reply = await Client(bus).request("stream-auditor", {"cmd": "AUDIT"}, timeout=10)
            (letter,) = await coord.bus.dead_letters(INTAKE)
    assert reply.kind is MessageKind.ERROR
    assert reply.body["error"] == "dead_letter"
    assert reply.body["reason"] in ("budget", "too_large")
    assert sorted(e["kind"] for e in events) == ["dead_letter", "refused"]
    assert letter.reason == reply.body["reason"]
    assert reply.body["dead_letter"] == {"dest": INTAKE, "entry_id": letter.entry_id}
    assert api.requests == []


async def test_a_restarted_coordinator_finishes_the_work_the_last_one_held(
    make_bus: MakeBus,
) -> None:
    async with make_bus() as bus:
        client = Client(bus, via="coordinator")
        async with coordinator(make_bus, config()):
            sent = [await client.send("pipeline-doctor", PIPELINE, reply=True) for _ in range(3)]
            await anyio.sleep(0.3)  # held, waiting for a worker
        async with coordinator(make_bus, config()), worker(make_bus, doctor_agent) as w:
            with anyio.fail_after(10):
                while w.stats()["pipeline-doctor"].handled < 3:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            assert w.stats()["pipeline-doctor"].handled == 3
        replies = await bus.consume(bus.inbox, "t", count=10, block=1)
        assert sorted(client.codec.decode(r.frame).correlation_id or "" for r in replies) == sorted(
            e.id for e in sent
        )


async def test_the_standby_takes_over_when_the_leader_stops(make_bus: MakeBus) -> None:
    async with (
        make_bus() as bus_a,
        make_bus() as bus_b,
        worker(make_bus, doctor_agent),
        make_bus() as bus,
    ):
        leader = Coordinator(
            bus_a, config(), coordinator_id="a", lease_ttl=1.0, registry_interval=0.1
        )
        standby = Coordinator(
            bus_b, config(), coordinator_id="b", lease_ttl=1.0, registry_interval=0.1
        )
        async with anyio.create_task_group() as tg:
            leader_life = anyio.CancelScope()

            async def leader_runs() -> None:
                with leader_life:
                    await leader.run()

            tg.start_soon(leader_runs)
            with anyio.fail_after(5):
                while not leader.leading:
                    await anyio.sleep(0.05)
            tg.start_soon(standby.run)
            await anyio.sleep(0.3)
            assert not standby.leading
            leader_life.cancel()  # a SIGKILLed leader is tested with processes in test_cli_coordinator
            with anyio.fail_after(5):
                while not standby.leading:
                    await anyio.sleep(0.05)
            reply = await Client(bus, via="coordinator").request(
                "pipeline-doctor", PIPELINE, timeout=10
            )
            assert reply.sender == "pipeline-doctor"
            assert standby.token is not None
            standby.stop()
            tg.cancel_scope.cancel()


async def test_a_partitioned_intake_spreads_work_by_agent_and_loses_nothing_when_resized(
    make_bus: MakeBus,
) -> None:
    """Four partitions: senders learn the count from the coordinator's presence and send
    each agent's work to its own partition. Work queued under four partitions while no
    coordinator runs is still handled by a leader configured with two."""
    names = ("doc-a", "doc-b", "doc-c", "doc-d", "doc-e")
    handled: list[str] = []
    agents = []
    for name in names:
        agent = Agent(name, tier="haiku", complexity="low")

        async def diagnose(
            cmd: PipelineStatusCommand, ctx: Context, name: str = name
        ) -> dict[str, Any]:
            handled.append(name)
            return {"healthy": True}

        agent.command(PipelineStatusCommand)(diagnose)
        agents.append(agent)
    known = {name: DOCTOR.model_copy(update={"name": name}) for name in names}
    async with (
        coordinator(make_bus, config(bus_intake_partitions=4), definitions=known),
        worker(make_bus, *agents),
        make_bus() as bus,
    ):
        client = Client(bus)
        for name in names:
            assert (await client.request(name, PIPELINE, timeout=10)).body == {"healthy": True}
        assert client._partitions == 4
        used = {intake_queue(name, 4) for name in names}
        assert len(used) > 1
        assert used <= set(await bus.destinations())
    async with make_bus() as bus:  # the coordinator is gone: work waits in its partitions
        client = Client(bus, via="coordinator")
        client._partitions = 4
        for name in names:
            for _ in range(3):
                await client.send(name, PIPELINE)
    async with (
        coordinator(make_bus, config(bus_intake_partitions=2), definitions=known) as coord,
        worker(make_bus, *agents),
    ):
        with anyio.fail_after(15):
            while len(handled) < 4 * len(names):
                await anyio.sleep(0.05)
        for dest in used | set(intake_queues(2)):
            stats = await coord.bus.stats(dest)
            assert (stats.ready, stats.pending) == (0, 0), dest
    assert sorted(handled) == sorted(list(names) * 4)
