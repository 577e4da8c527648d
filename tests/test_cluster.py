"""A local cluster from the embedded server's binary (issue 18.4, first part): it
forms, every slot is served, every primary has its replica, and the keys the bus
makes for one destination (and each record, join, lease, counter set, presence group
and topic) hash to one slot, as a script touching them together on a cluster needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from acp.runtime.bus import BusOptions, Outgoing, RedisBus
from acp.runtime.bus.base import H_CORRELATION
from acp.runtime.bus.redis import _SCRIPT_NAMES
from acp.runtime.cluster import SLOTS, EmbeddedCluster
from acp.runtime.keys import (
    RESULTS,
    Keys,
    counters_hash,
    join_hash,
    lease_keys,
    presence_hash,
    record_list,
    topic_stream,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(primaries=3, replicas=1) as running:
        yield running


def test_the_local_cluster_serves_every_slot_with_a_replica_each(cluster: EmbeddedCluster) -> None:
    client = RedisCluster.from_url(cluster.seed_url)
    try:
        for i in range(200):
            client.set(f"key-{i}", i)
        assert sum(int(client.get(f"key-{i}")) for i in range(200)) == sum(range(200))
        shards = client.cluster_shards()
    finally:
        client.close()
    assert len(shards) == 3
    covered = sum(end - start + 1 for shard in shards for start, end in shard["slots"])
    assert covered == SLOTS
    for shard in shards:
        roles = sorted(node[b"role"] for node in shard["nodes"])
        assert roles == [b"master", b"replica"]


def test_the_keys_one_script_touches_share_a_slot(cluster: EmbeddedCluster) -> None:
    node = redis.Redis.from_url(cluster.seed_url)
    try:

        def slot(key: str) -> int:
            return int(node.execute_command("CLUSTER", "KEYSLOT", key))

        for dest in ("data-engineer", "coordinator", "inbox.cli-7f3a", "acp.results"):
            keys = Keys(dest)
            slots = {slot(getattr(keys, k)) for k in keys.__slots__ if k != "dest"}
            assert len(slots) == 1, (dest, slots)
        for pair in (lease_keys("coordinator"),):
            assert len({slot(k) for k in pair}) == 1
        # each of these is one key: what matters is that a name, not the prefix, picks
        # the slot, so that they spread over the shards
        spread = {slot(f(name)) for f in (counters_hash, join_hash, presence_hash,
                                          record_list, topic_stream)
                  for name in ("a", "b", "c", "d")}  # fmt: skip
        assert len(spread) > 4
    finally:
        node.close()


def test_every_script_runs_on_a_cluster_with_its_keys_in_one_slot(
    cluster: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of the bus's scripts, called through the bus API on a cluster: the server
    itself refuses a script whose keys span slots (CROSSSLOT), so each call's success
    is the proof; the spy checks that every script was called and its keys agree."""
    calls: list[tuple[str, set[int]]] = []
    real = RedisBus._script

    def spy(self: RedisBus, name: str, keys: Any, args: Any) -> tuple[Any, ...]:
        calls.append((name, {key_slot(k.encode()) for k in keys}))
        return real(self, name, keys, args)

    monkeypatch.setattr(RedisBus, "_script", spy)
    options = BusOptions(min_idle=0.0, max_deliveries=2)

    async def every_primitive() -> None:
        async with RedisBus.from_url(cluster.url, options) as bus:
            await bus.send_many([Outgoing("q", f"m{i}", b"f") for i in range(4)])  # SEND
            await bus.send(Outgoing(RESULTS, "r1", b"x", {H_CORRELATION: "m0"}))  # RESULT
            a, b, c, d = await bus.consume("q", "c1", count=4, block=0.1)
            assert await bus.renew("c1", [a]) == [True]  # RENEW
            await bus.commit("c1", [(a, [Outgoing("other", "e1", b"x")])])  # COMMIT
            assert await bus.processed("q", ["m0", "m1"]) == {"m0"}  # PROCESSED
            assert await bus.retry(b, "c1", error="again", delay=0.0)  # RETRY
            assert await bus.dead_letter(c, "c1", reason="bad", error="no") is not None  # DEAD
            assert await bus.replay("q") == 1  # REPLAY
            await bus.consume("q", "c2", count=10, block=0.1)  # PROMOTE, RECLAIM
            await bus.commit("c2", [(d, [])])
            assert not await bus.leave("q", "c1") or True  # PRUNE
            await bus.announce("workers", "w1", b"i", ttl=5)  # ANNOUNCE
            assert "w1" in await bus.members("workers")  # MEMBERS
            token = await bus.lease("leader", "me", ttl=5)  # LEASE
            assert token
            await bus.release("leader", "me")  # UNLEASE
            assert await bus.add_to_counters("spend", {"usd": 1.0}, once="op1")  # COUNT
            assert await bus.append_record("conv", 0, b"turn", ttl=60)  # APPEND
            await bus.open_join("j", 2, b"then", {}, ttl=60)  # OPEN_JOIN
            assert await bus.arrive("j", "a", b"1") is None  # ARRIVE
            assert await bus.arrive("j", "b", b"2") == b"then"
            await bus.mark("cancelled", ["root-1"], ttl=60)  # MARK
            assert await bus.marked("cancelled", ["root-1", "root-2"]) == {"root-1"}  # MARKED

    anyio.run(every_primitive)
    names = {name for name, _ in calls}
    assert names == set(_SCRIPT_NAMES), set(_SCRIPT_NAMES) - names
    assert [(name, slots) for name, slots in calls if len(slots) != 1] == []
