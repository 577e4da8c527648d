"""Shared fixtures: a real Redis-protocol server (never a fake), isolated per test.

If no server binary exists the session errors with the install hint instead
of skipping: a suite that silently skips its Redis tests proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from acp.runtime.cluster import EmbeddedCluster
from acp.runtime.embedded import EmbeddedServer
from acp.testing import BusFactory, bus_clients


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The runtime runs on asyncio only (redis-py and the anthropic SDK need it)."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedServer]:
    """One embedded server for the whole session; use ``redis_url`` to get a clean one."""
    server = EmbeddedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedServer) -> str:
    """URL of the session server, emptied first (keys, scripts, functions).

    Flushing database 0 rather than handing out numbered databases keeps the
    URL identical for subprocesses and still isolates server-wide state
    (Lua functions, scripts) that numbered databases would share. If an
    earlier test killed or stopped the shared server, it is brought back so
    one misbehaving test cannot fail all the following ones.
    """
    if not redis_server.running:
        if redis_server.data_dir is None:
            redis_server.start()
        else:
            redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.flushall()
        pipe.script_flush()
        pipe.function_flush()
        pipe.execute()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """One local cluster (three primaries) for the session; ``cluster_url`` empties it."""
    with EmbeddedCluster(primaries=3, replicas=0) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: EmbeddedCluster) -> str:
    """``redis+cluster://`` URL of the session cluster, every primary emptied first."""
    for host, port in redis_cluster.startup_nodes:
        client = redis.Redis(host=host, port=port)
        try:
            if client.execute_command("ROLE")[0] in (b"master", "master"):
                client.flushall()
                client.script_flush()
        finally:
            client.close()
    return redis_cluster.url


@pytest.fixture
def isolated_redis_server() -> Iterator[EmbeddedServer]:
    """A dedicated server for tests that kill, restart or reconfigure it.

    ``durability="safe"`` (``appendfsync always``) so that every acknowledged
    write survives :meth:`EmbeddedServer.kill` followed by ``restart()``.
    """
    server = EmbeddedServer(durability="safe")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def bus_backend(request: pytest.FixtureRequest) -> BusFactory:
    """Run a test against every bus: ``bus_backend(options)`` gives a new client of
    the same in-memory broker, of the same (flushed) Redis server, or of the same
    (flushed) local cluster."""
    if request.param == "memory":
        return bus_clients("memory")
    return bus_clients(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def make_bus(bus_backend: BusFactory, request: pytest.FixtureRequest) -> BusFactory:
    """Clients of one broker or server (as ``bus_backend``), with the test module's
    ``BUS_OPTIONS`` unless given others: one factory for every bus test."""
    default = getattr(request.module, "BUS_OPTIONS", None)
    return lambda options=None, **kw: bus_backend(options or default, **kw)


#: modules whose tests start processes (workers, coordinators, servers, builds) or
#: wait on real time: ``pytest -m "not slow"`` leaves them out for quick feedback;
#: CI and the README's command run everything
SLOW_MODULES = frozenset({
    "test_bench_smoke", "test_cli_coordinator", "test_cluster", "test_cli_main_job", "test_cli_tail",
    "test_cli_worker", "test_cluster_faults", "test_delegation_faults", "test_sentinel", "test_examples", "test_failover_processes",
    "test_faults", "test_tool_crash", "test_wheel",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
