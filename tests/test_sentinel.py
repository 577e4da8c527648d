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

from acp.errors import AccessDenied, ConfigError
from acp.runtime.bus import Outgoing, RedisBus
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.keys import Keys
from acp.runtime.settings import RedisSettings

SERVICE = "acp-main"


class Watched:
    """A primary, its replica and one Sentinel (quorum 1), on loopback."""

    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        #: the Sentinel's own ``requirepass``, if any
        self.password = password
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
            + (f"requirepass {password}\n" if password else "")
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
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, password=self.password
        )
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


def test_a_sentinels_own_credentials_go_in_the_query_and_never_show() -> None:
    url = "redis+sentinel://:pw@s1/acp-main?sentinel_username=watch&sentinel_password=s%26cret"
    settings = RedisSettings.from_url(url)
    assert settings.sentinel_kwargs() | {"socket_timeout": None} == {
        "socket_timeout": None, "socket_connect_timeout": 5.0,
        "username": "watch", "password": "s&cret",
    }  # fmt: skip
    assert "password" not in RedisSettings.from_url("redis+sentinel://s1/a").sentinel_kwargs()
    assert settings.redacted_url.endswith("?sentinel_username=watch&sentinel_password=***")
    assert RedisSettings.from_url(settings.url) == settings
    with pytest.raises(ConfigError, match="needs a redis\\+sentinel://") as refused:
        RedisSettings.from_url("redis://h/0?sentinel_password=s3cret")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError, match="unknown parameter") as unknown:
        RedisSettings.from_url("redis+sentinel://h/a?sentinel_password=s3cret&bogus=1")
    assert "s3cret" not in str(unknown.value)


@pytest.mark.timeout(60)
def test_sentinels_that_ask_for_a_password_get_theirs_and_a_missing_one_is_named(
    tmp_path: Path,
) -> None:
    """Sentinels with their own ``requirepass``: the URL's ``sentinel_password`` reaches
    them; without it the bus says so at once (it retried "no master found" for a
    minute, then named neither the Sentinels nor the password)."""
    watched = Watched(tmp_path, password="s3ntinel-pw")

    async def round_trip(url: str) -> list[str]:
        async with RedisBus.from_url(url) as bus:
            await bus.send(Outgoing("agent-a", "m1", b"frame"))
            return [d.msg_id for d in await bus.consume("agent-a", "c1", count=10, block=1)]

    try:
        assert anyio.run(round_trip, watched.url + "?sentinel_password=s3ntinel-pw") == ["m1"]
        started = time.monotonic()
        with pytest.raises(AccessDenied, match="sentinel_password") as refused:
            anyio.run(round_trip, watched.url)
        assert time.monotonic() - started < 5
        assert f"127.0.0.1:{watched.port}" in str(refused.value)
    finally:
        watched.stop()


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
