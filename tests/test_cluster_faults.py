"""Faults on a local cluster (three primaries, one replica each): the primary that
owns a busy queue is SIGKILLed and its replica promoted; the slot of a busy queue
is migrated to another primary mid-run. The bus's promises hold through both:
with ``durability="replicated"`` nothing acknowledged is lost and every effect
happens exactly once; with ``"fast"`` the loss is measured (the README gives it).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from acp.protocol import Envelope, WireCodec
from acp.runtime.bus import BusOptions, Durability, Outgoing, RedisBus
from acp.runtime.cluster import EmbeddedCluster
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.keys import Keys
from acp.runtime.processor import Processor

codec = WireCodec(verify=False)
OPTIONS = BusOptions(min_idle=1.0, reclaim_interval=0.2, relay_after=0.5, max_deliveries=50)
WORK = Keys("work").stream


@pytest.fixture
def cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of its own: these tests kill and reshape it."""
    with EmbeddedCluster(primaries=3, replicas=1, node_timeout_ms=1000) as running:
        yield running


def _client(cluster: EmbeddedCluster) -> Any:
    """A cluster client on a node that is still alive."""
    for node in cluster.nodes:
        if node.running:
            return RedisCluster(host=node.host or "127.0.0.1", port=node.port or 0)
    raise AssertionError("no node left")


def _node(cluster: EmbeddedCluster, port: int) -> EmbeddedServer:
    return next(n for n in cluster.nodes if n.port == port)


def primary_of(cluster: EmbeddedCluster, key: str) -> EmbeddedServer:
    client = _client(cluster)
    try:
        return _node(cluster, client.get_node_from_key(key).port)
    finally:
        client.close()


def handled(cluster: EmbeddedCluster) -> list[int]:
    """The ``n`` of every result committed, duplicates included."""
    client = _client(cluster)
    try:
        rows = client.xrange(Keys("results").stream)
        return [codec.decode(f[b"f"]).body["n"] for _, f in rows]
    finally:
        client.close()


def envelope(n: int) -> Outgoing:
    env = Envelope.for_body({"n": n}, sender="tester", recipient="work")
    return Outgoing("work", env.id, codec.encode(env))


async def process(bus: RedisBus) -> Processor:
    async def handler(env: Envelope) -> list[Envelope]:
        await anyio.sleep(0.002)
        return [Envelope.for_body({"n": env.body["n"]}, sender="work", recipient="results")]

    return Processor(bus, "work", handler, consumer="p1", concurrency=8, batch=20, block=0.5)


async def send_and_disrupt(
    url: str,
    results: Callable[[], list[int]],
    durability: Durability,
    disrupt: Callable[[], Any],
    *,
    at: int = 300,
    after: int = 300,
) -> tuple[list[int], float]:
    """Send messages one by one (a millisecond apart) to "work" while a processor
    handles them; after ``at`` acknowledged sends start ``disrupt`` in a thread and go
    on sending until it has returned and ``after`` more sends were acknowledged. The
    ``n`` acknowledged (once ``results`` holds them all), and the longest a send
    waited."""
    acknowledged: list[int] = []
    longest = 0.0
    disrupted = anyio.Event()

    async def disrupting() -> None:
        await anyio.to_thread.run_sync(disrupt)
        disrupted.set()

    def bus() -> RedisBus:
        return RedisBus.from_url(url, OPTIONS, durability=durability, reconnect_timeout=60)

    async with bus() as consumer, anyio.create_task_group() as tg:
        processor = await process(consumer)
        await tg.start(processor.run)
        async with bus() as sender:
            n, last = 0, None
            while last is None or n < last:
                started = time.monotonic()
                await sender.send(envelope(n))
                longest = max(longest, time.monotonic() - started)
                acknowledged.append(n)
                if n == at:
                    tg.start_soon(disrupting)
                if last is None and disrupted.is_set():
                    last = n + after
                n += 1
                await anyio.sleep(0.001)
        with anyio.fail_after(60):
            while not set(acknowledged) <= set(await anyio.to_thread.run_sync(results)):
                await anyio.sleep(0.2)
        await anyio.sleep(1.5)  # a late relay or duplicate would show itself now
        processor.stop()
    return acknowledged, longest


def assert_exactly_once(acknowledged: list[int], done: list[int]) -> None:
    """Every acknowledged send has its effect, and no effect is there twice."""
    assert not set(acknowledged) - set(done), "an acknowledged send was lost"
    assert len(done) == len(set(done)), f"{len(done) - len(set(done))} effects doubled"


def promoted(cluster: EmbeddedCluster, dead: EmbeddedServer) -> EmbeddedServer:
    new = primary_of(cluster, WORK)
    assert new is not dead
    assert new.running
    return new


def kill_then_repair(
    cluster: EmbeddedCluster, victim: EmbeddedServer, promotions: list[EmbeddedServer]
) -> None:
    """SIGKILL the primary; once its replica is promoted (added to ``promotions``), start
    the dead node again, as an operator or an orchestrator would: it rejoins as the
    new primary's replica."""
    victim.kill()
    deadline = time.monotonic() + 30
    while (new := primary_of(cluster, WORK)) is victim:
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.1)
    promotions.append(new)
    victim.restart()


