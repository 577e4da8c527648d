"""An agent whose every run leaves an external mark (a Redis list entry), so tests
can count how many times each step really ran."""

from __future__ import annotations

import os
from typing import Any

import anyio
import redis

from acp.agents import Agent, Context

agent = Agent("counting-agent")
RUNS = "acp-test:runs"


@agent.command("WORK")
async def work(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await anyio.sleep(float(body.get("seconds", 1.0)))

    def mark() -> None:
        client = redis.Redis.from_url(os.environ["ACP_REDIS_URL"])
        try:
            client.rpush(RUNS, str(body["n"]))
        finally:
            client.close()

    await anyio.to_thread.run_sync(mark)
    return {"n": body["n"]}
