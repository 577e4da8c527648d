"""Durable queues of frames between named destinations: Redis Streams or in memory."""

from acp.runtime.bus.base import (
    Bus,
    BusOptions,
    CommitStatus,
    DeadLetter,
    Delivery,
    Event,
    Outgoing,
    QueueStats,
)
from acp.runtime.bus.memory import MemoryBroker, MemoryBus
from acp.runtime.bus.redis import Durability, RedisBus

__all__ = [
    "Bus",
    "BusOptions",
    "CommitStatus",
    "DeadLetter",
    "Delivery",
    "Durability",
    "Event",
    "MemoryBroker",
    "MemoryBus",
    "Outgoing",
    "QueueStats",
    "RedisBus",
]
