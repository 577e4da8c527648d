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
from fake_anthropic import FakeAnthropic

from acp.agents import AgentDefinition, ClaudeAgent, RuntimeConfig, claude_client, load_config
from acp.errors import RequestTimeout
from acp.protocol import WireCodec
from acp.runtime.bus import Bus, BusOptions
from acp.runtime.client import Client
from acp.runtime.coordinator import Coordinator
from acp.runtime.worker import Worker
from acp.testing import BusFactory

pytestmark = pytest.mark.anyio
BUS_OPTIONS = BusOptions(min_idle=3.0, reclaim_interval=0.1)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]
AUDITOR = AgentDefinition(
    name="stream-auditor", description="Audits streams.", model="sonnet",
    computational_complexity="medium", allowed_tiers=["sonnet", "opus"],
    system_prompt="You audit streaming pipelines and answer in JSON.",
)  # fmt: skip
AUDIT = {"cmd": "AUDIT", "component_id": "c", "respond_format": "STRUCTURED_JSON"}
SONNET, OPUS = "claude-sonnet-5-5", "claude-opus-5-5"


def config(**overrides: Any) -> RuntimeConfig:
    return load_config(env={f"ACP_{k.upper()}": str(v) for k, v in overrides.items()})


@asynccontextmanager
async def running(
    make_bus: MakeBus,
    cfg: RuntimeConfig,
    api: FakeAnthropic,
    *,
    worker_options: dict[str, Any] | None = None,
    **coordinator: Any,
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
        worker = Worker(worker_bus, [agent], heartbeat=0.2, grace=2, **(worker_options or {}))
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


async def test_held_slots_return_to_zero_after_a_reply_and_an_error_reply(
    make_bus: MakeBus,
) -> None:
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
            status = (await coord.platform_status())["data_platform"]["scheduling"]["held"]
    assert "error" not in ok.body
    assert bad.body["error"] == "invalid_reply"
    assert after == {"in_flight": 0, "reserved": 0.0}
    assert status == {"slots": 0, "reserved_usd": 0.0}


async def test_a_dispatch_refused_at_the_worker_releases_its_slot_and_costs_nothing(
    make_bus: MakeBus,
) -> None:
    """Two slots, a worker that runs one call at a time: the second dispatch waits in the
    agent's queue past its deadline and the worker dead-letters it at admission. Its
    slot comes back at once and it is charged nothing (it never reached the API)."""
    cfg = config(tier_sonnet_concurrency=2)
    with FakeAnthropic(delay=1.5) as api:
        async with running(make_bus, cfg, api, worker_options={"concurrency": 1}) as (
            coord,
            bus,
        ):
            client = Client(bus)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.request("stream-auditor", AUDIT, timeout=20))
                await anyio.sleep(0.2)
                late = await client.request(
                    "stream-auditor", {**AUDIT, "component_id": "late"}, timeout=20,
                    deadline=bus.now() + 0.7,
                )  # fmt: skip
            after = await held(coord)
            recorded = await coord.recorded_spend()
    assert late.body["error"] == "dead_letter"
    assert late.body["reason"] == "deadline"
    assert len(api.requests) == 1
    assert after == {"in_flight": 0, "reserved": 0.0}
    billed = sum(cfg.tiers["sonnet"].cost(_usage(u)) for _, u in api.billed)
    assert recorded == pytest.approx(billed)


async def test_a_dispatch_whose_worker_dies_past_max_deliveries_releases_its_slot(
    bus_backend: BusFactory,
) -> None:
    """The worker dies mid-call (its entry stays pending) and the entry is reclaimed
    past ``max_deliveries``: dead-lettered, the sender told, the slot back, the call it
    may have paid for charged at its reservation."""
    cfg = config(tier_sonnet_concurrency=1)
    options = BusOptions(min_idle=1.0, reclaim_interval=0.1, max_deliveries=1)
    with FakeAnthropic(delay=3.0) as api:
        agent = ClaudeAgent(
            AUDITOR, client=claude_client(api_key="test", base_url=api.url), config=cfg
        )
        async with (
            bus_backend(options) as coord_bus,
            bus_backend(options) as first_bus,
            bus_backend(options) as second_bus,
            bus_backend(options) as bus,
            anyio.create_task_group() as tg,
        ):
            coord = Coordinator(coord_bus, cfg, definitions={"stream-auditor": AUDITOR},
                                lease_ttl=1.0, registry_interval=0.1, reconcile_interval=0.3)  # fmt: skip
            await tg.start(coord.run)
            first = Worker(first_bus, [agent], heartbeat=0.2, worker_id="first")
            life = anyio.CancelScope()

            async def first_lives() -> None:
                with life:
                    await first.run()

            tg.start_soon(first_lives)
            await anyio.sleep(0.3)
            client = Client(bus)
            replies: list[Any] = []

            async def ask() -> None:
                replies.append(await client.request("stream-auditor", AUDIT, timeout=20))

            tg.start_soon(ask)
            while not api.requests:
                await anyio.sleep(0.05)
            life.cancel()  # dies mid-call, its entry pending
            second = Worker(second_bus, [agent], heartbeat=0.2, worker_id="second")
            tg.start_soon(second.run)
            with anyio.fail_after(15):
                while not replies:
                    await anyio.sleep(0.05)
            after = await held(coord, within=5)
            reserved = coord.policy.snapshot()["budgets"]
            second.stop()
            coord.stop()
            tg.cancel_scope.cancel()
    assert replies[0].body["reason"] == "max_deliveries"
    assert after == {"in_flight": 0, "reserved": 0.0}
    assert reserved["global"]["spent_usd"] > 0  # the call it may have paid for


async def test_a_dispatch_no_worker_can_read_is_settled_by_reconciliation(
    make_bus: MakeBus,
) -> None:
    """A frame the worker cannot decode (here: larger than the worker accepts) is
    dead-lettered without an envelope, so no completion can name it: the coordinator
    sees the dispatch gone from the agent's queue and settles it at its reservation."""
    cfg = config(tier_sonnet_concurrency=1)
    with FakeAnthropic() as api:
        small = {"codec": WireCodec(max_frame=64)}
        async with running(make_bus, cfg, api, worker_options=small, reconcile_interval=0.3) as (
            coord,
            bus,
        ):
            client = Client(bus)
            with pytest.raises(RequestTimeout):
                await client.request("stream-auditor", AUDIT, timeout=2)
            after = await held(coord)
            fine_after = coord.policy.snapshot()["in_flight"]["total"]
    assert not api.requests
    assert after == {"in_flight": 0, "reserved": 0.0}
    assert fine_after == 0
