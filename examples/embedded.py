"""Embed the runtime in your own program: agents and a coordinator in process.

    python examples/embedded.py          # the in-memory bus: nothing else needed
    python examples/embedded.py redis    # the same on a private Redis-protocol server

Only the bus changes between the two; every line after it is the same.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from acp.agents import load_config
from acp.runtime.bus import Bus, MemoryBroker, MemoryBus, RedisBus
from acp.runtime.client import Client
from acp.runtime.coordinator import Coordinator
from acp.runtime.embedded import EmbeddedServer
from acp.runtime.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_doctor import agent as doctor


async def main(backend: str) -> None:
    async with AsyncExitStack() as stack:
        if backend == "redis":
            server = await stack.enter_async_context(EmbeddedServer())
            buses: list[Bus] = [RedisBus.from_url(server.url) for _ in range(3)]
        else:
            broker = MemoryBroker()  # the clients of one broker meet, like clients of one Redis
            buses = [MemoryBus(broker) for _ in range(3)]
        worker_bus, coordinator_bus, client_bus = [
            await stack.enter_async_context(b) for b in buses
        ]

        async with anyio.create_task_group() as tg:
            coordinator = Coordinator(coordinator_bus, load_config())
            worker = Worker(worker_bus, [doctor])
            await tg.start(coordinator.run)
            await tg.start(worker.run)
            await coordinator.has_led.wait()

            reply = await Client(client_bus).request(
                "pipeline-doctor",
                {
                    "cmd": "PIPELINE_STATUS",
                    "component_id": "orders",
                    "data_flow": {"quality_score": 0.72},
                },
                timeout=30,
            )
            print(f"{backend}: {reply.sender} says {reply.body}")
            worker.stop()
            coordinator.stop()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory")