@pytest.mark.timeout(150)
def test_replicated_mode_loses_nothing_when_the_primary_of_a_busy_queue_is_killed(
    cluster: EmbeddedCluster,
) -> None:
    victim = primary_of(cluster, WORK)
    promotions: list[EmbeddedServer] = []
    acknowledged, longest = anyio.run(
        send_and_disrupt,
        cluster.url,
        partial(handled, cluster),
        "replicated",
        lambda: kill_then_repair(cluster, victim, promotions),
    )
    (new,) = promotions
    done = handled(cluster)
    print(
        f"\nprimary :{victim.port} of 'work' SIGKILLed after 300 of {len(acknowledged)} "
        f"acknowledged sends; replica :{new.port} promoted, the dead node restarted as its "
        f"replica; longest send {longest:.2f}s; "
        f"results {len(done)}, distinct {len(set(done))}"
    )
    assert_exactly_once(acknowledged, done)


@pytest.mark.timeout(150)
def test_fast_mode_loss_when_the_primary_is_killed_is_measured(
    cluster: EmbeddedCluster,
) -> None:
    """Fast mode acknowledges before any replica has the write: what the replica had not
    received when its primary died is lost. Measured, not assumed to be nothing; the
    effects that survive are still never doubled."""
    victim = primary_of(cluster, WORK)
    lost: list[int] = []

    async def run() -> None:
        async with RedisBus.from_url(cluster.url, OPTIONS, reconnect_timeout=60) as sender:
            for n in range(2000):
                await sender.send(envelope(n))
                if n == 1500:
                    os.kill(victim.pid or 0, signal.SIGKILL)
        promoted(cluster, victim)
        client = _client(cluster)
        try:
            stored = {codec.decode(f[b"f"]).body["n"] for _, f in client.xrange(WORK)}
        finally:
            client.close()
        lost.extend(n for n in range(1501) if n not in stored)

    anyio.run(run)
    print(f"\nfast mode: primary SIGKILLed after 1,501 acknowledged sends; {len(lost)} lost")
    assert len(lost) <= 1501


def migrate(
    cluster: EmbeddedCluster, slot: int, source: EmbeddedServer, target: EmbeddedServer
) -> int:
    """Move ``slot`` from ``source`` to ``target`` as ``redis-cli --cluster reshard``
    does (IMPORTING, MIGRATING, MIGRATE key by key, then NODE everywhere). Keys moved."""
    src = redis.Redis(host=source.host or "127.0.0.1", port=source.port or 0)
    dst = redis.Redis(host=target.host or "127.0.0.1", port=target.port or 0)
    moved = 0
    try:
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
            # one key at a time, slowly: the run goes on against a half-moved slot
            src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(0.2)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for node in cluster.nodes:
            client = redis.Redis(host=node.host or "127.0.0.1", port=node.port or 0)
            try:
                if client.execute_command("ROLE")[0] == b"master":
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            finally:
                client.close()
    finally:
        src.close()
        dst.close()
    return moved


@pytest.mark.timeout(150)
def test_a_busy_queue_whose_slot_migrates_mid_run_loses_and_doubles_nothing(
    cluster: EmbeddedCluster,
) -> None:
    source = primary_of(cluster, WORK)
    target = next(n for n in cluster.nodes[: cluster.primaries] if n is not source)
    slot = int(key_slot(WORK.encode()))
    moved: list[int] = []
    acknowledged, longest = anyio.run(
        send_and_disrupt,
        cluster.url,
        partial(handled, cluster),
        "fast",
        lambda: moved.append(migrate(cluster, slot, source, target)),
    )
    assert primary_of(cluster, WORK) is target
    done = handled(cluster)
    print(
        f"\nslot {slot} of 'work' ({moved[0]} keys) moved :{source.port} -> :{target.port} "
        f"mid-run; {len(acknowledged)} sent, results {len(done)}, distinct {len(set(done))}, "
        f"longest send {longest:.2f}s"
    )
    assert moved[0] >= 2, "the queue's keys moved with the slot"
    assert_exactly_once(acknowledged, done)


@pytest.mark.timeout(60)
def test_replicated_mode_acknowledges_a_send_only_once_the_replica_has_it(
    cluster: EmbeddedCluster,
) -> None:
    """The wait runs on the write's own connection (a WAIT on another one measures that
    connection's writes: none, and returns at once)."""
    primary = primary_of(cluster, WORK)
    client = redis.Redis(host=primary.host or "127.0.0.1", port=primary.port or 0)
    try:
        replica_port = int(client.execute_command("ROLE")[2][0][1])
    finally:
        client.close()
    replica = _node(cluster, replica_port)

    async def run() -> None:
        async with RedisBus.from_url(cluster.url, durability="replicated") as bus:
            await bus.send(envelope(0))
            os.kill(replica.pid or 0, signal.SIGSTOP)
            try:
                with anyio.move_on_after(1.5) as waiting:
                    await bus.send(envelope(1))
                assert waiting.cancelled_caught, "acknowledged while the replica was stopped"
            finally:
                os.kill(replica.pid or 0, signal.SIGCONT)
            with anyio.fail_after(20):
                await bus.send(envelope(2))

    anyio.run(run)
