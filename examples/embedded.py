"""Embed the runtime in your own program: an agent, a coordinator and a client in process.

    python examples/embedded.py          # the in-memory bus: nothing else needed
    python examples/embedded.py redis    # the same on a private Redis-protocol server

Only the bus changes between the two; every line after it is the same. The
runtime logs through the standard ``logging`` module unless your program set
up structlog: it prints nothing of its own here.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio

from acp.agents import Agent, Context, load_config
from acp.protocol import CommandModel
from acp.runtime import (
    Bus,
    Client,
    Coordinator,
    EmbeddedServer,
    MemoryBroker,
    MemoryBus,
    RedisBus,
    Worker,
)


class Reorder(CommandModel):
    """A typed command: ``command`` names it on the wire (``{"cmd": "REORDER", ...}``)."""

    command = "REORDER"
    sku: str
    on_hand: int
    weekly_demand: int


stock = Agent("stock-keeper", tier="haiku", complexity="low")


@stock.command(Reorder)
async def reorder(cmd: Reorder, ctx: Context) -> dict[str, Any]:
    weeks_left = cmd.on_hand / max(cmd.weekly_demand, 1)
    return {"sku": cmd.sku, "reorder": weeks_left < 2, "weeks_left": round(weeks_left, 1)}


async def main(backend: str) -> None:
    async with AsyncExitStack() as stack:
        if backend == "redis":
            server = await stack.enter_async_context(EmbeddedServer())  # or your own Redis URL
            buses: list[Bus] = [RedisBus.from_url(server.url) for _ in range(3)]
        else:
            broker = MemoryBroker()  # the clients of one broker meet, like clients of one Redis
            buses = [MemoryBus(broker) for _ in range(3)]
        worker_bus, coordinator_bus, client_bus = [
            await stack.enter_async_context(bus) for bus in buses
        ]

        async with anyio.create_task_group() as tg:
            coordinator = Coordinator(coordinator_bus, load_config())
            worker = Worker(worker_bus, [stock])
            await tg.start(coordinator.run)
            await tg.start(worker.run)
            await coordinator.has_led.wait()

            client = Client(client_bus)
            reply = await client.request(
                "stock-keeper",
                {"cmd": "REORDER", "sku": "A-113", "on_hand": 40, "weekly_demand": 30},
                timeout=30,
            )
            print(f"{backend}: {reply.sender} says {reply.body}")

            sent = await client.send("stock-keeper", {"cmd": "REORDER", "sku": "B-7"})
            result = await client.result(sent.id, wait=10)  # a bad command: an error reply
            print(
                f"{backend}: {sent.id[:8]}... is {result.state.value}: {result.reply.body if result.reply else None}"
            )

            worker.stop()
            coordinator.stop()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory")
