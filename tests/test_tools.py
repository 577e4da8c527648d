"""Tools for Claude-backed agents (issue 16): Claude Code's tool names mapped to a
confined workspace, the API's server tools, MCP servers (a real stdio server process
written with the ``mcp`` SDK) and Python tools registered by name, all in the agent
loop through the real ``anthropic`` SDK; what the deployment allows decides, secrets
never reach a tool, outputs are capped, every call is reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from acp.agents import AgentDefinition, ClaudeAgent
from acp.agents.config import McpServerConfig, RuntimeConfig, ToolsConfig, Usage
from acp.agents.mcp_servers import McpServers, read_mcp_json
from acp.agents.toolbox import Toolbox
from acp.agents.workspace import Workspace
from acp.errors import ConfigError, Continue, ToolError
from acp.protocol import Envelope
from acp.testing import TestContext
from tests.test_claude_agent import CONFIG, FakeAPI, message
from tests.test_delegation import tool_use

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
INVENTORY = McpServerConfig(command=sys.executable, args=[str(HERE / "mcp_inventory.py")])
SECRET = "sk-ant-secret-value-0123456789"


SHIPPED = Path(__file__).resolve().parents[1] / "runtime" / "acp.toml"


def config_with_tools(*lines: str, tables: str = "") -> str:
    """The shipped config, ``lines`` added to its ``[tools]`` and ``tables`` after it."""
    text = SHIPPED.read_text()
    assert text.count("\n[tools]\n") == 1
    return text.replace("\n[tools]\n", "\n[tools]\n" + "".join(f"{x}\n" for x in lines)) + tables


def definition(tools: list[str] | None = None, **fields: Any) -> AgentDefinition:
    return AgentDefinition(
        name="data-engineer",
        description="Builds and watches data pipelines.",
        model="sonnet",
        computational_complexity="medium",
        system_prompt="You are the data engineer. Reply in compact JSON.",
        tools=tools or [],
        **fields,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "etl.yaml").write_text("name: etl\nschedule: hourly\nowner: data\n")
    (root / "README.md").write_text("Pipelines live in pipelines/.\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secrets.txt").write_text("password: hunter2\n")
    (root / "escape").symlink_to(outside / "secrets.txt")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "inside-link").symlink_to(root / "README.md")
    return root


def tools_of(ws: Workspace) -> dict[str, Any]:
    return {t.name: t for t in ws.tools()}


# -- the workspace -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["../outside/secrets.txt", "pipelines/../../outside/secrets.txt", "/etc/passwd",
             "escape", "escape-dir/secrets.txt", "a\x00b", ""],
)  # fmt: skip
async def test_paths_out_of_the_workspace_are_refused(workspace: Path, path: str) -> None:
    read = tools_of(Workspace(workspace))["Read"]
    with pytest.raises(ToolError) as refused:
        await read.run({"file_path": path})
    assert "hunter2" not in str(refused.value)


async def test_read_grep_and_glob_stay_inside(workspace: Path) -> None:
    tools = tools_of(Workspace(workspace))
    assert sorted(tools) == ["Glob", "Grep", "Read"], "read-only by default, no Bash"
    ok, text = await tools["Read"].run({"file_path": "pipelines/etl.yaml", "offset": 2})
    assert ok
    assert text == "     2\tschedule: hourly\n     3\towner: data"
    ok, text = await tools["Read"].run({"file_path": str(workspace / "inside-link")})
    assert ok
    assert "Pipelines live" in text, "a link that stays inside is followed"
    ok, text = await tools["Grep"].run({"pattern": "password|hourly", "output_mode": "content"})
    assert ok
    assert text == "pipelines/etl.yaml:2:schedule: hourly", "links out are not searched"
    ok, text = await tools["Glob"].run({"pattern": "**/*"})
    assert ok
    assert "secrets.txt" not in text
    assert "pipelines/etl.yaml" in text
    with pytest.raises(ToolError, match="relative to the workspace"):
        await tools["Glob"].run({"pattern": "../*"})


async def test_reads_are_capped(workspace: Path) -> None:
    (workspace / "big.log").write_text("x" * 5000)
    read = tools_of(Workspace(workspace, read_max=4096))["Read"]
    with pytest.raises(ToolError, match="5,000 bytes, over the 4,096-byte read cap"):
        await read.run({"file_path": "big.log"})


async def test_writing_tools_exist_only_in_a_writable_workspace(workspace: Path) -> None:
    assert "Write" not in tools_of(Workspace(workspace))
    tools = tools_of(Workspace(workspace, writable=True))
    ok, _ = await tools["Write"].run({"file_path": "out/report.md", "content": "a b a\n"})
    assert ok
    assert (workspace / "out" / "report.md").read_text() == "a b a\n"
    with pytest.raises(ToolError, match="occurs 2 times"):
        await tools["Edit"].run(
            {"file_path": "out/report.md", "old_string": "a", "new_string": "c"}
        )
    edits = [{"old_string": "b", "new_string": "B"}, {"old_string": "zzz", "new_string": "y"}]
    with pytest.raises(ToolError, match="edit 2: old_string not found"):
        await tools["MultiEdit"].run({"file_path": "out/report.md", "edits": edits})
    assert (workspace / "out" / "report.md").read_text() == "a b a\n", "all or nothing"
    ok, _ = await tools["MultiEdit"].run(
        {
            "file_path": "out/report.md",
            "edits": [{"old_string": "a", "new_string": "c", "replace_all": True}],
        }
    )
    assert (workspace / "out" / "report.md").read_text() == "c b c\n"
    with pytest.raises(ToolError, match="outside the workspace"):
        await tools["Write"].run({"file_path": "escape", "content": "overwritten"})
    assert (workspace.parent / "outside" / "secrets.txt").read_text() == "password: hunter2\n"


async def test_bash_runs_confined_with_no_secrets_a_timeout_and_a_cap(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("ACP_HMAC_KEYS", "k1=another-secret-key")
    bash = tools_of(Workspace(workspace, bash=True, bash_timeout=2, output_max=1024))["Bash"]
    ok, result = await bash.run({"command": "pwd; env; cat pipelines/etl.yaml | wc -l"})
    assert ok
    assert result["exit_code"] == 0
    assert result["output"].splitlines()[0] == str(workspace)
    assert SECRET not in result["output"]
    assert "another-secret" not in result["output"]
    assert f"HOME={workspace}" in result["output"]
    ok, result = await bash.run({"command": "sleep 30 & sleep 30", "timeout": 0.5})
    assert result["timed_out"] == "killed after 0.5 s"
    ok, result = await bash.run({"command": "yes | head -c 100000"})
    assert len(result["output"]) < 1100
    assert result["output"].endswith("[output cut at 1,024 bytes]")
    ok, result = await bash.run({"command": "exit 7"})
    assert result["exit_code"] == 7


# -- what a definition gets ------------------------------------------------------------------


def test_the_plan_says_what_is_given_and_why_the_rest_is_off(workspace: Path) -> None:
    toolbox = Toolbox(
        ToolsConfig(
            workspace=str(workspace),
            web_search=True,
            mcp={"inventory": INVENTORY},
            python={"pipeline_lag": "tests.test_function_tools:pipeline_lag"},
        )
    )
    asked = ["Read", "Write", "Bash", "WebSearch", "WebFetch", "mcp__inventory__stock",
             "mcp__billing__charge", "TodoWrite", "Frobnicate", "pipeline_lag"]  # fmt: skip
    plan = toolbox.plan(definition(asked))
    assert sorted(plan.local) == ["Read", "pipeline_lag"]
    assert list(plan.server) == ["WebSearch"]
    assert plan.server["WebSearch"]["type"] == "web_search_20260318"  # type: ignore[typeddict-item]
    assert plan.mcp == {"inventory": {"stock"}}
    assert plan.off == {
        "Write": "off: the workspace is read-only ([tools] writable = true allows it)",
        "Bash": "off: [tools] bash = true allows it (a subprocess in the workspace)",
        "WebFetch": "off: [tools] web_fetch = true allows it (priced per use)",
        "mcp__billing__charge": "no MCP server 'billing' is declared ([tools.mcp] or .mcp.json)",
        "TodoWrite": "Claude Code's TodoWrite is not provided here: a to-do list for an "
        "interactive session",
        "Frobnicate": "no registered Python tool or MCP tool has this name",
    }
    assert plan.unknown == ["mcp__billing__charge", "TodoWrite", "Frobnicate"]


def test_no_tools_line_inherits_everything_allowed_less_what_is_disallowed(
    workspace: Path,
) -> None:
    toolbox = Toolbox(ToolsConfig(workspace=str(workspace), bash=True,
                                  mcp={"inventory": INVENTORY}))  # fmt: skip
    plan = toolbox.plan(definition())
    assert sorted(plan.local) == ["Bash", "Glob", "Grep", "Read"]
    assert plan.mcp == {"inventory": None}
    plan = toolbox.plan(definition(disallowedTools=["Bash", "mcp__inventory"]))
    assert sorted(plan.local) == ["Glob", "Grep", "Read"]
    assert not plan.mcp
    assert plan.off == {"Bash": "listed in disallowedTools",
                        "mcp__inventory": "listed in disallowedTools"}  # fmt: skip
    nothing = Toolbox(ToolsConfig()).plan(definition(["Read", "Bash"]))
    assert not nothing.local
    assert nothing.off["Bash"].startswith("off: no workspace")


@pytest.mark.parametrize("search", [False, True])
@pytest.mark.parametrize("fetch", [False, True])
@pytest.mark.parametrize(
    ("tools", "denied"),
    [([], []), (["WebSearch"], []), (["Read", "WebFetch"], []), ([], ["WebSearch"])],
)
def test_the_coordinator_prices_the_server_tools_the_worker_offers(
    search: bool, fetch: bool, tools: list[str], denied: list[str]
) -> None:
    """The coordinator reserves for a turn what its server tools may bill; it must
    price exactly those the worker's toolbox offers the agent."""
    config = ToolsConfig(web_search=search, web_fetch=fetch, web_max_uses=3,
                         web_search_usd_per_1000=10.0, web_fetch_usd_per_1000=20.0)  # fmt: skip
    agent = definition(tools, disallowedTools=denied)
    offered = Toolbox(config).plan(agent).server
    each = {"WebSearch": 3 * 10.0 / 1000, "WebFetch": 3 * 20.0 / 1000}
    assert config.server_tools_usd(agent.tools, agent.disallowed_tools) == pytest.approx(
        sum(each[name] for name in offered)
    )


