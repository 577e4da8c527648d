"""Redis errors are translated at the boundary (issue 17.4): a server that refuses
a command is a ``CommandRefused`` naming why, never a redis exception, and the
command line says it in one line, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from acp.errors import BusError, CommandRefused
from acp.protocol import Envelope, WireCodec
from acp.runtime.bus import RedisBus
from acp.runtime.bus.base import Outgoing
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.workflows.store import RedisWorkflowStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def full_server() -> Iterator[EmbeddedServer]:
    """A server whose memory is full: every write is refused with OOM."""
    server = EmbeddedServer()
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory", "1")
        admin.close()
        yield server
    finally:
        server.stop()


async def test_a_send_to_a_full_server_is_a_command_refused(full_server: EmbeddedServer) -> None:
    env = Envelope.for_body({"cmd": "PING"}, sender="t", recipient="data-engineer")
    frame = WireCodec().encode(env)
    async with RedisBus.from_url(full_server.url) as bus:
        with pytest.raises(CommandRefused) as refused:
            await bus.send(Outgoing(msg_id=env.id, frame=frame, dest="data-engineer"))
    assert refused.value.reason == "out_of_memory"
    assert isinstance(refused.value, BusError)
    assert "out of memory" in str(refused.value)
    assert "maxmemory" in str(refused.value)
    assert isinstance(refused.value.__cause__, redis.exceptions.OutOfMemoryError)


async def test_the_workflow_store_translates_too(full_server: EmbeddedServer) -> None:
    async with RedisBus.from_url(full_server.url) as bus:
        store = RedisWorkflowStore(bus.redis)
        with pytest.raises(CommandRefused, match="the workflow store is out of memory"):
            await store.create("wf-1", {"workflow": "health_check"})


def test_the_command_line_says_it_in_one_line(full_server: EmbeddedServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "acp", "send", "data-engineer", "--json", '{"cmd": "PING"}',
         "--redis", full_server.url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: Redis at redis://127.0.0.1:")
    assert "is out of memory and refuses writes" in done.stderr
