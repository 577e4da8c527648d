"""The acp side of bench/bus.py: the full path, as an application runs it.

Producer: envelopes built with pydantic, encoded by the wire codec (msgpack,
zstd dictionary, integrity tag), sent idempotently in batches. Consumer: a
Processor (decode, verify, dispatch, group commit of ledger + ack) with a
no-op handler. RTT: a client ``request`` to a Processor that replies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from acp.protocol import Envelope, WireCodec
from acp.runtime.bus import BusOptions, Outgoing, RedisBus
from acp.runtime.processor import Processor, to_outgoing

BODY = {
    "cmd": "PIPELINE_STATUS",
    "component_id": "orders_etl",
    "data_flow": {"ingestion_rate": "310GB/day", "processing_lag": "4m", "quality_score": 0.97},
    "infrastructure": {
        "spark_cluster": "healthy",
        "storage_used": "45TB",
        "compute_cost": "$234/day",
    },
    "outputs": ["daily_orders", "refunds", "ml_features"],
    "respond_format": "STRUCTURED_JSON",
}
OPTIONS = BusOptions(min_idle=60.0)


async def run_acp_throughput(
    url: str, messages: int, *, batch: int = 200
) -> dict[str, float | int]:
    codec = WireCodec()
    seen: set[str] = set()
    duplicates = 0
    done = anyio.Event()

    async def handler(env: Envelope) -> Sequence[Envelope]:
        nonlocal duplicates
        if env.id in seen:
            duplicates += 1
        seen.add(env.id)
        return ()

    async with (
        RedisBus.from_url(url, OPTIONS) as producer,
        RedisBus.from_url(url, OPTIONS) as consumer,
    ):
        processor = Processor(
            consumer, "bench", handler, codec=codec, consumer="bench-1", concurrency=1000, batch=500
        )
        async with anyio.create_task_group() as tg:
            await tg.start(processor.run)

            async def watch() -> None:
                while processor.stats.handled < messages:
                    await anyio.sleep(0.002)
                done.set()

            start = time.perf_counter()
            tg.start_soon(watch)
            for first in range(0, messages, batch):
                items = []
                for _ in range(min(batch, messages - first)):
                    env = Envelope.for_body(BODY, sender="bench", recipient="bench")
                    items.append(Outgoing("bench", env.id, codec.encode(env)))
                await producer.send_many(items)
            with anyio.fail_after(max(60.0, messages / 1000)):
                await done.wait()
            elapsed = time.perf_counter() - start
            processor.stop()
    return {
        "msgs_per_s": messages / elapsed,
        "lost": messages - len(seen),
        "duplicates": duplicates,
    }


async def run_acp_rtt(url: str, requests: int) -> list[float]:
    codec = WireCodec()

    async def echo(env: Envelope) -> Sequence[Envelope]:
        return [env.reply({"ok": True})]

    times: list[float] = []
    async with RedisBus.from_url(url, OPTIONS) as server, RedisBus.from_url(url, OPTIONS) as client:
        processor = Processor(server, "echo", echo, codec=codec, consumer="echo-1")
        async with anyio.create_task_group() as tg:
            await tg.start(processor.run)
            for i in range(requests + 50):
                start = time.perf_counter()
                env = Envelope.for_body(
                    BODY, sender="client", recipient="echo", reply_to=client.inbox
                )
                reply = await client.request(to_outgoing(env, codec.encode(env)), timeout=10)
                codec.decode(reply.frame)
                if i >= 50:  # warm-up excluded
                    times.append(time.perf_counter() - start)
            processor.stop()
    return times


async def run_acp_inflight(
    url: str, requests: int, *, in_flight: int = 100, via: str = "direct"
) -> dict[str, float | int]:
    """``Client.request`` kept ``in_flight`` deep by as many tasks, against a worker
    running a Python agent that echoes; ``via="coordinator"`` puts a coordinator
    between them, as ``acp up`` runs it. Requests per second and latency percentiles."""
    from acp.agents import Agent, load_config
    from acp.runtime import Client, Coordinator, Worker

    echo = Agent("echo", tier="haiku", complexity="low")

    @echo.command("ECHO")
    async def answer(body: dict[str, object], ctx: object) -> dict[str, object]:
        return {"component_id": body["component_id"], "healthy": True}

    ask = {**BODY, "cmd": "ECHO"}

    latencies: list[float] = []
    issued = 0
    async with (
        RedisBus.from_url(url, OPTIONS) as worker_bus,
        RedisBus.from_url(url, OPTIONS) as coordinator_bus,
        RedisBus.from_url(url, OPTIONS) as client_bus,
        anyio.create_task_group() as tg,
    ):
        coordinator = None
        if via == "coordinator":
            coordinator = Coordinator(coordinator_bus, load_config(), registry_interval=0.2)
            await tg.start(coordinator.run)
            await coordinator.has_led.wait()
        worker = Worker(worker_bus, [echo], concurrency=in_flight)
        await tg.start(worker.run)
        client = Client(client_bus, via="coordinator" if coordinator else "direct")
        await client.request("echo", ask, timeout=30)  # warm: groups, scripts, registry

        async def loop() -> None:
            nonlocal issued
            while issued < requests:
                issued += 1
                sent = time.perf_counter()
                reply = await client.request("echo", ask, timeout=60)
                assert "error" not in reply.body, reply.body
                latencies.append(time.perf_counter() - sent)

        start, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as clients:
            for _ in range(in_flight):
                clients.start_soon(loop)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        worker.stop()
        if coordinator is not None:
            coordinator.stop()
        tg.cancel_scope.cancel()
    return {
        "requests_per_s": requests / elapsed,
        "cpu_us_per_request": cpu / requests * 1e6,
        "latencies": latencies,  # type: ignore[dict-item]
    }
