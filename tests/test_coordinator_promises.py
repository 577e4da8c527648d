"""The coordinator keeps its promises in real operation: every paid call is admitted
(repairs and escalations included), nothing leaks when a message ends another way
than a reply, one clock decides deadlines, and a new leader forgets nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from conftest import BusFactory
from fake_anthropic import FakeAnthropic

from acp.agents import AgentDefinition, ClaudeAgent, RuntimeConfig, claude_client, load_config
from acp.runtime.bus import Bus, BusOptions
from acp.runtime.client import Client
from acp.runtime.coordinator import Coordinator
from acp.runtime.worker import Worker

pytestmark = pytest.mark.anyio
OPTIONS = BusOptions(min_idle=3.0, reclaim_interval=0.1)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]
AUDITOR = AgentDefinition(
    name="stream-auditor", description="Audits streams.", model="sonnet",
    computational_complexity="medium", allowed_tiers=["sonnet", "opus"],
    system_prompt="You audit streaming pipelines and answer in JSON.",
)  # fmt: skip
AUDIT = {"cmd": "AUDIT", "component_id": "c", "respond_format": "STRUCTURED_JSON"}
SONNET, OPUS = "claude-sonnet-5-5", "claude-opus-5-5"


@pytest.fixture
def make_bus(bus_backend: BusFactory) -> MakeBus:
    return lambda: bus_backend(OPTIONS)


def config(**overrides: Any) -> RuntimeConfig:
    return load_config(env={f"ACP_{k.upper()}": str(v) for k, v in overrides.items()})


@asynccontextmanager
async def running(
    make_bus: MakeBus, cfg: RuntimeConfig, api: FakeAnthropic, **coordinator: Any
) -> AsyncIterator[tuple[Coordinator, Bus]]:
    """A coordinator, a worker for the auditor on the fake API, and a client bus."""
    agent = ClaudeAgent(
        AUDITOR, client=claude_client(api_key="test", base_url=api.url), config=cfg,
        sleep=lambda _: anyio.lowlevel.checkpoint(),
    )  # fmt: skip
    async with (
        make_bus() as coord_bus,
        make_bus() as worker_bus,
        make_bus() as client_bus,
        anyio.create_task_group() as tg,
    ):
        coord = Coordinator(
            coord_bus, cfg, definitions={"stream-auditor": AUDITOR}, lease_ttl=1.0,
            status_interval=0.5, registry_interval=0.1, **coordinator,
        )  # fmt: skip
        await tg.start(coord.run)
        with anyio.fail_after(5):
            await coord.has_led.wait()
        worker = Worker(worker_bus, [agent], heartbeat=0.2, grace=2)
        await tg.start(worker.run)
        await anyio.sleep(0.3)  # the coordinator sees the worker
        yield coord, client_bus
        worker.stop()
        coord.stop()
        tg.cancel_scope.cancel()


def invalid_until(good_from: int) -> Callable[[dict[str, Any], int], str | None]:
    """An API that answers prose (invalid for STRUCTURED_JSON) to a command's first calls."""
    calls: dict[str, int] = {}

    def answer(request: dict[str, Any], _: int) -> str | None:
        key = request["messages"][0]["content"]
        calls[key] = calls.get(key, 0) + 1
        return None if calls[key] >= good_from else "I think it is fine."

    return answer


async def held(coord: Coordinator, *, within: float = 5.0) -> dict[str, Any]:
    """What the policy still holds once the system is idle: slots and reservations in
    flight (completion events arrive shortly after the replies they follow)."""
    give_up = time.monotonic() + within
    while True:
        snap = coord.policy.snapshot()
        now = {"in_flight": snap["in_flight"]["total"], "reserved": coord.policy.reserved_usd()}
        if now == {"in_flight": 0, "reserved": 0.0} or time.monotonic() > give_up:
            return now
        await anyio.sleep(0.05)


async def test_repairs_and_escalations_are_admitted_calls_within_the_caps(
    make_bus: MakeBus,
) -> None:
    """Each command's first answer is invalid, the repair too: the third call, one tier up,
    is valid. Every call goes through the policy, so no tier ever runs more calls at
    once than its cap, and the API sees exactly the calls the coordinator dispatched."""
    cfg = config(tier_sonnet_concurrency=1, tier_opus_concurrency=1)
    with FakeAnthropic(delay=0.2, answer=invalid_until(3)) as api:
        async with running(make_bus, cfg, api) as (coord, bus):
            client = Client(bus)
            replies: list[Any] = []

            async def ask(i: int) -> None:
                body = {**AUDIT, "component_id": f"c{i}"}
                replies.append(await client.request("stream-auditor", body, timeout=60))

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(ask, i)
            dispatched = coord.policy.snapshot()["totals"]["dispatched"]
            after = await held(coord)
    assert all("error" not in r.body for r in replies), [r.body for r in replies]
    assert len(api.requests) == 12
    assert dispatched == len(api.requests), "every paid call is a dispatch of the policy"
    assert api.max_in_flight_by_model[SONNET] == 1
    assert api.max_in_flight_by_model[OPUS] == 1
    assert [r.body["_acp"]["model"] for r in replies] == [OPUS] * 4
    assert after == {"in_flight": 0, "reserved": 0.0}


