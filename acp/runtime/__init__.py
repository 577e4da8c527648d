"""What runs agents: the bus, workers, the coordinator, clients, the embedded server.

Embedding the runtime takes three pieces and a bus::

    from acp.runtime import Client, Coordinator, MemoryBroker, MemoryBus, Worker

    broker = MemoryBroker()                      # or RedisBus.from_url(url) for each
    async with MemoryBus(broker) as a, MemoryBus(broker) as b, MemoryBus(broker) as c:
        ...  # Worker(a, [agent]).run, Coordinator(b, load_config()).run in a task group
        reply = await Client(c).request("pipeline-doctor", {"cmd": "PIPELINE_STATUS", ...})

``examples/embedded.py`` is the whole program, on memory and on Redis. The
names below are the public surface; they are imported when first used, so
``import acp.runtime`` stays cheap (the anthropic SDK alone takes a second).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acp.runtime.bus import (
        Bus,
        BusOptions,
        Delivery,
        MemoryBroker,
        MemoryBus,
        Outgoing,
        RedisBus,
    )
    from acp.runtime.client import Client
    from acp.runtime.coordinator import Coordinator
    from acp.runtime.embedded import EmbeddedServer
    from acp.runtime.options import Deployment, bus_options
    from acp.runtime.processor import Processor
    from acp.runtime.results import Result, ResultState
    from acp.runtime.settings import RedisSettings
    from acp.runtime.stack import Stack
    from acp.runtime.worker import Worker, WorkerContext, serve_until_signalled
    from acp.runtime.workflows import WorkflowRunner

__all__ = [
    "Bus",
    "BusOptions",
    "Client",
    "Coordinator",
    "Delivery",
    "Deployment",
    "EmbeddedServer",
    "MemoryBroker",
    "MemoryBus",
    "Outgoing",
    "Processor",
    "RedisBus",
    "RedisSettings",
    "Result",
    "ResultState",
    "Stack",
    "Worker",
    "WorkerContext",
    "WorkflowRunner",
    "bus_options",
    "serve_until_signalled",
]

_WHERE = {
    "Bus": "acp.runtime.bus",
    "BusOptions": "acp.runtime.bus",
    "Delivery": "acp.runtime.bus",
    "MemoryBroker": "acp.runtime.bus",
    "MemoryBus": "acp.runtime.bus",
    "Outgoing": "acp.runtime.bus",
    "RedisBus": "acp.runtime.bus",
    "Client": "acp.runtime.client",
    "Coordinator": "acp.runtime.coordinator",
    "EmbeddedServer": "acp.runtime.embedded",
    "Deployment": "acp.runtime.options",
    "bus_options": "acp.runtime.options",
    "Processor": "acp.runtime.processor",
    "Result": "acp.runtime.results",
    "ResultState": "acp.runtime.results",
    "RedisSettings": "acp.runtime.settings",
    "Stack": "acp.runtime.stack",
    "Worker": "acp.runtime.worker",
    "WorkerContext": "acp.runtime.worker",
    "serve_until_signalled": "acp.runtime.worker",
    "WorkflowRunner": "acp.runtime.workflows",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
