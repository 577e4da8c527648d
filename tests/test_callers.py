"""What a caller is told: error replies on dead letters, unknown recipients refused at
once, timeouts that name the agent, deadlines that stop paid work, and results that
can be looked up later. Every test runs on the memory bus and on a real server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager
from typing import Any

import anyio
import pytest
from fake_anthropic import FakeAnthropic

from acp.agents import Agent, AgentDefinition, ClaudeAgent, Context, claude_client, load_config
from acp.catalogue.pipeline_doctor import agent as doctor
from acp.errors import RequestTimeout
from acp.protocol import MessageKind
from acp.runtime.bus import Bus, BusOptions
from acp.runtime.client import Client, ResultState
from acp.runtime.coordinator import Coordinator
from acp.runtime.keys import COORDINATOR_EVENTS_TOPIC as EVENTS_TOPIC
from acp.runtime.worker import Worker

pytestmark = pytest.mark.anyio
BUS_OPTIONS = BusOptions(min_idle=3.0, reclaim_interval=0.1, max_deliveries=2, retry_base=0.05)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]
PIPELINE = {"cmd": "PIPELINE_STATUS", "component_id": "etl", "data_flow": {"quality_score": 0.5}}

broken = Agent("broken-agent", tier="haiku", complexity="low")


@broken.command("EXPLODE")
async def explode(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
    raise RuntimeError("the disk is full")


@asynccontextmanager
async def running(
    make_bus: MakeBus,
    *agents: Any,
    coordinated: bool = True,
    definitions: dict[str, AgentDefinition] | None = None,
) -> AsyncIterator[Bus]:
    """A coordinator (optional) and a worker for ``agents``; yields a client bus."""
    async with (
        make_bus() as coord_bus,
        make_bus() as worker_bus,
        make_bus() as client_bus,
        anyio.create_task_group() as tg,
    ):
        coord = None
        if coordinated:
            coord = Coordinator(
                coord_bus, load_config(), definitions=definitions or {}, lease_ttl=1.0,
                status_interval=0.5, registry_interval=0.1,
            )  # fmt: skip
            await tg.start(coord.run)
            with anyio.fail_after(5):
                await coord.has_led.wait()
        worker = None
        if agents:
            worker = Worker(worker_bus, list(agents), heartbeat=0.2, grace=1)
            await tg.start(worker.run)
        yield client_bus
        if worker is not None:
            worker.stop()
        if coord is not None:
            coord.stop()
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("coordinated", [True, False])
async def test_a_waiting_sender_gets_an_error_reply_when_its_message_is_dead_lettered(
    make_bus: MakeBus, coordinated: bool
) -> None:
    async with running(make_bus, broken, coordinated=coordinated) as bus:
        started = time.monotonic()
        reply = await Client(bus).request("broken-agent", {"cmd": "EXPLODE"}, timeout=20)
        assert time.monotonic() - started < 10, "the error must come at once, not at the timeout"
        letters = await bus.dead_letters("broken-agent")
    assert reply.kind is MessageKind.ERROR
    body = reply.body
    assert body["error"] == "dead_letter"
    assert body["reason"] == "handler_error"
    assert body["agent"] == "broken-agent"
    assert body["attempts"] == 1
    assert "RuntimeError: the disk is full" in body["detail"]
    (letter,) = letters
    assert body["dead_letter"] == {"dest": "broken-agent", "entry_id": letter.entry_id}
    assert f"acp dlq replay broken-agent {letter.entry_id}" in body["replay"]


async def test_a_message_dead_lettered_after_max_deliveries_gets_an_error_reply(
    make_bus: MakeBus,
) -> None:
    flaky = Agent("flaky-agent", tier="haiku", complexity="low")

    @flaky.command("TRY")
    async def always_retry(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        from acp.errors import RetryableError

        raise RetryableError("upstream is down", retry_after=0.05)

    async with running(make_bus, flaky, coordinated=False) as bus:
        reply = await Client(bus).request("flaky-agent", {"cmd": "TRY"}, timeout=20)
    assert reply.body["error"] == "dead_letter"
    assert reply.body["reason"] == "max_deliveries"
    assert reply.body["attempts"] == BUS_OPTIONS.max_deliveries
    assert "upstream is down" in reply.body["detail"]


async def test_a_command_for_an_agent_nobody_knows_is_refused_at_once(make_bus: MakeBus) -> None:
    async with running(make_bus, doctor) as bus:
        client = Client(bus)
        with anyio.fail_after(5):
            reply = await client.request("pipeline-docter", PIPELINE, timeout=30)
            assigned = await client.request(
                "project-orchestrator", {"cmd": "ASSIGN", "to": "nobody-here"}, timeout=30
            )
    assert reply.body["error"] == "dead_letter"
    assert reply.body["reason"] == "unknown_agent"
    assert "pipeline-docter" in reply.body["detail"]
    assert "pipeline-doctor" in reply.body["detail"], "a close match is suggested"
    assert assigned.body["reason"] == "unknown_agent"
    assert "nobody-here" in assigned.body["detail"]


async def test_a_known_agent_without_a_worker_is_parked_and_the_timeout_says_so(
    make_bus: MakeBus,
) -> None:
    sleeper = AgentDefinition(
        name="night-owl", description="Answers at night.", model="haiku",
        computational_complexity="low", system_prompt="You answer at night.",
    )  # fmt: skip
    async with running(make_bus, definitions={"night-owl": sleeper}) as bus:
        client = Client(bus)
        with pytest.raises(RequestTimeout) as caught:
            await client.request("night-owl", {"cmd": "HOOT"}, timeout=1.5)
        sent = await client.send("night-owl", {"cmd": "HOOT"})
        with anyio.fail_after(5):
            while (await client.result(sent.id)).state is not ResultState.PARKED:
                await anyio.sleep(0.05)
        result = await client.result(sent.id)
    message = str(caught.value)
    assert "'night-owl'" in message
    assert "'coordinator'" not in message
    assert "HOOT" in message
    assert "no live worker" in message
    assert "no live worker for night-owl" in result.detail


async def test_a_timeout_is_the_deadline_and_expired_work_never_reaches_the_model(
    make_bus: MakeBus,
) -> None:
    definition = AgentDefinition(
        name="slow-thinker", description="Thinks slowly.", model="sonnet",
        computational_complexity="medium", system_prompt="You think slowly and answer in JSON.",
    )  # fmt: skip
    config = load_config()
    with FakeAnthropic(delay=0.0) as api:
        agent = ClaudeAgent(
            definition, client=claude_client(api_key="test", base_url=api.url), config=config
        )
        async with make_bus() as coord_bus, anyio.create_task_group() as tg:
            # The coordinator sees the work; the worker starts only after the caller gave up.
            coord = Coordinator(coord_bus, config, definitions={"slow-thinker": definition},
                                lease_ttl=1.0, registry_interval=0.1)  # fmt: skip
            await tg.start(coord.run)
            await coord.has_led.wait()
            async with make_bus() as bus, AsyncExitStack() as stack:
                events = await stack.enter_async_context(
                    aclosing(bus.subscribe(EVENTS_TOPIC, after="0"))
                )
                client = Client(bus)
                with pytest.raises(RequestTimeout):
                    await client.request("slow-thinker", {"cmd": "THINK"}, timeout=1.0)
                async with make_bus() as worker_bus, anyio.create_task_group() as workers:
                    worker = Worker(worker_bus, [agent], heartbeat=0.2, grace=1)
                    await workers.start(worker.run)
                    with anyio.fail_after(10):
                        async for event in events:
                            if b"deadline" in event.frame:
                                break
                    letters = await bus.dead_letters("coordinator") + await bus.dead_letters(
                        "slow-thinker"
                    )
                    worker.stop()
            coord.stop()
            tg.cancel_scope.cancel()
    assert api.requests == [], "an expired command must not be paid for"
    assert [letter.reason for letter in letters] == ["deadline"]


async def test_a_result_can_be_looked_up_after_a_send_without_waiting(make_bus: MakeBus) -> None:
    async with running(make_bus, doctor, broken) as bus:
        client = Client(bus)
        sent = await client.send("pipeline-doctor", PIPELINE)
        failed = await client.send("broken-agent", {"cmd": "EXPLODE"})
        done = await client.result(sent.id, wait=10)
        dead = await client.result(failed.id, wait=10)
        unknown = await client.result("no-such-message")
    assert done.state is ResultState.DONE
    assert done.agent == "pipeline-doctor"
    assert done.reply is not None
    assert done.reply.body["healthy"] is False
    assert dead.state is ResultState.DEAD
    assert dead.reply is not None
    assert dead.reply.body["reason"] == "handler_error"
    assert dead.dead_letter is not None
    assert dead.dead_letter["dest"] == "broken-agent"
    assert unknown.state is ResultState.UNKNOWN


async def test_a_burst_of_requests_from_one_client_shares_a_few_connections(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 requests started at once from one client, on a fresh server: they batch
    like everything else on the hot path, on a bounded number of connections, and
    nothing is retried for want of one."""
    import redis as sync_redis

    from acp.runtime.bus import RedisBus

    echo = Agent("echo", tier="haiku", complexity="low")

    @echo.command("ECHO")
    async def answer(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"n": body["n"]}

    def connections() -> int:
        probe = sync_redis.Redis.from_url(redis_url)
        try:
            return len(probe.client_list()) - 1
        finally:
            probe.close()

    peak = 0
    async with (
        RedisBus.from_url(redis_url, BUS_OPTIONS) as worker_bus,
        RedisBus.from_url(redis_url, BUS_OPTIONS) as bus,
        anyio.create_task_group() as tg,
    ):
        worker = Worker(worker_bus, [echo], concurrency=64, heartbeat=0.2, grace=1)
        await tg.start(worker.run)
        client = Client(bus, via="direct")
        replies: list[int] = []

        async def ask(n: int) -> None:
            reply = await client.request("echo", {"cmd": "ECHO", "n": n}, timeout=60)
            replies.append(reply.body["n"])

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, await anyio.to_thread.run_sync(connections))
                await anyio.sleep(0.05)

        tg.start_soon(watch)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as burst:
                for n in range(300):
                    burst.start_soon(ask, n)
        worker.stop()
        tg.cancel_scope.cancel()
    assert sorted(replies) == list(range(300))
    assert peak <= 12, f"{peak} connections for two bus clients"
    assert not [r for r in caplog.records if "redis_retry" in r.getMessage()]