async def test_repairs_never_overspend_the_budget(make_bus: MakeBus) -> None:
    """A budget that pays for a few calls: repairs are admitted against it like any call,
    so the day's spend never passes the limit, and what is recorded is what was billed."""
    limit = 0.06
    cfg = config(budget_daily_usd=limit, tier_sonnet_concurrency=2)
    with FakeAnthropic(answer=invalid_until(3)) as api:
        async with running(make_bus, cfg, api) as (coord, bus):
            client = Client(bus)
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    body = {**AUDIT, "component_id": f"c{i}"}
                    tg.start_soon(lambda b=body: client.request("stream-auditor", b, timeout=30))
            await held(coord)  # every completion settled
            budget = coord.policy.snapshot()["budgets"]["global"]
            recorded = await coord.recorded_spend()
    billed = sum(
        cfg.tiers["opus" if model == OPUS else "sonnet"].cost(_usage(usage))
        for model, usage in api.billed
    )
    assert budget["spent_usd"] <= limit
    assert budget["reserved_usd"] == 0
    assert recorded == pytest.approx(billed)
    assert billed <= limit


def _usage(raw: dict[str, int]) -> Any:
    from acp.agents import Usage

    return Usage(**raw)


async def test_a_worker_clock_or_a_coordinator_clock_behind_never_runs_late_work(
    make_bus: MakeBus,
) -> None:
    """The coordinator's clock 30 s behind: deadlines are judged on the server's clock,
    so an expired command is never dispatched, and the only sonnet slot stays free for
    the next command."""
    cfg = config(tier_sonnet_concurrency=1)
    with FakeAnthropic() as api:
        async with running(make_bus, cfg, api, clock=lambda: time.time() - 30) as (coord, bus):
            client = Client(bus)
            late = client.command("stream-auditor", AUDIT, reply=True, timeout=0.5)
            await anyio.sleep(1.0)  # it expires while it travels
            refused = await client.request_envelope(late, timeout=10)
            fine = await client.request("stream-auditor", AUDIT, timeout=10)
            after = await held(coord)
    assert refused.body["reason"] == "deadline"
    assert "error" not in fine.body
    assert len(api.requests) == 1, "the expired command never reached the API"
    assert after == {"in_flight": 0, "reserved": 0.0}


async def test_a_new_leader_keeps_the_caps_and_counts_the_old_leaders_calls(
    make_bus: MakeBus,
) -> None:
    cfg = config(tier_sonnet_concurrency=2)
    with FakeAnthropic(delay=2.0) as api:
        agent = ClaudeAgent(
            AUDITOR, client=claude_client(api_key="test", base_url=api.url), config=cfg
        )
        async with (
            make_bus() as a_bus,
            make_bus() as b_bus,
            make_bus() as worker_bus,
            make_bus() as bus,
            anyio.create_task_group() as tg,
        ):
            worker = Worker(worker_bus, [agent], heartbeat=0.2, grace=5)
            await tg.start(worker.run)
            first = Coordinator(a_bus, cfg, definitions={"stream-auditor": AUDITOR},
                                coordinator_id="a", lease_ttl=1.0, registry_interval=0.1)  # fmt: skip
            life = anyio.CancelScope()

            async def first_runs() -> None:
                with life:
                    await first.run()

            tg.start_soon(first_runs)
            with anyio.fail_after(5):
                await first.has_led.wait()
            await anyio.sleep(0.3)
            client = Client(bus, via="coordinator")
            replies: list[Any] = []

            async def ask(i: int) -> None:
                body = {**AUDIT, "component_id": f"c{i}"}
                replies.append(await client.request("stream-auditor", body, timeout=60))

            async with anyio.create_task_group() as asks:
                for i in range(6):
                    asks.start_soon(ask, i)
                await anyio.sleep(0.8)  # two calls in flight, dispatched by the first leader
                life.cancel()  # it is gone; its calls run on
                second = Coordinator(b_bus, cfg, definitions={"stream-auditor": AUDITOR},
                                     coordinator_id="b", lease_ttl=1.0, registry_interval=0.1)  # fmt: skip
                tg.start_soon(second.run)
            after = await held(second)  # every completion settled
            recorded = await second.recorded_spend()
            worker.stop()
            second.stop()
            tg.cancel_scope.cancel()
    assert len(replies) == 6
    assert api.max_in_flight_by_model[SONNET] <= 2
    billed = sum(cfg.tiers["sonnet"].cost(_usage(u)) for _, u in api.billed)
    assert recorded == pytest.approx(billed)
    assert after == {"in_flight": 0, "reserved": 0.0}


async def test_held_slots_return_to_zero_whichever_way_a_message_ends(make_bus: MakeBus) -> None:
    """A reply, an error reply, an admission dead letter (a frame the worker cannot read),
    and the bus's max_deliveries: each ends its dispatch exactly once."""
    cfg = config(tier_sonnet_concurrency=1)

    def answer(request: dict[str, Any], _: int) -> str | None:
        body = json.loads(request["messages"][0]["content"])
        return "prose" if body.get("component_id") == "bad" else None

    with FakeAnthropic(answer=answer) as api:
        async with running(make_bus, cfg, api) as (coord, bus):
            client = Client(bus)
            ok = await client.request("stream-auditor", AUDIT, timeout=20)
            bad = await client.request(
                "stream-auditor", {**AUDIT, "component_id": "bad"}, timeout=20
            )
            after = await held(coord)
    assert "error" not in ok.body
    assert bad.body["error"] == "invalid_reply"
    assert after == {"in_flight": 0, "reserved": 0.0}
