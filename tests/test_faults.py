"""Faults against real servers: killed workers, a killed server, killed connections.

Each test checks the two promises of the bus: nothing is lost, and every effect
happens exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import redis

from acp.errors import ConnectionLost
from acp.protocol import Envelope, WireCodec
from acp.runtime.bus import BusOptions, Outgoing, RedisBus
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.keys import Keys
from acp.runtime.processor import Processor

WORKER = Path(__file__).with_name("fault_worker.py")
codec = WireCodec(verify=False)


def spawn(url: str, consumer: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(WORKER.parents[1])}
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, consumer],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def results(url: str) -> list[int]:
    client = redis.Redis.from_url(url)
    try:
        return [codec.decode(f[b"f"]).body["n"] for _, f in client.xrange(Keys("results").stream)]
    finally:
        client.close()


def progress(url: str) -> int:
    """Results committed so far (cheap enough to poll)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen(Keys("results").stream))
    finally:
        client.close()


async def produce(url: str, count: int, dest: str = "work") -> list[str]:
    ids = []
    async with RedisBus.from_url(url) as bus:
        for start in range(0, count, 500):
            items = []
            for n in range(start, min(start + 500, count)):
                env = Envelope.for_body({"cmd": "DOUBLE", "n": n}, sender="tester", recipient=dest)
                items.append(Outgoing(dest, env.id, codec.encode(env)))
                ids.append(env.id)
            await bus.send_many(items)
    return ids


@pytest.mark.timeout(180)
def test_ten_thousand_messages_three_workers_one_killed_repeatedly(redis_url: str) -> None:
    total = 10_000
    anyio.run(produce, redis_url, total)
    workers = {name: spawn(redis_url, name) for name in ("w0", "w1", "w2")}
    kills = 0
    try:
        deadline = time.monotonic() + 150
        while (done := progress(redis_url)) < total:
            assert time.monotonic() < deadline, f"only {done} of {total} handled"
            time.sleep(0.6)
            if kills < 5 and progress(redis_url) < total * 0.9:
                workers["w0"].send_signal(signal.SIGKILL)
                workers["w0"].wait()
                kills += 1
                # restarted under the same name it drains its own leftovers; after the
                # last kill it stays dead and the others reclaim what it held
                if kills < 5:
                    workers["w0"] = spawn(redis_url, "w0")
        time.sleep(1.0)  # let any straggling relay or duplicate show itself
        handled = results(redis_url)
    finally:
        for proc in workers.values():
            proc.kill()
            proc.wait()
    print(
        f"\n{total} messages, worker w0 SIGKILLed {kills} times; results {len(handled)}, distinct {len(set(handled))}"
    )
    assert kills >= 3, "the run finished before the worker could be killed several times"
    assert len(handled) == total, f"{len(handled) - len(set(handled))} duplicated effects"
    assert sorted(handled) == list(range(total))

    async def leftovers() -> tuple[int, int, int, int]:
        async with RedisBus.from_url(redis_url) as bus:
            stats = await bus.stats("work")
            outbox = await bus.redis.xlen(Keys("work").outbox)
            return stats.ready, stats.pending, stats.dead, outbox

    assert anyio.run(leftovers) == (0, 0, 0, 0)


@pytest.mark.timeout(120)
def test_no_acknowledged_send_is_lost_when_the_server_is_killed(
    isolated_redis_server: EmbeddedServer,
) -> None:
    """Safe mode: a send that returned is on disk, whatever happens next."""
    server = isolated_redis_server
    confirmed: list[str] = []

    async def send_until_the_server_dies() -> None:
        async with RedisBus.from_url(server.url, durability="safe", reconnect_timeout=0.5) as bus:
            for n in range(100_000):
                env = Envelope.for_body({"n": n}, sender="tester", recipient="work")
                await bus.send(Outgoing("work", env.id, codec.encode(env)))
                confirmed.append(env.id)
                if n == 300:
                    server.kill()

    with pytest.raises(ConnectionLost):
        anyio.run(send_until_the_server_dies)
    assert len(confirmed) >= 300
    server.restart()
    client = redis.Redis.from_url(server.url)
    try:
        stored = {f[b"m"].decode() for _, f in client.xrange(Keys("work").stream)}
    finally:
        client.close()
    missing = [i for i in confirmed if i not in stored]
    print(
        f"\nserver SIGKILLed after {len(confirmed)} acknowledged sends; {len(stored)} on disk after restart"
    )
    assert missing == [], f"{len(missing)} acknowledged sends lost"


@pytest.mark.timeout(120)
def test_processing_survives_a_server_restart_in_safe_mode(
    isolated_redis_server: EmbeddedServer,
) -> None:
    server = isolated_redis_server
    total = 2_000
    anyio.run(produce, server.url, total)
    handled: list[int] = []

    async def run() -> None:
        async def handler(env: Envelope) -> list[Envelope]:
            handled.append(env.body["n"])
            await anyio.sleep(0.001)
            return [Envelope.for_body({"n": env.body["n"]}, sender="work", recipient="results")]

        options = BusOptions(min_idle=1.0, reclaim_interval=0.2, relay_after=0.5)
        async with RedisBus.from_url(
            server.url, options, durability="safe", reconnect_timeout=30
        ) as bus:
            processor = Processor(
                bus, "work", handler, consumer="survivor", concurrency=8, batch=50
            )
            async with anyio.create_task_group() as tg:
                await tg.start(processor.run)
                while len(handled) < total // 3:
                    await anyio.sleep(0.01)
                await anyio.to_thread.run_sync(server.kill)
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(server.restart)
                with anyio.fail_after(90):
                    while len(results(server.url)) < total:
                        await anyio.sleep(0.1)
                processor.stop()

    anyio.run(run)
    done = results(server.url)
    assert sorted(done) == list(range(total)), "every message's effect exactly once"


@pytest.mark.timeout(120)
def test_killed_connections_are_reopened_without_losing_or_repeating_work(redis_url: str) -> None:
    total = 3_000
    anyio.run(produce, redis_url, total)

    async def run() -> None:
        async def handler(env: Envelope) -> list[Envelope]:
            await anyio.sleep(0.0005)
            return [Envelope.for_body({"n": env.body["n"]}, sender="work", recipient="results")]

        options = BusOptions(min_idle=1.0, reclaim_interval=0.2, relay_after=0.5)
        async with RedisBus.from_url(redis_url, options) as bus:
            processor = Processor(bus, "work", handler, consumer="w", concurrency=16, batch=50)
            admin = redis.asyncio.Redis.from_url(redis_url)
            async with anyio.create_task_group() as tg:
                await tg.start(processor.run)
                for _ in range(5):
                    await anyio.sleep(0.3)
                    await admin.client_kill_filter(_type="normal", skipme=True)
                with anyio.fail_after(60):
                    while len(results(redis_url)) < total:
                        await anyio.sleep(0.1)
                processor.stop()
            await admin.aclose()

    anyio.run(run)
    assert sorted(results(redis_url)) == list(range(total))