def test_relative_tool_paths_are_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    config = tmp_path / "acp.toml"
    config.write_text(config_with_tools('workspace = "work"'))
    from acp.agents.config import load_config

    loaded = load_config(config, env={})
    assert loaded.tools.workspace == str(tmp_path / "work")


def test_mcp_json_is_read_as_claude_code_writes_it(tmp_path: Path) -> None:
    path = tmp_path / ".mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "inventory": {"command": "python", "args": ["srv.py", "--db", "${DB:-inv.db}"],
                      "env": {"TOKEN": "${INVENTORY_TOKEN}"}},
        "docs": {"type": "http", "url": "https://mcp.example/${TEAM}/mcp",
                 "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}},
    }}))  # fmt: skip
    servers = read_mcp_json(path, env={"INVENTORY_TOKEN": "t1", "TEAM": "data", "DOCS_TOKEN": "d"})
    assert servers["inventory"].args == ["srv.py", "--db", "inv.db"]
    assert servers["inventory"].env == {"TOKEN": "t1"}
    assert servers["docs"].url == "https://mcp.example/data/mcp"
    assert servers["docs"].headers == {"Authorization": "Bearer d"}
    with pytest.raises(
        ConfigError, match=r"mcpServers.inventory: \$\{INVENTORY_TOKEN\} is not set"
    ):
        read_mcp_json(path, env={"TEAM": "data", "DOCS_TOKEN": "d"})
    path.write_text(json.dumps({"mcpServers": {"old": {"type": "sse", "url": "http://x"}}}))
    with pytest.raises(ConfigError, match="SSE servers are not supported"):
        read_mcp_json(path)


