"""Workers drive Python agents on a bus: replies, handoffs, errors, presence, cancellation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest

from acp.agents import Agent, Context
from acp.protocol import Envelope, MessageKind, PipelineStatusCommand, WireCodec
from acp.protocol.headers import H_ROOT
from acp.runtime.bus import Bus, BusOptions, MemoryBus
from acp.runtime.client import Client
from acp.runtime.keys import CANCELLED_ROOTS, PROGRESS_TOPIC, STATUS_TOPIC, WORKERS
from acp.runtime.worker import Worker

pytestmark = pytest.mark.anyio
BUS_OPTIONS = BusOptions(min_idle=2.0, reclaim_interval=0.1)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]
codec = WireCodec()


def doctor() -> Agent:
    agent = Agent("pipeline-doctor", tier="haiku", complexity="low")

    @agent.command(PipelineStatusCommand)
    async def diagnose(cmd: PipelineStatusCommand, ctx: Context) -> dict[str, Any]:
        ctx.log.info("diagnosing", component=cmd.component_id)
        await ctx.progress(0.5, "looked at the data flow")
        await ctx.publish({"doctor_status": {"seen": cmd.component_id}})
        score = cmd.data_flow.quality_score or 0.0
        return {
            "component_id": cmd.component_id,
            "healthy": score >= 0.9,
            "seen_by": ctx.envelope.recipient,
        }

    @agent.command("ESCALATE")
    async def escalate(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        answer = await ctx.send(
            "pipeline-doctor",
            {"cmd": "PIPELINE_STATUS", "component_id": body["component_id"]},
            wait=True,
            timeout=5,
        )
        await ctx.send("audit-log", {"cmd": "NOTE", "text": "escalated"})
        return {"second_opinion": answer}

    @agent.command("SLOW")
    async def slow(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await anyio.sleep(30)
        return {"finished": True}

    return agent


@asynccontextmanager
async def running(make_bus: MakeBus, *agents: Agent) -> AsyncIterator[tuple[Worker, Client, Bus]]:
    async with make_bus() as worker_bus, make_bus() as client_bus, anyio.create_task_group() as tg:
        worker = Worker(worker_bus, agents or [doctor()], heartbeat=0.2, grace=1)
        await tg.start(worker.run)
        yield worker, Client(client_bus, sender="tester"), client_bus
        worker.stop()


PIPELINE = {
    "cmd": "PIPELINE_STATUS",
    "component_id": "orders_etl",
    "data_flow": {"quality_score": 0.97},
    "respond_format": "STRUCTURED_JSON",
}


async def test_a_python_agent_answers_through_the_worker(make_bus: MakeBus) -> None:
    async with running(make_bus) as (_, client, _bus):
        reply = await client.request("pipeline-doctor", PIPELINE, timeout=5)
    assert reply.kind is MessageKind.REPLY
    assert reply.body == {
        "component_id": "orders_etl",
        "healthy": True,
        "seen_by": "pipeline-doctor",
    }
    assert reply.sender == "pipeline-doctor"


async def test_bad_fields_and_unknown_commands_get_error_replies(make_bus: MakeBus) -> None:
    async with running(make_bus) as (_, client, _bus):
        bad = await client.request(
            "pipeline-doctor", {"cmd": "PIPELINE_STATUS", "component_id": 7}, timeout=5
        )
        unknown = await client.request("pipeline-doctor", {"cmd": "REBOOT"}, timeout=5)
    assert bad.kind is MessageKind.ERROR
    assert bad.body["error"] == "schema"
    assert bad.body["fields"][0]["path"] == "component_id"
    assert unknown.body["error"] == "unknown_command"
    assert "PIPELINE_STATUS" in unknown.body["detail"]


async def test_handoffs_wait_for_replies_and_fire_and_forget_sends_are_committed(
    make_bus: MakeBus,
) -> None:
    async with running(make_bus) as (_, client, bus):
        reply = await client.request(
            "pipeline-doctor", {"cmd": "ESCALATE", "component_id": "etl"}, timeout=10
        )
        assert reply.body["second_opinion"]["component_id"] == "etl"
        (note,) = await bus.consume("audit-log", "reader", block=2)
        env = codec.decode(note.frame)
    assert env.body == {"cmd": "NOTE", "text": "escalated"}
    assert env.sender == "pipeline-doctor"
    assert env.traceparent == reply.traceparent


async def test_status_and_progress_are_published(make_bus: MakeBus) -> None:
    async with running(make_bus) as (_, client, bus):
        seen: dict[str, list[Any]] = {STATUS_TOPIC: [], PROGRESS_TOPIC: []}

        async def follow(topic: str) -> None:
            async for event in bus.subscribe(topic):
                seen[topic].append(codec.decode(event.frame).body)
                return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, STATUS_TOPIC)
            tg.start_soon(follow, PROGRESS_TOPIC)
            await anyio.sleep(0.1)
            await client.request("pipeline-doctor", PIPELINE, timeout=5)
    assert seen[STATUS_TOPIC] == [{"doctor_status": {"seen": "orders_etl"}}]
    assert seen[PROGRESS_TOPIC][0]["progress"]["fraction"] == 0.5


async def test_workers_announce_themselves_and_disappear_when_they_stop(make_bus: MakeBus) -> None:
    async with make_bus() as observer:
        async with running(make_bus) as (worker, _client, _bus):
            members = await observer.members(WORKERS)
            (info,) = [json.loads(v) for v in members.values()]
            assert info["agent"] == "pipeline-doctor"
            assert info["tier"] == "haiku"
            assert info["capacity"] == worker.concurrency
            assert info["worker"] == worker.worker_id
        assert await observer.members(WORKERS) == {}


async def test_cancel_stops_an_in_flight_message(make_bus: MakeBus) -> None:
    async with running(make_bus) as (worker, client, _bus):
        answers: list[Any] = []

        async def ask_slowly() -> None:
            answers.append(await client.request("pipeline-doctor", {"cmd": "SLOW"}, timeout=20))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask_slowly)
                while not worker._running:
                    await anyio.sleep(0.02)
                (slow_id,) = worker._running
                ack = await client.cancel("pipeline-doctor", slow_id)
    assert ack.body == {"cancel": slow_id, "found_here": True}
    assert answers[0].body == {"cancelled": True, "msg_id": slow_id}


async def held_cancels(bus: Bus) -> int:
    """How many cancelled roots the bus holds, whatever it holds them in."""
    if isinstance(bus, MemoryBus):
        kept = (
            getattr(bus.broker, kind, {}).get(CANCELLED_ROOTS, {}) for kind in ("counters", "marks")
        )
        return sum(map(len, kept))
    redis: Any = bus.redis  # type: ignore[attr-defined]
    held = 0
    async for key in redis.scan_iter(match=f"*{CANCELLED_ROOTS}*"):
        kind = (await redis.type(key)).decode()
        held += await (redis.hlen(key) if kind == "hash" else redis.zcard(key))
    return held


async def test_cancelled_roots_are_held_for_the_ledgers_time_while_cancels_keep_coming(
    make_bus: MakeBus,
) -> None:
    """Each cancelled root is remembered (so the steps of its tree not yet started do
    not run) for the ledger's time after its cancel, and no longer: a steady trickle
    of cancels must not keep every root ever cancelled."""
    options = BusOptions(min_idle=2.0, reclaim_interval=0.1, ledger_ttl=1.0)
    async with (
        make_bus(options) as worker_bus,
        make_bus(options) as client_bus,
        anyio.create_task_group() as tg,
    ):
        worker = Worker(worker_bus, [doctor()], heartbeat=0.2, grace=1)
        await tg.start(worker.run)
        client = Client(client_bus, sender="tester")
        with anyio.fail_after(20):
            for i in range(6):
                ack = await client.cancel("pipeline-doctor", f"root-{i}")
                assert ack.body == {"cancel": f"root-{i}", "found_here": False}
                await anyio.sleep(0.4)

        def step_of(root: str) -> Envelope:
            return Envelope.for_body({"cmd": "CHECK"}, sender="orchestrator",
                                     recipient="pipeline-doctor", headers={H_ROOT: root})  # fmt: skip

        assert await worker._cancelled_tree(step_of("root-5")), "cancelled 0.4 s ago"
        assert not await worker._cancelled_tree(step_of("root-0")), "cancelled 2.4 s ago"
        assert await held_cancels(worker_bus) <= 3
        worker.stop()


async def test_a_definition_file_catalogue_can_mix_python_agents(make_bus: MakeBus) -> None:
    quiet = Agent("quiet-one")

    @quiet.command("PING")
    async def ping(body: dict[str, Any], ctx: Context) -> None:
        return None  # no reply body: nothing is sent back

    async with running(make_bus, doctor(), quiet) as (worker, client, bus):
        sent = await client.send("quiet-one", {"cmd": "PING"}, reply=True)
        with anyio.fail_after(5):
            while worker.stats()["quiet-one"].handled < 1:
                await anyio.sleep(0.02)
        assert (await bus.stats(client.bus.inbox)).ready == 0
        assert sent.recipient == "quiet-one"


async def test_a_spend_limit_dead_letters_the_message_and_pauses_the_tier(
    make_bus: MakeBus,
) -> None:
    from acp.errors import SpendLimitReached

    broke = Agent("broke-agent", tier="opus")

    @broke.command("THINK")
    async def think(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise SpendLimitReached("the organisation's spend limit is reached", tier="opus")

    async with running(make_bus, broke) as (worker, client, bus):
        await client.send("broke-agent", {"cmd": "THINK"})
        with anyio.fail_after(5):
            while not await bus.dead_letters("broke-agent"):
                await anyio.sleep(0.02)
        (letter,) = await bus.dead_letters("broke-agent")
        assert letter.reason == "spend_limit"
        assert worker.processors["broke-agent"].paused
