"""The processor: handlers run once per message, bad input is dead-lettered, nothing is lost."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

import anyio
import pytest

from acp.errors import RetryableError
from acp.protocol import Envelope, KeyRing, WireCodec
from acp.runtime.bus import Bus, BusOptions, CommitStatus, Outgoing
from acp.runtime.processor import Processor, to_outgoing

pytestmark = pytest.mark.anyio

BUS_OPTIONS = BusOptions(
    min_idle=0.3,
    reclaim_interval=0.05,
    retry_base=0.05,
    retry_cap=0.1,
    relay_after=0.2,
    max_deliveries=3,
)
MakeBus = Callable[..., AbstractAsyncContextManager[Bus]]
codec = WireCodec()


def command(
    n: int, *, recipient: str = "worker", reply_to: str | None = None, **fields: object
) -> Envelope:
    return Envelope.for_body(
        {"cmd": "DOUBLE", "n": n}, sender="tester", recipient=recipient, reply_to=reply_to, **fields
    )


async def send(
    bus: Bus, env: Envelope, frame: bytes | None = None, *, dest: str = "worker"
) -> None:
    await bus.send(Outgoing(dest, env.id, codec.encode(env) if frame is None else frame))


async def doubler(env: Envelope) -> Sequence[Envelope]:
    return [env.reply({"n": env.body["n"] * 2})]


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_request_reply_through_a_processor(make_bus: MakeBus) -> None:
    async with make_bus() as worker_bus, make_bus() as client, anyio.create_task_group() as tg:
        processor = Processor(worker_bus, "worker", doubler, consumer="w1")
        await tg.start(processor.run)
        for n in range(5):
            env = command(n, reply_to=client.inbox)
            reply = await client.request(to_outgoing(env, codec.encode(env)), timeout=5)
            decoded = codec.decode(reply.frame)
            assert decoded.body == {"n": n * 2}
            assert decoded.correlation_id == env.id
        processor.stop()
    assert processor.stats.handled == 5


async def test_bad_input_is_dead_lettered_with_a_reason_and_the_worker_keeps_going(
    make_bus: MakeBus,
) -> None:
    signed = WireCodec(keys=KeyRing({"k1": b"k" * 32}))
    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", doubler, consumer="w1")
        await tg.start(processor.run)
        good = command(1, reply_to="sink")
        plain = WireCodec(compress=False).encode(command(200_000))
        tampered = plain.replace(
            b"\xce\x00\x03\x0d\x40", b"\xce\x00\x03\x0d\x41"
        )  # n: 200000 -> 200001
        assert tampered != plain
        await send(bus, command(3), b"\x00not a frame")
        await send(bus, command(4), b"\xa2\x03" + b"\x00" * (2 << 20))
        await send(bus, command(5), tampered)
        await send(bus, command(6), signed.encode(command(6)))
        await send(bus, command(7, recipient="someone-else"))
        await send(bus, command(8, deadline=time.time() - 5))
        await send(bus, good)
        await wait_for(lambda: processor.stats.handled == 1 and processor.stats.dead_lettered == 6)
        processor.stop()
    async with make_bus() as bus:
        reasons = sorted(d.reason for d in await bus.dead_letters("worker"))
        assert reasons == sorted(
            [
                "decode:bad_magic",
                "decode:too_large",
                "integrity",
                "integrity",
                "unknown_recipient",
                "deadline",
            ]
        )
        letters = {d.reason: d for d in await bus.dead_letters("worker")}
        assert "someone-else" in letters["unknown_recipient"].error
        assert (await bus.stats("worker")).pending == 0


async def test_retryable_errors_are_retried_then_succeed(make_bus: MakeBus) -> None:
    attempts: list[int] = []

    async def flaky(env: Envelope) -> Sequence[Envelope]:
        attempts.append(env.attempt)
        if env.attempt < 3:
            raise RetryableError("upstream busy", retry_after=0.05)
        return await doubler(env)

    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", flaky, consumer="w1")
        await tg.start(processor.run)
        await send(bus, command(21, reply_to="sink"))
        await wait_for(lambda: processor.stats.handled == 1)
        processor.stop()
    assert attempts == [1, 2, 3]


async def test_unexpected_handler_errors_are_dead_lettered(make_bus: MakeBus) -> None:
    async def broken(env: Envelope) -> Sequence[Envelope]:
        raise ValueError("cannot handle n")

    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", broken, consumer="w1")
        await tg.start(processor.run)
        await send(bus, command(1))
        await wait_for(lambda: processor.stats.dead_lettered == 1)
        processor.stop()
        (letter,) = await bus.dead_letters("worker")
        assert letter.reason == "handler_error"
        assert "ValueError: cannot handle n" in letter.error


async def test_a_reply_that_cannot_be_encoded_fails_its_message_not_the_worker(
    make_bus: MakeBus,
) -> None:
    async def answers_with_a_set(env: Envelope) -> Sequence[Envelope]:
        if env.body["n"] == 1:
            return [env.reply({"n": {1, 2}})]  # msgpack cannot carry a set
        return await doubler(env)

    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", answers_with_a_set, consumer="w1")
        await tg.start(processor.run)
        await send(bus, command(1))
        await send(bus, command(2))
        await wait_for(lambda: processor.stats.dead_lettered == 1 and processor.stats.handled == 1)
        processor.stop()
        (letter,) = await bus.dead_letters("worker")
        assert letter.reason == "handler_error"
        assert "msgpack cannot carry" in letter.error


async def test_an_entry_taken_over_mid_handler_is_not_committed_by_the_loser(
    make_bus: MakeBus,
) -> None:
    release = anyio.Event()

    async def slow(env: Envelope) -> Sequence[Envelope]:
        await release.wait()
        return [env.reply({"from": "the loser"})]

    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", slow, consumer="w1")
        await tg.start(processor.run)
        await send(bus, command(1, reply_to="tester"))
        await wait_for(lambda: processor.stats.in_flight == 1)
        (taken,) = await bus._reclaim("worker", "w2", min_idle=0.0, count=10)
        await wait_for(lambda: processor.stats.lost == 1)  # its next renewal notices
        release.set()
        assert await bus.commit("w2", [(taken, [])]) == [CommitStatus.DONE]
        await anyio.sleep(0.2)
        processor.stop()
        assert (await bus.stats("tester")).ready == 0  # the loser's reply never went out
    assert processor.stats.handled == 0
    assert processor._lost == set()  # nothing remembered past the entry's release


async def test_long_handler_keeps_its_lease_and_runs_once(make_bus: MakeBus) -> None:
    runs: list[str] = []

    async def slow(env: Envelope) -> Sequence[Envelope]:
        runs.append(env.id)
        await anyio.sleep(BUS_OPTIONS.min_idle * 4)
        return await doubler(env)

    async with make_bus() as bus_a, make_bus() as bus_b, anyio.create_task_group() as tg:
        a = Processor(bus_a, "worker", slow, consumer="a")
        b = Processor(bus_b, "worker", slow, consumer="b")
        await tg.start(a.run)
        await send(bus_a, command(1, reply_to="sink"))
        await wait_for(lambda: runs)
        await tg.start(b.run)
        await wait_for(lambda: a.stats.handled == 1, timeout=10)
        a.stop()
        b.stop()
    assert len(runs) == 1
    assert b.stats.handled == 0


async def test_stop_lets_in_flight_work_finish_and_commit(make_bus: MakeBus) -> None:
    started = anyio.Event()

    async def slowish(env: Envelope) -> Sequence[Envelope]:
        started.set()
        await anyio.sleep(0.3)
        return await doubler(env)

    async with make_bus() as bus:
        processor = Processor(bus, "worker", slowish, consumer="w1", grace=5)
        async with anyio.create_task_group() as tg:
            await tg.start(processor.run)
            await send(bus, command(1, reply_to="sink"))
            await started.wait()
            processor.stop()
        assert processor.stats.handled == 1
        stats = await bus.stats("worker")
        assert (stats.pending, stats.ready) == (0, 0)
        (reply,) = await bus.consume("sink", "c", block=1)
        assert codec.decode(reply.frame).body == {"n": 2}


async def test_work_unfinished_at_shutdown_is_picked_up_by_another_worker(
    make_bus: MakeBus,
) -> None:
    async def stuck(env: Envelope) -> Sequence[Envelope]:
        await anyio.sleep(60)
        return []

    async with make_bus() as bus:
        first = Processor(bus, "worker", stuck, consumer="first", grace=0.1)
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            await send(bus, command(1, reply_to="sink"))
            await wait_for(lambda: first._in_flight)
            first.stop()
        assert first.stats.handled == 0
        second = Processor(bus, "worker", doubler, consumer="second")
        async with anyio.create_task_group() as tg:
            await tg.start(second.run)
            await wait_for(lambda: second.stats.handled == 1)
            second.stop()
        (reply,) = await bus.consume("sink", "c", block=1)
        assert codec.decode(reply.frame).body == {"n": 2}


async def test_effects_are_committed_with_the_message(make_bus: MakeBus) -> None:
    async def fan_out(env: Envelope) -> Sequence[Envelope]:
        return [
            Envelope.for_body({"cmd": "NOTE", "i": i}, sender="worker", recipient="audit")
            for i in range(3)
        ] + [env.reply({"ok": True})]

    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", fan_out, consumer="w1")
        await tg.start(processor.run)
        await send(bus, command(1, reply_to="sink"))
        await wait_for(lambda: processor.stats.handled == 1)
        processor.stop()
        notes = await bus.consume("audit", "c", block=1)
        assert sorted(codec.decode(d.frame).body["i"] for d in notes) == [0, 1, 2]


def test_outgoing_carries_the_correlation_header() -> None:
    env = command(1).reply({"x": 1})
    item = to_outgoing(env, b"f")
    assert isinstance(item, Outgoing)
    assert item.headers == {"acp-corr": env.correlation_id}
    assert item.dest == "tester"


async def test_a_paused_processor_takes_no_work_until_the_pause_ends(make_bus: MakeBus) -> None:
    async with make_bus() as bus, anyio.create_task_group() as tg:
        processor = Processor(bus, "worker", doubler, consumer="w1", block=0.1)
        await tg.start(processor.run)
        processor.pause(0.6)
        await send(bus, command(1, reply_to="sink"))
        await anyio.sleep(0.3)
        assert processor.stats.handled == 0
        stats = await bus.stats("worker")
        assert stats.ready + stats.pending == 1  # waiting, or held with its lease
        await wait_for(lambda: processor.stats.handled == 1)
        processor.stop()
