"""A worker process for the fault tests: for each {"n": k} on "work" it commits one
result {"n": k} to "results". Run as ``python tests/fault_worker.py URL CONSUMER``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from acp.protocol import Envelope
from acp.runtime.bus import BusOptions, RedisBus
from acp.runtime.processor import Processor

OPTIONS = BusOptions(min_idle=1.0, reclaim_interval=0.2, relay_after=0.5, max_deliveries=20)


async def main(url: str, consumer: str) -> None:
    async def handler(env: Envelope) -> Sequence[Envelope]:
        # Real work of 10 ms (an I/O call), eight at a time: a worker handles at most
        # 800 messages a second, so the run lasts long enough, however fast the
        # machine, for kills to land mid-run and mid-handler.
        await anyio.sleep(0.01)
        result = {"n": env.body["n"], "by": consumer}
        return [
            Envelope.for_body(result, sender="work", recipient="results", correlation_id=env.id)
        ]

    async with RedisBus.from_url(url, OPTIONS, reconnect_timeout=30) as bus:
        processor = Processor(bus, "work", handler, consumer=consumer, concurrency=8, batch=50)
        await processor.run()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
