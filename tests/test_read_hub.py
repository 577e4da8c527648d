"""The shared waiting read (``acp.runtime.bus.hub``): queues a consumer waits on share
one read and one connection per server (per node on a cluster), a message to any of
them is read at once, and a busy queue does not hold the others back."""

from __future__ import annotations

import time
from functools import partial

import anyio
import pytest
import redis
from redis.cluster import RedisCluster

from acp.protocol import Envelope
from acp.runtime.bus import BusOptions, Outgoing, RedisBus
from acp.runtime.keys import Keys
from acp.runtime.processor import Processor
from acp.runtime.settings import RedisSettings

pytestmark = pytest.mark.anyio
OPTIONS = BusOptions(min_idle=60.0)
QUEUES = [f"q{i:02d}" for i in range(40)]


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def connections(url: str) -> int:
    """Clients connected to the server (every primary of a cluster)."""
    settings = RedisSettings.from_url(url)
    nodes = [(settings.host, settings.port)]
    if settings.cluster:
        seed = RedisCluster(host=settings.host, port=settings.port)
        try:
            nodes = [(n.host, int(n.port)) for n in seed.get_primaries()]
        finally:
            seed.close()
    total = 0
    for host, port in nodes:
        client = redis.Redis(host=host, port=port)
        try:
            total += len(client.client_list()) - 1
        finally:
            client.close()
    return total


async def test_forty_waiting_queues_share_one_read_and_a_message_is_read_at_once(url: str) -> None:
    async with RedisBus.from_url(url, OPTIONS) as bus, RedisBus.from_url(url, OPTIONS) as sender:
        async with anyio.create_task_group() as tg:
            # the queues exist (a worker's first read creates them)
            for q in QUEUES:
                tg.start_soon(partial(bus.consume, q, "w1", block=0))
        async with anyio.create_task_group() as tg:
            # the hot path holds all it may (8 per server or node): eight slow reads at
            # once for every queue, so that only the waiting read can add a connection
            for q in QUEUES:
                for _ in range(8):
                    read = ("XREAD", "BLOCK", 200, "STREAMS", Keys(q).stream, "$")
                    tg.start_soon(bus.lines.run, [read])
        before = connections(url)
        got: dict[str, float] = {}

        async def wait(q: str) -> None:
            batch = await bus.consume(q, "w1", count=10, block=3.0)
            if batch:
                got[q] = time.monotonic()

        async with anyio.create_task_group() as tg:
            for q in QUEUES:
                tg.start_soon(wait, q)
            await anyio.sleep(0.5)
            during = connections(url)
            sent = time.monotonic()
            await sender.send(Outgoing("q17", "m-17", b"x"))
        waited = got["q17"] - sent
    shards = 3 if RedisSettings.from_url(url).cluster else 1
    print(
        f"\n40 queues waiting: {during - before} connection(s) more; q17 read after {waited * 1000:.0f} ms"
    )
    assert list(got) == ["q17"]
    assert during - before <= shards, "one waiting read per server or node, not per queue"
    assert waited < (0.5 if shards > 1 else 0.1)


async def test_a_busy_queue_does_not_hold_back_a_quiet_one(url: str) -> None:
    handled: dict[str, list[float]] = {"busy": [], "quiet": []}

    async def handler(env: Envelope) -> list[Envelope]:
        handled[env.recipient].append(time.monotonic())
        await anyio.sleep(0.002)
        return []

    async with RedisBus.from_url(url, OPTIONS) as bus, RedisBus.from_url(url, OPTIONS) as sender:
        busy = [Envelope.for_body({"n": n}, sender="t", recipient="busy") for n in range(3000)]
        from acp.protocol import WireCodec

        codec = WireCodec(verify=False)
        await sender.send_many([Outgoing("busy", e.id, codec.encode(e)) for e in busy])
        processors = [
            Processor(bus, dest, handler, codec=codec, consumer="w1", concurrency=16, batch=50)
            for dest in ("busy", "quiet")
        ]
        async with anyio.create_task_group() as tg:
            for p in processors:
                await tg.start(p.run)
            while len(handled["busy"]) < 200:
                await anyio.sleep(0.01)
            quiet = Envelope.for_body({"n": 0}, sender="t", recipient="quiet")
            sent = time.monotonic()
            await sender.send(Outgoing("quiet", quiet.id, codec.encode(quiet)))
            with anyio.fail_after(5):
                while not handled["quiet"]:
                    await anyio.sleep(0.005)
            for p in processors:
                p.stop()
    waited = handled["quiet"][0] - sent
    print(f"\nquiet queue's message handled {waited * 1000:.0f} ms after it was sent, "
          f"with {3000 - len(handled['busy'])} still queued on the busy one")  # fmt: skip
    assert len(handled["busy"]) < 3000, "the busy queue was still busy"
    assert waited < 0.5


async def test_a_subscriber_hears_an_event_at_once(url: str) -> None:
    """One topic is one slot: a subscriber blocks on it even on a cluster (the
    coordinator's completions ride on this; a poll would delay every slot release)."""
    async with RedisBus.from_url(url, OPTIONS) as bus, RedisBus.from_url(url, OPTIONS) as other:
        heard: list[float] = []

        async def listen() -> None:
            async for _ in bus.subscribe("completions"):
                heard.append(time.monotonic())
                return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0.3)
            sent = time.monotonic()
            await other.publish("completions", b"done")
        assert heard[0] - sent < 0.1
