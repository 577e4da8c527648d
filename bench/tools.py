"""Tools benchmark: what each kind of tool costs per call, and the prompt cache.

    python bench/tools.py                  # 300 calls of each kind
    python bench/tools.py --calls 1000 --json

Three measures, each against a baseline in the same run:

* per kind, one call as the agent loop makes it (``tool.run``: the input validated,
  the path confined, the output shaped) against the same work written directly: a
  plain function call, ``Path.read_text``, a walk with ``re``, ``Path.glob``, a
  ``/bin/sh -c`` subprocess, an ``mcp`` client calling the same stdio server; the
  API's server tools cost money, not time here: their price per use is printed;
* what the durable loop adds per call, end to end (embedded server, coordinator,
  worker, the real ``anthropic`` SDK answering at once over ``httpx2.MockTransport``):
  requests whose first model turn calls 9 tools against requests whose first turn
  calls 1, the difference divided by 8 (each call's result, its start mark and its
  report kept on the server, and its event published, before the next turn);
* the prompt cache: the share of a second call's prompt (bytes of its JSON) that
  sits in the cached prefix (the tool definitions, marked, then the system prompt),
  for an agent with file tools, a Python tool and an MCP server's tools.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from anywhere: make ``acp`` importable
    sys.path.insert(0, str(_ROOT))


from acp.agents import AgentDefinition, load_catalogue, load_config, tool  # noqa: E402
from acp.agents.claude import ClaudeAgent  # noqa: E402
from acp.agents.config import McpServerConfig, ToolsConfig  # noqa: E402
from acp.agents.mcp_servers import McpServers  # noqa: E402
from acp.agents.toolbox import Toolbox  # noqa: E402
from acp.agents.workspace import Workspace  # noqa: E402
from acp.runtime import Client, Coordinator, RedisBus, Worker  # noqa: E402
from acp.runtime.embedded import EmbeddedServer  # noqa: E402
from bench._fake_model import message, percentile, scripted_client  # noqa: E402

INVENTORY = McpServerConfig(
    command=sys.executable, args=[str(_ROOT / "tests" / "mcp_inventory.py")]
)


def lag(component_id: str, window_minutes: int = 15) -> dict[str, Any]:
    """Processing lag of a pipeline component."""
    return {"component_id": component_id, "lag_s": 42, "window_minutes": window_minutes}


lag_tool = tool(lag)
#: a tool with a side effect: the loop marks its start before running it
bump = tool(name="bump")(lag)


async def timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(max(5, n // 20)):  # warm up
        await call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def make_workspace(root: Path) -> None:
    for d in range(20):
        folder = root / f"pipelines{d:02d}"
        folder.mkdir()
        for f in range(10):
            lines = [f"step {i}: load table_{d}_{f}_{i} hourly" for i in range(40)]
            if f == 3:
                lines.append("owner: data-platform")
            (folder / f"job{f}.yaml").write_text("\n".join(lines) + "\n")


# -- one call per kind --------------------------------------------------------------------


async def per_kind(calls: int) -> dict[str, dict[str, float]]:
    from mcp import Client as McpClient
    from mcp.client.stdio import StdioServerParameters

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workspace(root)
        ws = {t.name: t for t in Workspace(root, bash=True).tools()}
        target = root / "pipelines07" / "job3.yaml"
        pattern = re.compile("owner")

        async def direct_read() -> None:
            lines = target.read_text().splitlines()
            "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(lines, 1))

        def grep_walk() -> list[Path]:
            hits = []
            for folder, _, files in os.walk(root):
                for name in files:
                    path = Path(folder, name)
                    if any(pattern.search(line) for line in path.read_text().splitlines()):
                        hits.append(path)
            return hits

        # in a thread, as the tools run: a walk would stall an event loop
        async def direct_grep() -> None:
            await anyio.to_thread.run_sync(grep_walk)

        async def direct_glob() -> None:
            await anyio.to_thread.run_sync(lambda: sorted(root.glob("**/job3.yaml")))

        async def direct_shell() -> None:
            await anyio.run_process(["/bin/sh", "-c", "true"])

        async def direct_lag() -> None:
            lag("etl")

        kinds: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]], int]] = [
            ("python function", lambda: lag_tool.run({"component_id": "etl"}), direct_lag, calls),
            ("Read (2 KB file)", lambda: ws["Read"].run({"file_path": str(target)}), direct_read,
             calls),
            ("Grep (200 files)", lambda: ws["Grep"].run({"pattern": "owner"}), direct_grep,
             max(20, calls // 10)),
            ("Glob (200 files)", lambda: ws["Glob"].run({"pattern": "**/job3.yaml"}),
             direct_glob, max(20, calls // 10)),
            ("Bash (true)", lambda: ws["Bash"].run({"command": "true"}), direct_shell,
             max(20, calls // 5)),
        ]  # fmt: skip
        for name, ours, baseline, n in kinds:
            out[name] = _pair(await timed(ours, n), await timed(baseline, n))
        pool = McpServers({"inventory": INVENTORY}, timeout=10)
        async with pool:
            stock = {t.tool: t for t in await pool.servers["inventory"].tools()}["stock"]
            params = StdioServerParameters(command=INVENTORY.command or "", args=INVENTORY.args)
            async with McpClient(params) as raw:

                async def raw_call() -> None:
                    await raw.call_tool("stock", {"sku": "A1"})

                ours = await timed(lambda: stock.run({"sku": "A1"}), max(50, calls // 2))
                out["MCP stdio (stock)"] = _pair(ours, await timed(raw_call, max(50, calls // 2)))
    return out


def _pair(ours: list[float], base: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(statistics.median(ours), 1),
        "p95_us": round(percentile(ours, 0.95), 1),
        "baseline_p50_us": round(statistics.median(base), 1),
    }


# -- what the durable loop adds per call ---------------------------------------------------

DEFINITION = AgentDefinition(
    name="checker",
    description="Checks pipelines with its tools.",
    model="haiku",
    computational_complexity="low",
    system_prompt="You check pipelines.",
    tools=["bump"],
)


def instant_model(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    messages = body["messages"]
    if len(messages) == 1:
        k = json.loads(messages[0]["content"])["k"]
        calls = [{"type": "tool_use", "id": f"toolu_{i}", "name": "bump",
                  "input": {"component_id": f"c{i}"}} for i in range(k)]  # fmt: skip
        return httpx2.Response(200, json=message(calls, "tool_use"))
    return httpx2.Response(200, json=message([{"type": "text", "text": "done"}], "end_turn"))


async def loop_cost(url: str, requests: int) -> dict[str, Any]:
    config = load_config()
    client = scripted_client(instant_model)
    toolbox = Toolbox(functions=[bump])
    agent = ClaudeAgent(DEFINITION, client=client, config=config, toolbox=toolbox)
    times: dict[int, list[float]] = {1: [], 9: []}
    async with (
        RedisBus.from_url(url) as worker_bus,
        RedisBus.from_url(url) as coordinator_bus,
        RedisBus.from_url(url) as client_bus,
        anyio.create_task_group() as tg,
    ):
        coordinator = Coordinator(coordinator_bus, config, definitions={"checker": DEFINITION})
        await tg.start(coordinator.run)
        worker = Worker(worker_bus, [agent])
        await tg.start(worker.run)
        caller = Client(client_bus, sender="bench", via="coordinator")
        for n in range(requests + 10):  # the first 10 warm up
            for k in (1, 9):
                started = time.perf_counter()
                await caller.request("checker", {"cmd": "CHECK", "n": n, "k": k}, timeout=30)
                if n >= 10:
                    times[k].append((time.perf_counter() - started) * 1000)
        worker.stop()
        coordinator.stop()
    one, nine = statistics.median(times[1]), statistics.median(times[9])
    return {"requests": requests, "one_call_p50_ms": round(one, 2),
            "nine_calls_p50_ms": round(nine, 2),
            "per_call_ms": round((nine - one) / 8, 3)}  # fmt: skip


# -- the prompt cache -----------------------------------------------------------------------


async def cached_share(url: str) -> dict[str, Any]:
    config = load_config()
    seen: list[dict[str, Any]] = []

    def model(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        if len(body["messages"]) == 1:
            call = {"type": "tool_use", "id": "toolu_1", "name": "Read",
                    "input": {"file_path": "pipelines00/job0.yaml"}}  # fmt: skip
            return httpx2.Response(200, json=message([call], "tool_use", body["model"]))
        done = [{"type": "text", "text": "ok"}]
        return httpx2.Response(200, json=message(done, "end_turn", body["model"]))

    client = scripted_client(model)
    engineer = load_catalogue(_ROOT / "acp" / "catalogue" / "agents").definitions["data-engineer"]
    engineer = engineer.model_copy(update={"tools": [*engineer.tools, "lag", "mcp__inventory"]})
    with tempfile.TemporaryDirectory() as tmp:
        make_workspace(Path(tmp))
        tools = ToolsConfig(workspace=tmp, bash=True, mcp={"inventory": INVENTORY})
        agent = ClaudeAgent(engineer, client=client, config=config,
                            toolbox=Toolbox(tools, functions=[lag_tool]))  # fmt: skip
        async with (
            RedisBus.from_url(url) as worker_bus,
            RedisBus.from_url(url) as client_bus,
            anyio.create_task_group() as tg,
        ):
            worker = Worker(worker_bus, [agent])
            await tg.start(worker.run)
            caller = Client(client_bus, sender="bench", via="direct")
            body = {"cmd": "PIPELINE_STATUS", "component_id": "etl"}
            await caller.request("data-engineer", body, timeout=30)
            worker.stop()
    first, second = seen[0], seen[1]
    prefix = len(json.dumps(second["tools"])) + len(json.dumps(second["system"]))
    rest = len(json.dumps(second["messages"]))
    return {
        "tools": len(second["tools"]),
        "tool_bytes": len(json.dumps(second["tools"])),
        "system_bytes": len(json.dumps(second["system"])),
        "message_bytes": rest,
        "same_prefix": first["tools"] == second["tools"] and first["system"] == second["system"],
        "marks": sum("cache_control" in t for t in second["tools"])
        + sum("cache_control" in b for b in second["system"]),
        "cached_share": round(prefix / (prefix + rest), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    kinds = anyio.run(per_kind, args.calls)
    with EmbeddedServer() as server:
        loop = anyio.run(loop_cost, server.url, args.requests)
        cache = anyio.run(cached_share, server.url)
    prices = ToolsConfig()
    result = {"kinds": kinds, "loop": loop, "cache": cache,
              "web_search_usd_per_use": prices.web_search_usd_per_1000 / 1000,
              "web_fetch_usd_per_use": prices.web_fetch_usd_per_1000 / 1000}  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'one call':24}{'p50 us':>10}{'p95 us':>10}{'direct p50 us':>15}")
    for name, row in kinds.items():
        print(f"{name:24}{row['p50_us']:>10}{row['p95_us']:>10}{row['baseline_p50_us']:>15}")
    print(f"{'WebSearch':24}{'$' + format(result['web_search_usd_per_use'], '.3f') + ' a use':>35}")
    print(f"{'WebFetch':24}{'tokens only':>35}")
    print(
        f"durable loop, per call: {loop['per_call_ms']} ms (9 calls a turn "
        f"{loop['nine_calls_p50_ms']} ms p50, 1 call {loop['one_call_p50_ms']} ms; "
        f"{loop['requests']} requests each, through the coordinator)"
    )
    print(
        f"prompt cache: {cache['tools']} tools ({cache['tool_bytes']:,} B) + system "
        f"({cache['system_bytes']:,} B) cached, messages {cache['message_bytes']:,} B: "
        f"{cache['cached_share']:.1%} of the second call's prompt bytes; same prefix on "
        f"both calls: {cache['same_prefix']}; cache marks: {cache['marks']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
