"""The cluster phase of bench/bus.py (``--cluster N``): what sharding buys, measured.

The same acp workload (producers ``send_many`` to twelve queues, one Processor per
queue commits with a no-op handler) runs on one server and on a local cluster of N
primaries, in the same run. On one machine the shards share its cores with the
clients, so the cluster's throughput here says little about N machines; what
carries over is each side's cost per message:

* **server CPU per message**: the server's own CPU time (``INFO cpu``, every
  node) over the messages; its inverse is what one shard on a core of its own
  can take (the per-shard ceiling);
* **client CPU per message**: this process's CPU time over the messages (a
  producer and a consumer: what client cores must supply);
* **the coordinator's dispatch rate**: commands queued in its intake, then a
  coordinator and a worker with a no-op agent started; dispatches per second,
  and the coordinator's CPU per dispatch (one leader does all dispatching, so
  this bounds work sent through it however many shards there are).

The README turns these into the model for N machines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
import redis

from acp.protocol import Envelope, WireCodec
from acp.runtime.bus import BusOptions, Outgoing, RedisBus
from acp.runtime.cluster import EmbeddedCluster
from acp.runtime.processor import Processor

QUEUES = [f"bench-{i:02d}" for i in range(12)]
OPTIONS = BusOptions(min_idle=60.0)
BODY = {
    "cmd": "PIPELINE_STATUS",
    "component_id": "orders_etl",
    "data_flow": {"quality_score": 0.97},
}


def _server_cpu(nodes: Sequence[tuple[str, int]]) -> float:
    total = 0.0
    for host, port in nodes:
        client = redis.Redis(host=host, port=port)
        try:
            info: Any = client.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        finally:
            client.close()
    return total


def _flush(nodes: Sequence[tuple[str, int]]) -> None:
    for host, port in nodes:
        client = redis.Redis(host=host, port=port)
        try:
            if client.execute_command("ROLE")[0] in (b"master", "master"):
                client.flushall()
        finally:
            client.close()


async def spread(url: str, nodes: Sequence[tuple[str, int]], messages: int) -> dict[str, float]:
    """Messages sent to twelve queues and committed by twelve processors."""
    codec = WireCodec()
    handled = 0

    async def handler(env: Envelope) -> Sequence[Envelope]:
        nonlocal handled
        handled += 1
        return ()

    async with (
        RedisBus.from_url(url, OPTIONS) as producer,
        RedisBus.from_url(url, OPTIONS) as consumer,
    ):
        processors = [
            Processor(
                consumer, q, handler, codec=codec, consumer="bench", concurrency=500, batch=250
            )
            for q in QUEUES
        ]
        async with anyio.create_task_group() as tg:
            for p in processors:
                await tg.start(p.run)
            server0, cpu0, start = _server_cpu(nodes), time.process_time(), time.perf_counter()
            for first in range(0, messages, 240):
                items = []
                for n in range(first, min(first + 240, messages)):
                    env = Envelope.for_body(BODY, sender="bench", recipient=QUEUES[n % len(QUEUES)])
                    items.append(Outgoing(env.recipient, env.id, codec.encode(env)))
                await producer.send_many(items)
            with anyio.fail_after(max(60.0, messages / 500)):
                while handled < messages:
                    await anyio.sleep(0.002)
            elapsed = time.perf_counter() - start
            client_cpu, server_cpu = time.process_time() - cpu0, _server_cpu(nodes) - server0
            for p in processors:
                p.stop()
    return {
        "msgs_per_s": round(messages / elapsed, 1),
        "client_cpu_us": round(client_cpu / messages * 1e6, 1),
        "server_cpu_us": round(server_cpu / messages * 1e6, 1),
    }


async def dispatch(url: str, nodes: Sequence[tuple[str, int]], commands: int) -> dict[str, float]:
    """Commands queued in the coordinator's intake, then dispatched to a no-op agent."""
    from acp.agents import Agent, load_config
    from acp.runtime import Client, Coordinator, Worker

    noop = Agent("noop", tier="haiku", complexity="low")
    done = 0

    @noop.command("NOOP")
    async def answer(body: dict[str, object], ctx: object) -> None:
        nonlocal done
        done += 1

    async with (
        RedisBus.from_url(url, OPTIONS) as client_bus,
        RedisBus.from_url(url, OPTIONS) as coordinator_bus,
        RedisBus.from_url(url, OPTIONS) as worker_bus,
        anyio.create_task_group() as tg,
    ):
        client = Client(client_bus, via="coordinator")
        for n in range(commands):  # queued before the coordinator starts: not measured
            await client.send("noop", {"cmd": "NOOP", "n": n})
        worker = Worker(worker_bus, [noop], concurrency=500)
        await tg.start(worker.run)
        coordinator = Coordinator(coordinator_bus, load_config(env={}), registry_interval=0.2)
        start = time.perf_counter()
        await tg.start(coordinator.run)
        with anyio.fail_after(max(120.0, commands / 100)):
            while done < commands:
                await anyio.sleep(0.005)
        elapsed = time.perf_counter() - start
        worker.stop()
        coordinator.stop()
        tg.cancel_scope.cancel()
    return {"dispatches_per_s": round(commands / elapsed, 1)}


