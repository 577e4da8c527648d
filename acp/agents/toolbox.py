"""Which tools an agent really gets: what its definition's ``tools:`` asks for, held
against what the deployment's ``[tools]`` allows.

A Claude Code definition names tools (``Read``, ``Bash``, ``WebSearch``,
``mcp__github__create_issue``, ``mcp__github`` for all of a server's tools...) or,
with no ``tools:`` line, inherits all of them; ``disallowedTools`` takes some away.
The :class:`Toolbox` is one per worker (its MCP connections are shared by every
agent it runs): :meth:`Toolbox.plan` says, for one definition, what is offered and
why each missing tool is off (``acp agents show``), and which names nothing here
provides (``acp agents validate`` warns about those); :meth:`Toolbox.toolset`
resolves the MCP tools too, listing their servers once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from acp.agents.config import ToolsConfig
from acp.agents.definition import AgentDefinition
from acp.agents.imports import import_object
from acp.agents.mcp_servers import McpServers, mcp_name, split_name
from acp.agents.redact import Redactor, secrets_from_env
from acp.agents.tools import FunctionTool, Tool, tool
from acp.agents.workspace import READ_ONLY, SHELL, WRITERS, Workspace
from acp.errors import ConfigError, ToolError

if TYPE_CHECKING:
    from anthropic.types import ToolUnionParam

__all__ = ["SERVER_TOOLS", "ToolPlan", "Toolbox", "Toolset"]

#: Claude Code's names for the API's server tools, and their current versions
SERVER_TOOLS: dict[str, tuple[str, str]] = {
    "WebSearch": ("web_search", "web_search_20260318"),
    "WebFetch": ("web_fetch", "web_fetch_20260318"),
}
#: Claude Code tools that belong to its interactive session, not to a worker
_SESSION_ONLY = {
    "Task": "delegation here is the delegate tool, to the agents in delegates_to",
    "TodoWrite": "a to-do list for an interactive session",
    "NotebookEdit": "notebooks are not edited by workers",
    "NotebookRead": "notebooks are not read by workers",
    "LS": "use Glob",
    "BashOutput": "background shells are not kept",
    "KillShell": "background shells are not kept",
    "KillBash": "background shells are not kept",
    "ExitPlanMode": "there is no plan mode",
    "SlashCommand": "there are no slash commands",
    "Skill": "skills are not loaded",
    "AskUserQuestion": "nobody is there to answer",
}
_UNKNOWN = "no registered Python tool or MCP tool has this name"


@dataclass
class ToolPlan:
    """One definition's tools, before MCP servers are asked for theirs."""

    #: tools run by the worker (workspace, Python), by name
    local: dict[str, Tool] = field(default_factory=dict)
    #: the API's server tools (web search, web fetch), by Claude Code name
    server: dict[str, ToolUnionParam] = field(default_factory=dict)
    #: MCP servers wanted, with the tools named (None: all of them)
    mcp: dict[str, set[str] | None] = field(default_factory=dict)
    #: tools not given, and why
    off: dict[str, str] = field(default_factory=dict)
    #: names in ``tools:`` that nothing here provides (``acp agents validate`` warns)
    unknown: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        mcp = [mcp_name(s, t) for s, ts in self.mcp.items() for t in sorted(ts or {"*"})]
        return [*self.local, *self.server, *mcp]


@dataclass
class Toolset:
    """What one agent is offered: the tools it runs and the server tools' parameters."""

    local: dict[str, Tool]
    server: list[ToolUnionParam]
    off: dict[str, str]
    #: an MCP server wanted did not start (its tools are off this time)
    failed: bool = False

    def params(self) -> list[ToolUnionParam]:
        return [*(t.param() for t in self.local.values()), *self.server]