# -- a real MCP server --------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_an_mcp_server_is_listed_once_called_restarted_when_it_dies_and_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    pool = McpServers({"inventory": INVENTORY}, timeout=3.0)
    server = pool.servers["inventory"]
    async with pool:
        names = [t.name for t in await server.tools()]
        assert names == ["mcp__inventory__stock", "mcp__inventory__reserve",
                         "mcp__inventory__environment", "mcp__inventory__die",
                         "mcp__inventory__slow"]  # fmt: skip
        tools = {t.tool: t for t in await server.tools()}
        ok, first = await tools["stock"].run({"sku": "A1"})
        assert ok
        assert first["units"] == 42
        ok, env = await tools["environment"].run({})
        assert ok
        assert "ANTHROPIC_API_KEY" not in env, "the worker's environment stays out"
        ok, died = await tools["die"].run({})
        assert not ok
        assert "its outcome is unknown" in died
        assert "restarted" in died
        ok, again = await tools["stock"].run({"sku": "A1"})
        assert ok
        assert again["pid"] != first["pid"], "a new server process answers"
        assert server.starts == 2
        ok, slow = await tools["slow"].run({"seconds": 10})
        assert not ok
        assert "did not answer in 3 s" in slow
    broken = McpServers({"nope": McpServerConfig(command="/nonexistent/mcp-server")}, timeout=3)
    async with broken:
        ok, why = await broken.servers["nope"].call("x", {})
        assert not ok
        assert "did not start" in why