async def cluster_phase(single_url: str, primaries: int, messages: int) -> dict[str, Any]:
    """Every figure of the phase, one server and the cluster in the same run."""
    from acp.runtime.settings import RedisSettings

    one = RedisSettings.from_url(single_url)
    single_nodes = [(one.host, one.port)]
    local = await anyio.to_thread.run_sync(
        lambda: EmbeddedCluster(primaries=primaries, replicas=0).start()
    )
    try:
        nodes = local.startup_nodes
        result: dict[str, Any] = {"cluster_primaries": primaries}
        for name, url, where in (
            ("single", single_url, single_nodes),
            ("cluster", local.url, nodes),
        ):
            _flush(where)
            await spread(url, where, min(messages, 2000))  # warm: scripts, groups, imports
            runs = []
            for _ in range(3):
                _flush(where)
                runs.append(await spread(url, where, messages))
            best = sorted(runs, key=lambda r: r["msgs_per_s"])[1]  # the median of three
            result[f"{name}_spread"] = best
            _flush(where)
            result[f"{name}_dispatch"] = await dispatch(url, where, max(messages // 4, 1000))
        _flush(single_nodes)
    finally:
        await anyio.to_thread.run_sync(local.stop)
    per_shard = 1e6 / max(result["cluster_spread"]["server_cpu_us"], 1e-9)
    result["shard_ceiling_msgs_per_s"] = round(per_shard, 1)
    result["client_core_msgs_per_s"] = round(1e6 / result["cluster_spread"]["client_cpu_us"], 1)
    return result


def render(result: dict[str, Any]) -> list[str]:
    n = result["cluster_primaries"]
    s, c = result["single_spread"], result["cluster_spread"]
    lines = [
        "",
        f"cluster phase: 12 queues, one server against a local cluster of {n} primaries "
        "(same machine, same run)",
        f"{'':28}{'one server':>14}{f'cluster of {n}':>16}",
        f"{'msgs/s (acp, end to end)':28}{s['msgs_per_s']:>14,.0f}{c['msgs_per_s']:>16,.0f}",
        f"{'server CPU per msg (us)':28}{s['server_cpu_us']:>14,.1f}{c['server_cpu_us']:>16,.1f}",
        f"{'client CPU per msg (us)':28}{s['client_cpu_us']:>14,.1f}{c['client_cpu_us']:>16,.1f}",
        f"{'coordinator dispatches/s':28}{result['single_dispatch']['dispatches_per_s']:>14,.0f}"
        f"{result['cluster_dispatch']['dispatches_per_s']:>16,.0f}",
        f"per-shard ceiling (a core per shard): {result['shard_ceiling_msgs_per_s']:,.0f} msgs/s; "
        f"one client core: {result['client_core_msgs_per_s']:,.0f} msgs/s",
    ]
    return lines
