"""A Redis-protocol cluster on loopback, from the same server binary as the
embedded server: ``primaries`` nodes sharing the 16,384 slots evenly, each with
``replicas`` replicas. For trying the runtime on a cluster and for the tests
that must run on one; a production cluster is run by whoever runs Redis.

::

    with EmbeddedCluster(primaries=3, replicas=1) as cluster:
        bus = RedisBus.from_url(cluster.url)

Each node is an :class:`~acp.runtime.embedded.EmbeddedServer` started with
``cluster-enabled``; the cluster is formed the way ``redis-cli --cluster create``
does it, with plain commands (ADDSLOTSRANGE, MEET, REPLICATE), and
:meth:`EmbeddedCluster.start` returns once every node reports ``cluster_state:ok``
and every replica is attached.
"""

from __future__ import annotations

import random
import socket
import time
from types import TracebackType
from typing import Any, Self

import redis

from acp.errors import ConfigError, ServerError
from acp.runtime.embedded import EmbeddedServer, ServerDurability

__all__ = ["SLOTS", "EmbeddedCluster"]

#: hash slots of a Redis/Valkey cluster
SLOTS = 16384


class EmbeddedCluster:
    """``primaries`` x (1 + ``replicas``) local nodes forming one cluster."""

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 1,
        durability: ServerDurability = "fast",
        node_timeout_ms: int = 2000,
        startup_timeout: float = 30.0,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ConfigError(f"a cluster needs primaries >= 1 and replicas >= 0; got "
                              f"{primaries} and {replicas}")  # fmt: skip
        self.primaries = primaries
        self.replicas = replicas
        self.startup_timeout = startup_timeout
        config = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(node_timeout_ms),
            # a replica promoted by a failover must not wait for a manual takeover
            "cluster-replica-validity-factor": "0",
        }
        # a node's cluster bus listens 10,000 ports above it: both must be free
        self.nodes = [
            EmbeddedServer(durability=durability, config=config, port=_port_pair())
            for _ in range(primaries * (1 + replicas))
        ]

    def __repr__(self) -> str:
        return f"<EmbeddedCluster {self.primaries} primaries x {self.replicas} replicas>"

    @property
    def url(self) -> str:
        """``redis+cluster://`` and one node: a cluster client finds the others from it."""
        host, port = self.startup_nodes[0]
        return f"redis+cluster://{host}:{port}/0"

    @property
    def seed_url(self) -> str:
        """``redis://`` of the first node, for clients that take a plain URL."""
        host, port = self.startup_nodes[0]
        return f"redis://{host}:{port}/0"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(n.host or "127.0.0.1", n.port) for n in self.nodes if n.port is not None]

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- forming the cluster --------------------------------------------------------------

    @staticmethod
    def _client(node: EmbeddedServer) -> Any:
        """A plain client of one node (redis-py's commands are untyped: Any here)."""
        return redis.Redis(host=node.host or "127.0.0.1", port=node.port or 0, socket_timeout=5.0)

    def _form(self) -> None:
        clients = [self._client(n) for n in self.nodes]
        try:
            primaries = clients[: self.primaries]
            per = SLOTS // self.primaries
            for i, client in enumerate(primaries):
                last = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * per - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            host, port = self.startup_nodes[0]
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", host, port)
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in primaries]
            self._wait(lambda: all(self._knows(c, ids) for c in clients), "every node to meet")
            for n, client in enumerate(clients[self.primaries :]):
                client.execute_command("CLUSTER", "REPLICATE", ids[n % self.primaries])
            self._wait(lambda: all(self._ok(c) for c in clients), "cluster_state:ok")
            self._wait(lambda: self._replicas_attached(primaries), "the replicas to attach")
        finally:
            for client in clients:
                client.close()

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not ready():
            if time.monotonic() > deadline:
                raise ServerError(f"local cluster: waited {self.startup_timeout:g}s for {what}")
            time.sleep(0.05)

    @staticmethod
    def _knows(client: Any, ids: list[str]) -> bool:
        nodes = client.execute_command("CLUSTER", "NODES")
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        return all(i in text for i in ids) and "handshake" not in text

    @staticmethod
    def _ok(client: Any) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def _replicas_attached(self, primaries: list[Any]) -> bool:
        for client in primaries:
            role = client.execute_command("ROLE")
            attached = role[2] if len(role) > 2 else []
            if len(attached) < self.replicas:
                return False
        return True


def _port_pair() -> int:
    """A free port whose cluster bus port (10,000 above) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45535)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise ServerError("no free pair of ports for a cluster node")
