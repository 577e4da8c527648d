"""One contract, two buses: every test here runs against MemoryBus and RedisBus."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import pytest

from acp.errors import BusClosed, ConfigError, RequestTimeout
from acp.runtime.bus import (
    Bus,
    BusOptions,
    CommitStatus,
    MemoryBus,
    Outgoing,
)
from acp.testing import BusFactory

pytestmark = pytest.mark.anyio

BUS_OPTIONS = BusOptions(
    min_idle=0.2,
    reclaim_interval=0.05,
    retry_base=0.05,
    retry_cap=0.2,
    relay_after=0.2,
    max_deliveries=3,
)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]


def out(dest: str, msg_id: str, body: bytes = b"frame", **headers: str) -> Outgoing:
    return Outgoing(dest, msg_id, body, headers)


async def drain(bus: Bus, dest: str, consumer: str = "c1", *, rounds: int = 3) -> list:
    seen = []
    for _ in range(rounds):
        batch = await bus.consume(dest, consumer, block=0.05)
        seen += batch
        if batch:
            await bus.commit(consumer, [(d, ()) for d in batch])
    return seen


async def test_send_consume_commit(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send_many(
            [out("agent-a", f"m{i}", f"f{i}".encode(), trace="t") for i in range(5)]
        )
        batch = await bus.consume("agent-a", "c1", count=10, block=0.5)
        assert [d.msg_id for d in batch] == [f"m{i}" for i in range(5)]
        assert [d.frame for d in batch] == [f"f{i}".encode() for i in range(5)]
        assert all(d.deliveries == 1 and d.headers == {"trace": "t"} for d in batch)
        stats = await bus.stats("agent-a")
        assert (stats.ready, stats.pending) == (0, 5)
        assert await bus.commit("c1", [(d, ()) for d in batch]) == [CommitStatus.DONE] * 5
        stats = await bus.stats("agent-a")
        assert (stats.ready, stats.pending, stats.dead) == (0, 0, 0)
        assert await bus.consume("agent-a", "c1", block=0.05) == []
        assert "agent-a" in await bus.destinations()


async def test_send_is_idempotent_by_message_id(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        for _ in range(3):
            await bus.send(out("agent-a", "same-id"))
        await bus.send_many([out("agent-a", "same-id"), out("agent-a", "other")])
        # a batch that repeats an id inside itself adds it once too
        await bus.send_many([out("agent-a", "twice"), out("agent-a", "twice")])
        assert [d.msg_id for d in await drain(bus, "agent-a")] == ["same-id", "other", "twice"]


async def test_dedup_and_ledger_remember_at_most_dedup_max_ids(make_bus: MakeBus) -> None:
    """Memory stays bounded whatever the rate: past ``dedup_max`` ids per destination the
    oldest are forgotten, by the send dedup and by the ledger alike (trimmed at most
    once a second per destination and client: a second's ids may exceed it)."""
    options = BusOptions(**{**BUS_OPTIONS.__dict__, "dedup_max": 10})
    async with make_bus(options) as bus:
        for start in (0, 10, 20):  # three batches, a second apart
            await bus.send_many([out("agent-a", f"m{i}") for i in range(start, start + 10)])
            assert len(await drain(bus, "agent-a", rounds=1)) == 10
            await anyio.sleep(1.05)
        ids = [f"m{i}" for i in range(30)]
        assert await bus.processed("agent-a", ids) == set(ids[20:])
        await bus.send_many([out("agent-a", "m0"), out("agent-a", "m29")])
        # m0 was forgotten by both: it is sent and processed again; m29 is remembered
        assert [d.msg_id for d in await drain(bus, "agent-a")] == ["m0"]


async def test_blocking_consume_wakes_on_send(make_bus: MakeBus) -> None:
    async with make_bus() as consumer_bus, make_bus() as producer_bus:
        got = []

        async def consume() -> None:
            got.extend(await consumer_bus.consume("agent-a", "c1", block=5.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.1)
            with anyio.fail_after(3):
                await producer_bus.send(out("agent-a", "m1"))
        assert [d.msg_id for d in got] == ["m1"]


async def test_commit_delivers_effects_once(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (d,) = await bus.consume("agent-a", "c1", block=0.5)
        effects = [
            out("agent-b", "handoff-1", b"x"),
            out("agent-b", "handoff-1", b"x"),
            out("agent-c", "note-1"),
        ]
        assert await bus.commit("c1", [(d, effects)]) == [CommitStatus.DONE]
        assert [x.msg_id for x in await drain(bus, "agent-b")] == ["handoff-1"]
        assert [x.msg_id for x in await drain(bus, "agent-c")] == ["note-1"]


async def test_processed_message_id_is_a_duplicate_and_its_effects_are_dropped(
    make_bus: MakeBus,
) -> None:
    options = BusOptions(**{**BUS_OPTIONS.__dict__, "dedup_ttl": 0.0})  # let a second entry in
    async with make_bus(options) as bus:
        await bus.send(out("agent-a", "m1"))
        (first,) = await bus.consume("agent-a", "c1", block=0.5)
        assert await bus.commit("c1", [(first, [out("agent-b", "e1")])]) == [CommitStatus.DONE]
        await anyio.sleep(0.01)
        await bus.send(out("agent-a", "m1"))
        (second,) = await bus.consume("agent-a", "c1", block=0.5)
        assert second.entry_id != first.entry_id
        assert await bus.commit("c1", [(second, [out("agent-b", "e2")])]) == [
            CommitStatus.DUPLICATE
        ]
        assert [x.msg_id for x in await drain(bus, "agent-b")] == ["e1"]
        assert (await bus.stats("agent-a")).pending == 0


async def test_abandoned_entry_is_reclaimed_and_the_old_owner_is_fenced(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (held,) = await bus.consume("agent-a", "slow", block=0.5)
        assert await bus.renew("slow", [held]) == [True]
        await anyio.sleep(BUS_OPTIONS.min_idle + 0.1)
        (taken,) = await bus.consume("agent-a", "fast", block=0.5)
        assert taken.msg_id == "m1"
        assert taken.deliveries == 2
        assert await bus.renew("slow", [held]) == [False]
        assert await bus.commit("slow", [(held, [out("agent-b", "from-slow")])]) == [
            CommitStatus.LOST
        ]
        assert await bus.commit("fast", [(taken, [out("agent-b", "from-fast")])]) == [
            CommitStatus.DONE
        ]
        assert [x.msg_id for x in await drain(bus, "agent-b")] == ["from-fast"]


async def test_renewed_entry_is_not_reclaimed(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (held,) = await bus.consume("agent-a", "worker", block=0.5)
        for _ in range(4):
            await anyio.sleep(BUS_OPTIONS.min_idle / 2)
            assert await bus.renew("worker", [held]) == [True]
            assert await bus.consume("agent-a", "thief", block=0.01) == []
        assert await bus.commit("worker", [(held, ())]) == [CommitStatus.DONE]


async def test_consumer_restart_gets_its_own_pending_entries_first(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send_many([out("agent-a", "m1"), out("agent-a", "m2")])
        first = await bus.consume("agent-a", "worker-1", block=0.5)
        assert len(first) == 2
    async with make_bus() as restarted:
        again = await restarted.consume("agent-a", "worker-1", block=0.5)
        assert [d.msg_id for d in again] == ["m1", "m2"]
        assert all(d.deliveries == 2 for d in again)
        assert (
            await restarted.commit("worker-1", [(d, ()) for d in again]) == [CommitStatus.DONE] * 2
        )


async def test_retry_waits_then_redelivers_with_history(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (d,) = await bus.consume("agent-a", "c1", block=0.5)
        assert await bus.retry(d, "c1", error="flaky upstream", delay=0.3)
        assert await bus.consume("agent-a", "c1", block=0.05) == []
        assert (await bus.stats("agent-a")).delayed == 1
        await anyio.sleep(0.35)
        redelivered = []
        with anyio.fail_after(3):
            while not redelivered:
                redelivered = await bus.consume("agent-a", "c1", block=0.1)
        (again,) = redelivered
        assert (again.msg_id, again.deliveries, again.history) == ("m1", 2, ("flaky upstream",))


async def test_poison_message_is_dead_lettered_after_max_deliveries_and_replayed(
    make_bus: MakeBus,
) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "poison", b"bad"))
        errors = 0
        with anyio.fail_after(10):
            while (await bus.stats("agent-a")).dead == 0:
                for d in await bus.consume("agent-a", "c1", block=0.1):
                    errors += 1
                    await bus.retry(d, "c1", error=f"boom {d.deliveries}", delay=0.0)
        assert errors == BUS_OPTIONS.max_deliveries
        (letter,) = await bus.dead_letters("agent-a")
        assert (letter.msg_id, letter.frame, letter.reason) == ("poison", b"bad", "max_deliveries")
        assert letter.deliveries == BUS_OPTIONS.max_deliveries
        assert letter.history == ("boom 1", "boom 2", "boom 3")
        assert await bus.replay("agent-a") == 1
        assert await bus.dead_letters("agent-a") == []
        (back,) = await bus.consume("agent-a", "c1", block=0.5)
        assert (back.msg_id, back.deliveries) == ("poison", 1)


async def test_crash_redeliveries_count_towards_dead_lettering(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "crashes-its-worker"))
        for attempt in range(1, BUS_OPTIONS.max_deliveries + 1):
            with anyio.fail_after(5):
                batch: list = []
                while not batch:
                    batch = await bus.consume("agent-a", f"worker-{attempt}", block=0.05)
            assert batch[0].deliveries == attempt
            await anyio.sleep(BUS_OPTIONS.min_idle + 0.05)  # the worker "dies" holding it
        assert await bus.consume("agent-a", "survivor", block=0.05) == []
        (letter,) = await bus.dead_letters("agent-a")
        assert letter.reason == "max_deliveries"
        assert letter.deliveries == BUS_OPTIONS.max_deliveries + 1


async def test_explicit_dead_letter_and_purge(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send_many([out("agent-a", "undecodable", b"\x00garbage"), out("agent-a", "m2")])
        first, second = await bus.consume("agent-a", "c1", block=0.5)
        assert await bus.dead_letter(
            first, "c1", reason="decode:bad_magic", error="first byte 0x00"
        )
        assert await bus.commit("c1", [(second, ())]) == [CommitStatus.DONE]
        (letter,) = await bus.dead_letters("agent-a")
        assert (letter.reason, letter.error, letter.frame) == (
            "decode:bad_magic",
            "first byte 0x00",
            b"\x00garbage",
        )
        assert await bus.purge("agent-a") == 1
        assert (await bus.stats("agent-a")).dead == 0


async def test_dead_letter_by_a_consumer_that_lost_the_entry_is_refused(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (held,) = await bus.consume("agent-a", "old", block=0.5)
        await anyio.sleep(BUS_OPTIONS.min_idle + 0.1)
        (taken,) = await bus.consume("agent-a", "new", block=0.5)
        assert not await bus.dead_letter(held, "old", reason="x", error="y")
        assert not await bus.retry(held, "old", error="y", delay=0)
        assert await bus.commit("new", [(taken, ())]) == [CommitStatus.DONE]


async def test_effects_left_in_the_outbox_by_a_dead_committer_are_relayed(
    make_bus: MakeBus,
) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (d,) = await bus.consume("agent-a", "c1", block=0.5)
        # the primitive commit, without the immediate forward: as if the process died here
        statuses, outbox = await bus._commit(
            "agent-a", "c1", [(d, [out("agent-b", "effect-1")])], []
        )
        assert statuses == [CommitStatus.DONE]
        assert len(outbox) == 1
        assert await bus.consume("agent-b", "c1", block=0.05) == []
        await anyio.sleep(BUS_OPTIONS.relay_after + 0.1)
        await bus.consume("agent-a", "c2", block=0.05)  # any consumer of agent-a relays
        assert [x.msg_id for x in await drain(bus, "agent-b")] == ["effect-1"]
        await bus.consume("agent-a", "c2", block=0.05)
        assert [x.msg_id for x in await drain(bus, "agent-b")] == []


async def test_request_reply_and_timeout(make_bus: MakeBus) -> None:
    async with make_bus() as client, make_bus() as server:

        async def responder() -> None:
            while True:
                for d in await server.consume("agent-a", "srv", block=0.2):
                    reply = Outgoing(
                        d.headers["reply-to"],
                        f"r-{d.msg_id}",
                        b"pong:" + d.frame,
                        server.reply_headers(d.msg_id),
                    )
                    await server.commit("srv", [(d, [reply])])

        async with anyio.create_task_group() as tg:
            tg.start_soon(responder)
            for i in range(3):
                reply = await client.request(
                    Outgoing("agent-a", f"q{i}", b"ping", {"reply-to": client.inbox}), timeout=5
                )
                assert reply.frame == b"pong:ping"
                assert reply.headers["acp-corr"] == f"q{i}"
            tg.cancel_scope.cancel()
        with pytest.raises(RequestTimeout, match="agent-z"):
            await client.request(
                Outgoing("agent-z", "lost", b"?", {"reply-to": client.inbox}), timeout=0.3
            )


async def test_concurrent_requests_get_their_own_replies_and_the_inbox_drains(
    make_bus: MakeBus,
) -> None:
    async with make_bus() as client, make_bus() as server:

        async def responder() -> None:
            while True:
                batch = await server.consume("agent-a", "srv", block=0.2)
                done = []
                for d in batch:
                    # every request is answered twice: the first reply must win
                    replies = [
                        Outgoing(
                            client.inbox,
                            f"r{n}-{d.msg_id}",
                            b"pong%d:" % n + d.frame,
                            server.reply_headers(d.msg_id),
                        )
                        for n in (1, 2)
                    ]
                    done.append((d, replies))
                await server.commit("srv", done)

        replies: dict[str, bytes] = {}

        async def ask(name: str) -> None:
            reply = await client.request(Outgoing("agent-a", name, name.encode()), timeout=5)
            replies[name] = reply.frame

        names = [f"q{wave}-{i}" for wave in range(2) for i in range(20)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(responder)
            for wave in range(2):  # the second wave rides with reads the first one left behind
                async with anyio.create_task_group() as askers:
                    for name in names[wave * 20 : (wave + 1) * 20]:
                        askers.start_soon(ask, name)
            tg.cancel_scope.cancel()
        assert replies == {name: b"pong1:" + name.encode() for name in names}
        with anyio.fail_after(5):  # every reply read is acknowledged or deleted, soon
            while (stats := await client.stats(client.inbox)).pending or stats.ready:
                await anyio.sleep(0.05)


async def test_a_request_whose_send_fails_gets_the_error_and_the_next_one_works(
    make_bus: MakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_bus() as client, make_bus() as server:
        real = client._read_inbox
        failures = []

        async def refuse_first_send(seen, sends, **kw):  # type: ignore[no-untyped-def]
            if sends and not failures:
                failures.append(sends)
                raise ConfigError("the server refused the send (out of memory, say)")
            return await real(seen, sends, **kw)

        monkeypatch.setattr(client, "_read_inbox", refuse_first_send)

        async def responder() -> None:
            while True:
                batch = await server.consume("agent-a", "srv", block=0.2)
                await server.commit(
                    "srv",
                    [
                        (
                            d,
                            [
                                Outgoing(
                                    client.inbox,
                                    "r-" + d.msg_id,
                                    b"pong",
                                    server.reply_headers(d.msg_id),
                                )
                            ],
                        )
                        for d in batch
                    ],
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(responder)
            with pytest.raises(ConfigError, match="refused"):
                await client.request(Outgoing("agent-a", "first", b"?"), timeout=5)
            reply = await client.request(Outgoing("agent-a", "second", b"?"), timeout=5)
            assert reply.msg_id == "r-second"
            tg.cancel_scope.cancel()
        assert [item.msg_id for item in failures[0]] == ["first"]


async def test_topics_fan_out_and_resume_from_last_id(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.publish("status", b"old")
        seen = []

        async def listen() -> None:
            async for event in bus.subscribe("status"):
                seen.append(event)
                if len(seen) == 2:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0.1)
            await bus.publish("status", b"e1", {"k": "v"})
            await bus.publish("status", b"e2")
        assert [e.frame for e in seen] == [b"e1", b"e2"]
        assert seen[0].headers == {"k": "v"}
        await bus.publish("status", b"e3")
        resumed = []
        with anyio.fail_after(3):
            async for event in bus.subscribe("status", after=seen[-1].event_id):
                resumed.append(event.frame)
                break
        assert resumed == [b"e3"]


async def test_misuse_is_reported(make_bus: MakeBus) -> None:
    bus = make_bus()
    with pytest.raises(BusClosed):
        await bus.send(out("agent-a", "m1"))  # type: ignore[attr-defined]
    async with make_bus() as opened:
        with pytest.raises(ConfigError, match="destination name"):
            await opened.send(out("bad name {x}", "m1"))


async def test_a_repeated_commit_reports_duplicate_not_lost(make_bus: MakeBus) -> None:
    """A commit retried after its reply was lost must not look like lost ownership."""
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (d,) = await bus.consume("agent-a", "c1", block=0.5)
        assert await bus.commit("c1", [(d, [out("agent-b", "e1")])]) == [CommitStatus.DONE]
        assert await bus.commit("c1", [(d, [out("agent-b", "e1-again")])]) == [
            CommitStatus.DUPLICATE
        ]
        assert [x.msg_id for x in await drain(bus, "agent-b")] == ["e1"]


async def test_errors_inside_the_bus_context_propagate_unwrapped(make_bus: MakeBus) -> None:
    async def fail_inside() -> None:
        async with make_bus() as bus:
            await bus.send(out("agent-a", "m1"))
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await fail_inside()


async def test_replaying_the_same_dead_letter_twice_puts_it_back_once(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "m1"))
        (d,) = await bus.consume("agent-a", "c1", block=0.5)
        await bus.dead_letter(d, "c1", reason="x", error="y")
        (letter,) = await bus.dead_letters("agent-a")
        assert await bus.replay("agent-a", [letter.entry_id, letter.entry_id]) == 1
        assert (await bus.stats("agent-a")).ready == 1


async def test_presence_expires_without_heartbeats(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.announce("workers", "w1", b'{"agent": "a"}', ttl=0.3)
        await bus.announce("workers", "w2", b"{}", ttl=30)
        assert await bus.members("workers") == {"w1": b'{"agent": "a"}', "w2": b"{}"}
        await anyio.sleep(0.4)
        assert set(await bus.members("workers")) == {"w2"}
        await bus.withdraw("workers", "w2")
        assert await bus.members("workers") == {}


async def test_a_restarted_consumer_drains_all_its_leftovers_batch_by_batch(
    make_bus: MakeBus,
) -> None:
    async with make_bus() as bus:
        await bus.send_many([out("agent-a", f"m{i}") for i in range(7)])
        assert len(await bus.consume("agent-a", "w", count=10, block=0.5)) == 7
    async with make_bus() as restarted:
        seen = []
        for _ in range(3):
            seen += await restarted.consume("agent-a", "w", count=3, block=0.05)
        assert sorted(d.msg_id for d in seen) == sorted(f"m{i}" for i in range(7))


async def test_a_lease_has_one_holder_and_a_growing_fencing_token(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        first = await bus.lease("leader", "a", ttl=0.3)
        assert first is not None
        assert await bus.lease("leader", "b", ttl=0.3) is None
        assert await bus.lease("leader", "a", ttl=0.3) == first  # renewal keeps the token
        await anyio.sleep(0.4)
        second = await bus.lease("leader", "b", ttl=5)
        assert second is not None
        assert second > first
        await bus.release("leader", "a")  # not the holder: nothing happens
        assert await bus.lease("leader", "a", ttl=5) is None
        await bus.release("leader", "b")
        assert await bus.lease("leader", "a", ttl=5) == second + 1


async def test_counters_add_up(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.add_to_counters("spend.2026-11-26", {"total": 0.25, "agent:a": 0.25}, ttl=3600)
        await bus.add_to_counters("spend.2026-11-26", {"total": 0.5})
        assert await bus.counters("spend.2026-11-26") == {"total": 0.75, "agent:a": 0.25}
        assert await bus.counters("nothing-yet") == {}


async def test_counters_records_and_joins_go_with_their_time_to_live(make_bus: MakeBus) -> None:
    """What is written with a time to live is gone after it on every bus (the memory
    bus kept them as long as the broker: an embedded service grew with every tree)."""
    async with make_bus() as bus:
        await bus.add_to_counters("tree.t1", {"children": 2.0}, ttl=1, once="step-1")
        await bus.append_record("conv.t1", 0, b"turn", ttl=1.0)
        await bus.open_join("join.t1", 2, b"then", {"a": b"1"}, ttl=1.0)
        await bus.mark("marks.t1", ["x"], ttl=1.0)
        await bus.add_to_counters("spend.kept", {"total": 1.0})  # no time to live
        assert await bus.counters("tree.t1") == {"children": 2.0}
        await anyio.sleep(1.3)
        assert await bus.counters("tree.t1") == {}
        assert await bus.read_record("conv.t1") == []
        assert await bus.join_parts("join.t1") == {}
        assert await bus.counters("spend.kept") == {"total": 1.0}
        # the once-key went with its counters: the same step counts again
        assert await bus.add_to_counters("tree.t1", {"children": 1.0}, ttl=1, once="step-1")
        if isinstance(bus, MemoryBus):  # nothing left behind, read or not
            broker = bus.broker
            held = (broker.counters, broker.counted, broker.records, broker.joins, broker.marks)
            assert [sorted(kind) for kind in held] == [
                ["spend.kept", "tree.t1"],
                ["tree.t1"],
                [],
                [],
                [],
            ]


async def test_a_part_that_comes_after_its_join_went_is_not_kept(make_bus: MakeBus) -> None:
    """A late copy of an answer recreates its rendezvous: it goes after the ledger's
    time instead of staying for good."""
    async with make_bus(BusOptions(ledger_ttl=1.0)) as bus:
        assert await bus.arrive("join.gone", "a", b"late") is None
        assert await bus.join_parts("join.gone") == {"a": b"late"}
        await anyio.sleep(1.3)
        assert await bus.join_parts("join.gone") == {}


async def test_marks_expire_one_by_one(make_bus: MakeBus) -> None:
    """A marked member is found until its own time is up, however often the set is
    marked again meanwhile (the set does not keep what a renewal would keep)."""
    async with make_bus() as bus:
        assert await bus.marked("cancelled", ["a"]) == set()
        await bus.mark("cancelled", ["a", "b"], ttl=0.6)
        assert await bus.marked("cancelled", ["a", "b", "c"]) == {"a", "b"}
        assert await bus.marked("cancelled", []) == set()
        await anyio.sleep(0.4)
        await bus.mark("cancelled", ["c"], ttl=0.6)
        await bus.mark("cancelled", ["b"], ttl=0.6)  # marked again: its time starts again
        await anyio.sleep(0.4)
        assert await bus.marked("cancelled", ["a", "b", "c"]) == {"b", "c"}
        await anyio.sleep(0.4)
        assert await bus.marked("cancelled", ["a", "b", "c"]) == set()


async def test_an_observer_follows_new_entries_without_taking_them(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        await bus.send(out("agent-a", "before"))
        seen: list[str] = []

        async def observe() -> None:
            async for delivery in bus.follow(["agent-a", "agent-b"]):
                seen.append(f"{delivery.dest}:{delivery.msg_id}")
                if len(seen) == 2:
                    return

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(observe)
                await anyio.sleep(0.2)
                await bus.send_many([out("agent-a", "m1"), out("agent-b", "m2")])
        assert sorted(seen) == ["agent-a:m1", "agent-b:m2"]
        assert (
            len(await bus.consume("agent-a", "c1", count=10, block=0.5)) == 2
        )  # still there to consume


async def test_a_consumer_that_stops_leaves_the_group_unless_it_holds_entries(
    bus_backend: BusFactory,
) -> None:
    """A worker restarted under a new name (the default, host-pid) leaves nothing of its
    old self in the group; one that still holds entries keeps them for a reclaim."""
    async with bus_backend(BusOptions(min_idle=60.0)) as bus:
        await bus.send(Outgoing("q", "m1", b"x"))
        (held,) = await bus.consume("q", "w-1", block=0.1)
        await bus.consume("q", "w-2", block=0.05)
        assert (await bus.stats("q")).consumers == 2
        assert not await bus.leave("q", "w-1")  # holds m1
        assert await bus.leave("q", "w-2")
        assert (await bus.stats("q")).consumers == 1
        await bus.commit("w-1", [(held, [])])
        assert await bus.leave("q", "w-1")
        assert (await bus.stats("q")).consumers == 0


async def test_records_append_once_in_order(make_bus: MakeBus) -> None:
    """A conversation is written turn by turn: a re-run appending a turn it appended
    before changes nothing, a gap is refused, nothing is rewritten."""
    async with make_bus() as bus:
        assert await bus.append_record("conv-1", 0, b"turn 0", ttl=60)
        assert await bus.append_record("conv-1", 1, b"turn 1", ttl=60)
        assert await bus.append_record("conv-1", 1, b"turn 1 again", ttl=60)  # a re-run
        assert not await bus.append_record("conv-1", 3, b"a gap", ttl=60)
        assert await bus.read_record("conv-1") == [b"turn 0", b"turn 1"]
        assert await bus.read_record("conv-2") == []


async def test_a_join_hands_its_payload_to_whoever_brings_the_last_part(
    make_bus: MakeBus,
) -> None:
    async with make_bus() as bus:
        assert await bus.arrive("j1", "early", b"came before the opening") is None
        await bus.open_join("j1", 3, b"resume", {"local": b"done here"}, ttl=60)
        await bus.open_join("j1", 5, b"other", {}, ttl=60)  # opening again: no change
        assert await bus.arrive("j1", "late", b"last") == b"resume"
        assert await bus.arrive("j1", "late", b"a copy") == b"resume"  # first value wins
        assert await bus.join_parts("j1") == {
            "early": b"came before the opening",
            "local": b"done here",
            "late": b"last",
        }


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda bus: bus.announce("bad name", "m", b"", ttl=1), "presence group"),
        (lambda bus: bus.members("{slot}"), "presence group"),
        (lambda bus: bus.lease("bad name", "me", ttl=1), "lease"),
        (lambda bus: bus.add_to_counters("a b", {"x": 1.0}), "counters"),
        (lambda bus: bus.counters(""), "counters"),
        (lambda bus: bus.mark("a b", ["x"], ttl=1.0), "marks"),
        (lambda bus: bus.marked("", ["x"]), "marks"),
        (lambda bus: bus.append_record("no/slash?", 0, b"x", ttl=1), "record"),
        (lambda bus: bus.open_join("a b", 1, b"", {}, ttl=1), "join"),
        (lambda bus: bus.publish("a b", b"x"), "topic"),
        (lambda bus: bus.stats("a b"), "destination"),
    ],
)
async def test_both_buses_refuse_the_same_bad_names(make_bus: MakeBus, call, what: str) -> None:
    """The checks live in ``Bus`` itself: a backend cannot accept a name the other
    refuses (the memory bus used to take any group, lease or counter name)."""
    async with make_bus() as bus:
        with pytest.raises(ConfigError, match=what):
            await call(bus)


async def test_asking_about_a_destination_creates_nothing(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        before = await bus.destinations()
        stats = await bus.stats("nosuch")
        assert (stats.ready, stats.pending, stats.dead, stats.consumers) == (0, 0, 0, 0)
        assert await bus.destinations() == before


async def test_every_public_method_refuses_a_closed_bus(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        pass
    with pytest.raises(BusClosed):
        await bus.counters("spend")
    with pytest.raises(BusClosed):
        bus.subscribe("status")


async def test_following_nothing_is_refused_plainly(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        with pytest.raises(ConfigError, match="at least one destination"):
            bus.follow([])