# -- in the agent loop, through the real SDK ----------------------------------------------


@pytest.mark.timeout(60)
async def test_every_kind_of_tool_in_one_turn_reported_capped_and_scrubbed(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    (workspace / "leak.txt").write_text(f"key={SECRET}\n")
    (workspace / "huge.txt").write_text("y" * 3000)
    config = CONFIG.model_copy(update={"tools": ToolsConfig(
        workspace=str(workspace), web_search=True, output_max=1000, mcp={"inventory": INVENTORY},
        python={"pipeline_lag": "tests.test_function_tools:pipeline_lag"},
    )})  # fmt: skip
    asked = ["Read", "WebSearch", "mcp__inventory__stock", "pipeline_lag"]
    calls = (("Read", {"file_path": "leak.txt"}), ("mcp__inventory__stock", {"sku": "A1"}),
             ("pipeline_lag", {"component_id": "etl"}), ("Read", {"file_path": "huge.txt"}),
             ("Read", {"file_path": "../outside/secrets.txt"}))  # fmt: skip
    api = FakeAPI(httpx2.Response(200, json=tool_use(*calls, model="claude-sonnet-5-5")))
    agent = ClaudeAgent(definition(asked), client=api.client(), config=config)
    env = Envelope.for_body({"cmd": "PIPELINE_STATUS"}, sender="t", recipient="data-engineer")
    records: dict[str, list[dict[str, Any]]] = {}
    ctx = TestContext(env, records=records)
    async with agent.lifespan():
        with pytest.raises(Continue):
            await agent.handle(env, ctx)
    offered = api.bodies[0]["tools"]
    assert [t["name"] for t in offered] == ["Read", "pipeline_lag", "mcp__inventory__stock",
                                            "web_search"]  # fmt: skip
    assert offered[-1] == {"type": "web_search_20260318", "name": "web_search", "max_uses": 5,
                           "cache_control": {"type": "ephemeral", "ttl": "5m"}}  # fmt: skip
    assert sum("cache_control" in t for t in offered) == 1
    results = {r["tool_use_id"]: r for r in records[env.id][1]["content"]}
    leak, stock, lag, huge, out = (results[f"toolu_{n:02d}"] for n in range(5))
    assert SECRET not in leak["content"]
    assert "key=[redacted]" in leak["content"]
    assert json.loads(stock["content"])["units"] == 42
    assert json.loads(lag["content"])["lag_s"] == 42
    assert "output cut: 1,000 of" in huge["content"]
    assert len(huge["content"]) < 1200
    assert out["is_error"]
    assert "'..' is not allowed" in out["content"]
    assert [(c["tool"], c["outcome"]) for c in ctx.tool_calls] == [
        ("Read", "ok"), ("mcp__inventory__stock", "ok"), ("pipeline_lag", "ok"),
        ("Read", "ok"), ("Read", "error")]  # fmt: skip
    assert all(c["agent"] == "data-engineer" and c["duration_ms"] >= 0 for c in ctx.tool_calls)
    assert all(SECRET not in json.dumps(c) for c in ctx.tool_calls)


def tokens_cost(config: RuntimeConfig, meta: dict[str, Any]) -> float:
    """What a reply's tokens alone cost, server tool uses left out."""
    tokens = {k: v for k, v in meta["usage"].items() if not k.endswith("_requests")}
    return config.tier(meta["tier"]).cost(Usage(**tokens))


async def test_server_tool_uses_are_priced_into_the_call(workspace: Path) -> None:
    config = CONFIG.model_copy(update={"tools": ToolsConfig(web_search=True)})
    answer = message('{"ok": true}', model="claude-sonnet-5-5")
    answer["usage"]["server_tool_use"] = {"web_search_requests": 3, "web_fetch_requests": 0}
    api = FakeAPI(httpx2.Response(200, json=answer))
    agent = ClaudeAgent(definition(["WebSearch"]), client=api.client(), config=config)
    env = Envelope.for_body({"cmd": "FIND_DOCS"}, sender="t", recipient="data-engineer")
    body = await agent.handle(env, TestContext(env, records={}))
    assert body is not None
    meta = body["_acp"]
    assert meta["usage"]["web_search_requests"] == 3
    assert meta["cost_usd"] == pytest.approx(tokens_cost(config, meta) + 3 * 10.0 / 1000)
    assert config.price("sonnet", Usage(web_search_requests=3)) == pytest.approx(0.03)


def test_tools_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does-not-exist"):
        Toolbox(ToolsConfig(workspace=str(tmp_path / "does-not-exist")))
    with pytest.raises(ConfigError, match="give either a command"):
        McpServers.from_config(ToolsConfig(mcp={"x": McpServerConfig()}))
    with pytest.raises(ConfigError, match="cannot import"):
        Toolbox(ToolsConfig(python={"lag": "no_such_module:lag"}))
    assert RuntimeConfig.model_validate(
        {**CONFIG.model_dump(), "tools": {"web_search": True}}
    ).tools.web_search


# -- the command line ------------------------------------------------------------------------


def test_agents_show_lists_the_tools_given_and_validate_warns_on_unknown_ones(
    tmp_path: Path, workspace: Path
) -> None:
    from typer.testing import CliRunner

    from acp.cli import app

    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "engineer.md").write_text(
        "---\nname: engineer\ndescription: Checks pipelines.\nmodel: haiku\n"
        "tools: Read, Bash, mcp__inventory__stock, Frobnicate\n---\nYou check pipelines.\n"
    )
    config = tmp_path / "acp.toml"
    config.write_text(config_with_tools(
        f'workspace = "{workspace}"',
        tables=f"\n[tools.mcp.inventory]\ncommand = {json.dumps(INVENTORY.command)}\n"
        f"args = {json.dumps(INVENTORY.args)}\n",
    ))  # fmt: skip
    runner = CliRunner()
    wide = {"COLUMNS": "200"}
    shown = runner.invoke(app, ["agents", "show", "engineer", "--from", str(agents),
                                "--config", str(config)], env=wide)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    lines = {line.split("│")[1].strip(): line for line in shown.output.splitlines()
             if line.count("│") == 3}  # fmt: skip
    assert "yes" in lines["Read"]
    assert "yes" in lines["mcp__inventory__stock"], "the server was asked for its tools"
    assert "no: off: [tools] bash = true allows it" in lines["Bash"]
    assert "no registered Python tool or MCP tool has this name" in lines["Frobnicate"]
    checked = runner.invoke(app, ["agents", "validate", str(agents), "--config", str(config)],
                            env=wide)  # fmt: skip
    assert checked.exit_code == 0, "a warning, not a problem"
    assert (
        f"warning: {agents / 'engineer.md'}: tools: Frobnicate: no registered Python tool"
        in checked.output
    )
    assert "tools: Bash" not in checked.output, "off by configuration is not a warning"


