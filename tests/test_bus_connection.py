"""The Redis bus's connections: sends stay bounded by the socket timeout, the hot
path's command batches start no task of their own and stay in step after errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from acp.runtime.bus import Outgoing, RedisBus
from acp.runtime.bus.connection import timed_sends
from acp.runtime.bus.lines import Lines

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@contextlib.asynccontextmanager
async def stalling_proxy(url: str, stall: asyncio.Event) -> AsyncIterator[int]:
    """A loopback proxy to the server that stops reading from its client once
    ``stall`` is set: a peer that is alive but no longer takes what it is sent."""
    target = urlsplit(url)
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if up and stall.is_set():
                    await asyncio.Event().wait()  # stop reading: the client's buffers fill
                writer.write(data)
                await writer.drain()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        writers.extend((writer, up_writer))
        for task in (pipe(reader, up_writer, True), pipe(up_reader, writer, False)):
            tasks.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def test_a_send_to_a_peer_that_stopped_reading_times_out(redis_url: str) -> None:
    stall = asyncio.Event()
    async with stalling_proxy(redis_url, stall) as port:
        client = aioredis.Redis(
            host="127.0.0.1", port=port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        pool = client.connection_pool
        pool.connection_class = timed_sends(pool.connection_class)
        try:
            assert await client.ping()
            stall.set()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RedisTimeoutError, match="writing to socket"):
                await client.set("big", b"x" * (64 << 20))  # more than any socket buffer
            assert 0.4 < loop.time() - started < 5
        finally:
            await client.aclose()


async def test_commands_on_the_bus_start_no_task_of_their_own(redis_url: str) -> None:
    loop = asyncio.get_running_loop()
    started: list[object] = []
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro, **kw):  # type: ignore[no-untyped-def]
        started.append(coro)
        return asyncio.Task(coro, loop=loop, **kw)

    async with RedisBus.from_url(redis_url) as bus:
        await bus.send(Outgoing("agent-a", "warm-up", b"x"))  # connected, group made
        await bus.consume("agent-a", "c1", block=0.05)
        loop.set_task_factory(counting)
        try:
            for i in range(5):
                await bus.redis.ping()
                await bus.send(Outgoing("agent-a", f"m{i}", b"x"))
                (delivery,) = await bus.consume("agent-a", "c1", block=0.05)
                await bus.commit("c1", [(delivery, [])])
        finally:
            loop.set_task_factory(factory)
        assert bus.redis.connection_pool.connection_kwargs["socket_timeout"]
    assert started == []


async def test_a_batch_with_an_error_reply_raises_it_and_leaves_the_line_in_step(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lines = Lines(client.connection_pool)
    try:
        with pytest.raises(ResponseError, match="wrong number of arguments"):
            await lines.run([("SET", "k", "v"), ("GET",), ("GET", "k")])
        assert await lines.run([("GET", "k"), ("PING",)]) == [b"v", b"PONG"]
        with anyio.move_on_after(0.1):  # cancelled mid-read: the next batch still works
            await lines.run([("BLPOP", "nothing-here", 5)])
        assert await lines.run([("GET", "k")]) == [b"v"]
    finally:
        await lines.aclose()
        await client.aclose()


async def test_blocking_reads_wait_on_connections_whose_timeout_outlasts_the_block(
    redis_url: str,
) -> None:
    async with RedisBus.from_url(redis_url) as bus:
        started = asyncio.get_running_loop().time()
        assert await bus.consume("agent-a", "c1", block=0.3) == []
        assert asyncio.get_running_loop().time() - started >= 0.25  # it did block
        (lines,) = bus._blocking.values()
        (conn,) = lines._made
        assert conn.socket_timeout is not None
        assert conn.socket_timeout >= 0.3 + 10
        assert lines is not bus.lines  # commits never wait behind a blocked read
