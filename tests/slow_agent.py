"""An agent whose work takes a while, for shutdown tests."""

from typing import Any

import anyio

from acp.agents import Agent, Context

agent = Agent("slow-agent")


@agent.command("WORK")
async def work(body: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await anyio.sleep(float(body.get("seconds", 1.0)))
    await ctx.send("results", {"cmd": "DONE", "n": body["n"]})
    return {"n": body["n"]}