async def test_a_server_tool_turn_paused_by_the_api_goes_on_as_it_was() -> None:
    """WebSearch runs at the API: its blocks come back in the model's turn, and a turn
    the API paused (``pause_turn``) is sent back as it is, as new work, to go on."""
    config = CONFIG.model_copy(update={"tools": ToolsConfig(web_search=True)})
    searched = message("", model="claude-sonnet-5-5", stop_reason="pause_turn")
    searched["content"] = [
        {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search",
         "input": {"query": "kafka consumer lag alerting"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": [
            {"type": "web_search_result", "url": "https://kafka.example/lag", "title": "Lag",
             "encrypted_content": "EqgfCioIARgBIiQ3", "page_age": None}]},
    ]  # fmt: skip
    searched["usage"]["server_tool_use"] = {"web_search_requests": 1, "web_fetch_requests": 0}
    done = message('{"advice": "alert at 5 min of lag"}', model="claude-sonnet-5-5")
    api = FakeAPI(httpx2.Response(200, json=searched), httpx2.Response(200, json=done))
    agent = ClaudeAgent(definition(["WebSearch"]), client=api.client(), config=config)
    env = Envelope.for_body({"cmd": "ADVISE", "respond_format": "STRUCTURED_JSON"},
                            sender="t", recipient="data-engineer")  # fmt: skip
    records: dict[str, list[dict[str, Any]]] = {}
    with pytest.raises(Continue) as paused:
        await agent.handle(env, TestContext(env, records=records))
    meta = paused.value.meta
    assert meta["cost_usd"] == pytest.approx(tokens_cost(config, meta) + 0.01)
    step = env.evolve(headers=paused.value.state)
    body = await agent.handle(step, TestContext(step, records=records))
    assert body is not None
    assert body["advice"] == "alert at 5 min of lag"
    again = api.bodies[1]["messages"]
    assert again[-1]["role"] == "assistant"
    assert [b["type"] for b in again[-1]["content"]] == [
        "server_tool_use",
        "web_search_tool_result",
    ]
    assert again[-1]["content"][1]["content"][0]["encrypted_content"] == "EqgfCioIARgBIiQ3"
    assert body["_acp"]["usage"]["web_search_requests"] == 1, "the chain's uses are counted"


