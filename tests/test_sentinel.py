"""A primary with a replica behind Sentinel (``redis+sentinel://``), as managed Redis
offers it: the primary of a busy queue is SIGKILLed under load, Sentinel promotes
the replica, the bus finds it and carries on; with ``durability="replicated"`` every
acknowledged send is delivered and every effect happens exactly once."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from test_cluster_faults import assert_exactly_once, codec, send_and_disrupt

from acp.runtime.embedded import EmbeddedServer
from acp.runtime.keys import Keys
from acp.runtime.settings import RedisSettings

SERVICE = "acp-main"


class Watched:
    """A primary, its replica and one Sentinel (quorum 1), on loopback."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [EmbeddedServer().start(), EmbeddedServer().start()]
        #: (killed primary, the replica Sentinel promoted) of each failover
        self.promoted: list[tuple[EmbeddedServer, EmbeddedServer]] = []
        primary, replica = self.nodes
        client = self._client(replica)
        client.execute_command("REPLICAOF", "127.0.0.1", primary.port)
        client.close()
        self.port = _free_port()
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1500\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        assert primary.binary is not None
        self.sentinel = subprocess.Popen(
            [str(primary.binary), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not self._ready():
            assert time.monotonic() < deadline, "Sentinel did not see the replica"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}"

    @staticmethod
    def _client(node: EmbeddedServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port or 0)

    def _ask(self, *command: str) -> Any:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            return client.execute_command("SENTINEL", *command)
        finally:
            client.close()

    def _ready(self) -> bool:
        try:
            return bool(self._ask("REPLICAS", SERVICE))
        except redis.RedisError:
            return False

    def primary(self) -> EmbeddedServer:
        _, port = self._ask("GET-MASTER-ADDR-BY-NAME", SERVICE)
        return next(n for n in self.nodes if n.port == int(port))

    def results(self) -> list[int]:
        client = self._client(self.primary())
        try:
            rows = client.xrange(Keys("results").stream)
            return [codec.decode(f[b"f"]).body["n"] for _, f in rows]
        finally:
            client.close()

    def kill_then_repair(self) -> None:
        """SIGKILL the primary; once Sentinel has promoted the replica, start the dead
        node again: Sentinel makes it the new primary's replica."""
        victim = self.primary()
        victim.kill()
        deadline = time.monotonic() + 30
        while (new := self.primary()) is victim:
            assert time.monotonic() < deadline, "Sentinel did not promote the replica"
            time.sleep(0.1)
        self.promoted.append((victim, new))
        victim.restart()

    def stop(self) -> None:
        self.sentinel.terminate()
        self.sentinel.wait(timeout=10)
        for node in self.nodes:
            node.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    setup = Watched(tmp_path)
    try:
        yield setup
    finally:
        setup.stop()


def test_a_sentinel_url_names_the_primary_through_its_sentinels() -> None:
    settings = RedisSettings.from_url("redis+sentinel://:pw@s1:26380,s2/acp-main/0")
    assert settings.sentinels == (("s1", 26380), ("s2", 26379))
    assert (settings.service, settings.db) == ("acp-main", 0)
    assert settings.redacted_url == "redis+sentinel://:***@s1:26380,s2:26379/acp-main/0"
    assert "host" not in settings.connection_kwargs()


@pytest.mark.timeout(150)
def test_replicated_mode_loses_nothing_when_sentinel_fails_the_primary_over(
    watched: Watched,
) -> None:
    acknowledged, longest = anyio.run(
        send_and_disrupt, watched.url, watched.results, "replicated", watched.kill_then_repair
    )
    done = watched.results()
    ((killed, promoted),) = watched.promoted
    print(
        f"\nprimary :{killed.port} SIGKILLed after 300 of {len(acknowledged)} acknowledged "
        f"sends; Sentinel promoted :{promoted.port}; longest send {longest:.2f}s; results "
        f"{len(done)}, distinct {len(set(done))}"
    )
    assert_exactly_once(acknowledged, done)
