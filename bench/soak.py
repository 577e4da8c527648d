"""Soak benchmark: does the server's memory level off under a long stream of messages?

    python bench/soak.py                       # 1,000,000 messages, bounded and unbounded
    python bench/soak.py --messages 300000 --json

One destination on a fresh embedded server: a producer sends ACP envelopes in
batches of 500 (at most 20,000 ahead of the consumer), a ``Processor`` with a
no-op handler commits them. Every 100,000 committed messages the run prints the
server's ``used_memory`` and the sizes of the destination's send-dedup set, its
ledger and its stream. The same run is made twice on fresh servers: with the
bus's defaults (``dedup_max`` bounds each set to 100,000 ids), and with the bound
lifted (``dedup_max`` 10**9, so only the 24 h age trims the sets, as before the
bound existed): the baseline memory grows by the ids it keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import redis

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from anywhere: make ``acp`` importable
    sys.path.insert(0, str(_ROOT))

from acp.protocol import Envelope, WireCodec  # noqa: E402
from acp.runtime.bus import BusOptions, Outgoing, RedisBus  # noqa: E402
from acp.runtime.embedded import EmbeddedServer  # noqa: E402
from acp.runtime.keys import Keys  # noqa: E402
from acp.runtime.processor import Processor  # noqa: E402

DEST = "soak"
BODY = {"cmd": "PIPELINE_STATUS", "component_id": "etl", "data_flow": {"quality_score": 0.97}}
AHEAD = 20_000
BATCH = 500


def sample(client: redis.Redis, done: int, started: float) -> dict[str, Any]:
    keys = Keys(DEST)
    memory: Any = client.info("memory")
    return {
        "messages": done,
        "used_memory_mb": round(memory["used_memory"] / 2**20, 1),
        "dedup_ids": client.zcard(keys.sent),
        "ledger_ids": client.zcard(keys.done),
        "stream_entries": client.xlen(keys.stream),
        "seconds": round(time.perf_counter() - started, 1),
    }


async def soak(url: str, messages: int, options: BusOptions, every: int) -> list[dict[str, Any]]:
    codec = WireCodec()
    client = redis.Redis.from_url(url)
    rows: list[dict[str, Any]] = []

    async def nothing(env: Envelope) -> list[Envelope]:
        return []

    async with (
        RedisBus.from_url(url, options) as consumer,
        RedisBus.from_url(url, options) as producer,
        anyio.create_task_group() as tg,
    ):
        processor = Processor(consumer, DEST, nothing, codec=codec, consumer="soak-1",
                              concurrency=1000, batch=500)  # fmt: skip
        await tg.start(processor.run)
        started = time.perf_counter()
        sent = 0
        next_sample = every
        while processor.stats.handled < messages:
            while sent < messages and sent - processor.stats.handled < AHEAD:
                batch = []
                for _ in range(min(BATCH, messages - sent)):
                    env = Envelope.for_body(BODY, sender="soak", recipient=DEST)
                    batch.append(Outgoing(DEST, env.id, codec.encode(env)))
                await producer.send_many(batch)
                sent += len(batch)
            if processor.stats.handled >= next_sample:
                rows.append(sample(client, processor.stats.handled, started))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                next_sample += every
            await anyio.sleep(0.01)
        if not rows or rows[-1]["messages"] < processor.stats.handled:
            rows.append(sample(client, processor.stats.handled, started))
        processor.stop()
    client.close()
    return rows


def run(messages: int, dedup_max: int, every: int) -> list[dict[str, Any]]:
    server = EmbeddedServer()
    server.start()
    try:
        options = replace(BusOptions(), dedup_max=dedup_max)
        return anyio.run(soak, server.url, messages, options, every)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000, help="messages between samples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unbounded run")
    args = parser.parse_args(argv)
    bound = BusOptions().dedup_max
    result: dict[str, Any] = {"dedup_max": bound, "bounded": run(args.messages, bound, args.every)}
    if not args.no_baseline:
        result["unbounded"] = run(args.messages, 10**9, args.every)
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
        return 0
    print(
        f"{'messages':>10} {'bounded MB':>11} {'ids kept':>17} {'unbounded MB':>13} {'ids kept':>17}"
    )
    base = result.get("unbounded", [])
    for i, row in enumerate(result["bounded"]):
        other = base[i] if i < len(base) else None
        kept = f"{row['dedup_ids']:,}+{row['ledger_ids']:,}"
        line = f"{row['messages']:>10,} {row['used_memory_mb']:>11} {kept:>17}"
        if other:
            line += f" {other['used_memory_mb']:>13} {other['dedup_ids']:,}+{other['ledger_ids']:,}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