class Toolbox:
    """The tools a deployment makes available (``[tools]``), shared by a worker's agents."""

    def __init__(
        self,
        config: ToolsConfig | None = None,
        *,
        functions: Sequence[FunctionTool] = (),
        base: Path | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        """``base`` is where relative paths of the config are from (its file's folder);
        ``functions`` are Python tools registered in code, besides ``[tools] python``;
        ``secrets`` are values no tool may see or say, besides those of the environment
        (API key, Redis password, HMAC keys)."""
        self.redactor = Redactor([*secrets_from_env(env), *secrets])
        self.config = config = config or ToolsConfig()
        base = base or Path.cwd()
        self.workspace = (
            Workspace(
                _under(base, config.workspace), writable=config.writable, bash=config.bash,
                bash_timeout=config.bash_timeout_s, read_max=config.read_max,
                output_max=config.output_max,
            )
            if config.workspace
            else None
        )  # fmt: skip
        self.functions: dict[str, FunctionTool] = {
            name: _python_tool(name, spec, base) for name, spec in config.python.items()
        }
        for function in functions:
            self.functions[function.name] = function
        self.mcp = McpServers.from_config(config, base=base, env=env)
        self._workspace_tools = (
            {t.name: t for t in self.workspace.tools()} if self.workspace else {}
        )

    def lifespan(self) -> AbstractAsyncContextManager[Any]:
        """Held while agents run: MCP connections live in it."""
        return self.mcp if self.mcp is not None else nullcontext()

    # -- one definition ---------------------------------------------------------------------

    def plan(self, definition: AgentDefinition) -> ToolPlan:
        plan = ToolPlan()
        denied = set(definition.disallowed_tools)
        asked = definition.tools or self._everything()
        whole = _denied_servers(denied)
        for name in dict.fromkeys(asked):
            parts = split_name(name)
            if name in denied or (parts is not None and parts[0] in whole):
                plan.off[name] = "listed in disallowedTools"
                continue
            self._place(name, plan)
        for name in denied - set(asked):
            plan.off.setdefault(name, "listed in disallowedTools")
        return plan

    def _everything(self) -> list[str]:
        """What a definition without ``tools:`` inherits: all that is on here."""
        names = [*self._workspace_tools, *self.functions]
        names += [n for n, (short, _) in SERVER_TOOLS.items() if getattr(self.config, short)]
        names += [f"mcp__{server}" for server in (self.mcp.servers if self.mcp else {})]
        return names

    def _place(self, name: str, plan: ToolPlan) -> None:
        if name in self._workspace_tools:
            plan.local[name] = self._workspace_tools[name]
        elif name in self.functions:
            plan.local[name] = self.functions[name]
        elif name in SERVER_TOOLS:
            short, version = SERVER_TOOLS[name]
            if getattr(self.config, short):
                param = {"type": version, "name": short, "max_uses": self.config.web_max_uses}
                plan.server[name] = cast("ToolUnionParam", param)
            else:
                plan.off[name] = f"off: [tools] {short} = true allows it (priced per use)"
        elif (parts := split_name(name)) is not None:
            server, tool_name = parts
            if self.mcp is None or server not in self.mcp.servers:
                plan.off[name] = f"no MCP server {server!r} is declared ([tools.mcp] or .mcp.json)"
                plan.unknown.append(name)
            elif tool_name is None:
                plan.mcp[server] = None
            elif plan.mcp.get(server, set()) is not None:
                plan.mcp.setdefault(server, set()).add(tool_name)  # type: ignore[union-attr]
        elif name in READ_ONLY or name in WRITERS or name == SHELL:
            plan.off[name] = self._why_off(name)
        elif name in _SESSION_ONLY:
            plan.off[name] = f"Claude Code's {name} is not provided here: {_SESSION_ONLY[name]}"
            plan.unknown.append(name)
        else:
            plan.off[name] = _UNKNOWN
            plan.unknown.append(name)

    def _why_off(self, name: str) -> str:
        if self.workspace is None:
            return "off: no workspace ([tools] workspace = a directory allows it)"
        if name in WRITERS:
            return "off: the workspace is read-only ([tools] writable = true allows it)"
        return "off: [tools] bash = true allows it (a subprocess in the workspace)"

    async def toolset(self, plan: ToolPlan) -> Toolset:
        """What a definition's ``plan`` gives, MCP servers listed (started if need be);
        an MCP server that cannot start leaves its tools off, with the reason."""
        local: dict[str, Tool] = dict(plan.local)
        off = dict(plan.off)
        failed = False
        for server_name, wanted in plan.mcp.items():
            assert self.mcp is not None
            server = self.mcp.servers[server_name]
            try:
                listed = {t.tool: t for t in await server.tools()}
            except ToolError as exc:
                failed = True
                for tool_name in sorted(wanted or {"*"}):
                    off[mcp_name(server_name, tool_name)] = str(exc)
                continue
            for tool_name in sorted(wanted) if wanted is not None else sorted(listed):
                if tool_name in listed:
                    local[mcp_name(server_name, tool_name)] = listed[tool_name]
                else:
                    off[mcp_name(server_name, tool_name)] = (
                        f"MCP server {server_name!r} has no tool {tool_name!r}"
                    )
        return Toolset(local=local, server=list(plan.server.values()), off=off, failed=failed)


def _under(base: Path, path: str) -> Path:
    given = Path(os.path.expanduser(path))
    return given if given.is_absolute() else base / given


def _python_tool(name: str, spec: str, base: Path) -> FunctionTool:
    """``[tools] python``'s ``name = "module:attr"``: a ``@tool``, or a typed function."""
    target = import_object(spec, what="tool", search=[base])
    if isinstance(target, FunctionTool):
        return target if target.name == name else replace(target, name=name)
    if callable(target):
        return tool(name=name)(target)
    raise ConfigError(f"[tools] python: {spec!r} is a {type(target).__name__}, not a function")


def _denied_servers(denied: Iterable[str]) -> set[str]:
    """Servers denied whole (``mcp__server`` in ``disallowedTools``)."""
    return {p[0] for d in denied if (p := split_name(d)) is not None and p[1] is None}