async def test_write_then_bash_in_one_turn_where_the_deployment_allows_both(
    workspace: Path,
) -> None:
    config = CONFIG.model_copy(
        update={"tools": ToolsConfig(workspace=str(workspace), writable=True, bash=True)}
    )
    calls = (("Write", {"file_path": "out/plan.txt", "content": "backfill etl\n"}),
             ("Bash", {"command": "cat out/plan.txt && echo $ANTHROPIC_API_KEY"}))  # fmt: skip
    api = FakeAPI(httpx2.Response(200, json=tool_use(*calls, model="claude-sonnet-5-5")))
    agent = ClaudeAgent(definition(["Write", "Bash"]), client=api.client(), config=config)
    env = Envelope.for_body({"cmd": "PLAN"}, sender="t", recipient="data-engineer")
    records: dict[str, list[dict[str, Any]]] = {}
    with pytest.raises(Continue):
        await agent.handle(env, TestContext(env, records=records))
    assert [t["name"] for t in api.bodies[0]["tools"]] == ["Write", "Bash"]
    wrote, ran = records[env.id][1]["content"]
    assert not wrote["is_error"]
    assert json.loads(ran["content"]) == {"exit_code": 0, "output": "backfill etl\n\n"}


@pytest.mark.timeout(60)
async def test_an_mcp_server_over_streamable_http() -> None:
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = str(HERE / "mcp_inventory.py")
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything awaits it
        [sys.executable, script, "http", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.1)
        url = f"http://127.0.0.1:{port}/mcp"
        config = McpServerConfig(type="http", url=url, headers={"X-Team": "data"})
        pool = McpServers({"inventory": config}, timeout=10)
        async with pool:
            tools = {t.tool: t for t in await pool.servers["inventory"].tools()}
            ok, stock = await tools["stock"].run({"sku": "A1"})
        assert ok
        assert stock["units"] == 42
        assert stock["pid"] == process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)
