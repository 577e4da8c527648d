"""A local cluster from the embedded server's binary (issue 18.4, first part): it
forms, every slot is served, every primary has its replica, and the keys the bus
makes for one destination (and each record, join, lease, counter set, presence group
and topic) hash to one slot, as a script touching them together on a cluster needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from acp.runtime.cluster import SLOTS, EmbeddedCluster
from acp.runtime.keys import (
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
    client = RedisCluster.from_url(cluster.url)
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
    node = redis.Redis.from_url(cluster.url)
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
