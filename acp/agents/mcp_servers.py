"""MCP servers a worker's Claude-backed agents call tools on, through the official
``mcp`` SDK (``pip install 'acp-runtime[mcp]'``).

Servers are declared in the config's ``[tools.mcp.<name>]`` or read from a Claude
Code ``.mcp.json`` (``{"mcpServers": {name: {"command", "args", "env"} | {"type":
"http", "url", "headers"}}}``; ``${VAR}`` and ``${VAR:-default}`` are expanded from
the worker's environment, the only way one of its variables reaches a server).
Their tools are offered as ``mcp__<server>__<tool>``, the names Claude Code uses in
``tools:`` lists.

One :class:`McpServers` per worker holds one connection per server, opened when a
tool is first needed and kept; its tool list is read then and cached. A call has a
timeout; a server that dies is started again on the next call, and the call that
was in flight comes back to the model as a tool error (its outcome is unknown, so
it is not repeated behind the model's back).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from acp.agents.config import McpServerConfig, ToolsConfig
from acp.errors import ConfigError, ToolError

if TYPE_CHECKING:
    from anthropic.types import ToolParam
    from mcp import Client

__all__ = ["McpServers", "McpTool", "mcp_name", "read_mcp_json"]

log = structlog.get_logger("acp.mcp")

PREFIX = "mcp__"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def mcp_name(server: str, tool: str) -> str:
    """The name Claude Code gives a server's tool."""
    return f"{PREFIX}{server}__{tool}"


def split_name(name: str) -> tuple[str, str | None] | None:
    """(server, tool) of ``mcp__server__tool``, (server, None) of ``mcp__server``."""
    if not name.startswith(PREFIX):
        return None
    server, _, tool = name[len(PREFIX) :].partition("__")
    return (server, tool or None) if server else None


def _expand(value: str, env: Mapping[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: ${{{name}}} is not set in the environment")

    return _VAR.sub(one, value)


def _expand_all(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return _expand(value, env, where)
    if isinstance(value, list):
        return [_expand_all(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand_all(v, env, where) for k, v in value.items()}
    return value


def read_mcp_json(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> dict[str, McpServerConfig]:
    """The servers of a Claude Code ``.mcp.json`` file, variables expanded."""
    env = os.environ if env is None else env
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"MCP config {source} does not exist") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError(f"{source}: expected an object with 'mcpServers'")
    out: dict[str, McpServerConfig] = {}
    for name, entry in servers.items():
        where = f"{source}: mcpServers.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object")
        expanded = _expand_all(entry, env, where)
        out[name] = _server_config(expanded, where)
    return out


def _server_config(entry: dict[str, Any], where: str) -> McpServerConfig:
    kind = entry.get("type")
    if kind in ("sse",):
        raise ConfigError(f"{where}: SSE servers are not supported; use streamable HTTP")
    if kind == "streamable-http":
        entry = {**entry, "type": "http"}
    try:
        config = McpServerConfig.model_validate(entry)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if (config.command is None) == (config.url is None):
        raise ConfigError(f"{where}: give either a command (stdio) or a url (http)")
    return config


@dataclass(frozen=True)
class McpTool:
    """One tool of an MCP server, as the agent loop runs it."""

    server: McpServer
    tool: str
    description: str
    input_schema: dict[str, Any]
    #: an MCP server's tool may act anywhere: never assumed safe to repeat
    idempotent: bool = False

    @property
    def name(self) -> str:
        return mcp_name(self.server.name, self.tool)

    def param(self) -> ToolParam:
        return {
            "name": self.name,
            "description": self.description or f"{self.tool} (MCP server {self.server.name})",
            "input_schema": self.input_schema,
        }

    async def run(self, arguments: dict[str, Any]) -> tuple[bool, Any]:
        return await self.server.call(self.tool, arguments)


class McpServer:
    """One server: its connection, held by a task of the pool, and its cached tools."""

    def __init__(self, name: str, config: McpServerConfig, *, timeout: float, pool: McpServers):
        self.name = name
        self.config = config
        self.timeout = timeout
        self._pool = pool
        self._client: Client | None = None
        self._closed = anyio.Event()
        self._lock = anyio.Lock()
        self._tools: list[McpTool] | None = None
        #: times the connection was opened (1 + restarts)
        self.starts = 0

    def _transport(self) -> Any:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        if self.config.command is not None:
            params = StdioServerParameters(
                command=self.config.command, args=self.config.args,
                env=self.config.env, cwd=self.config.cwd,
            )  # fmt: skip
            return stdio_client(params, errlog=_errlog())
        assert self.config.url is not None
        if not self.config.headers:
            return self.config.url
        return _http_with_headers(self.config.url, self.config.headers)

    async def _hold(self, closed: anyio.Event, *, task_status: TaskStatus[None]) -> None:
        """Open the connection, list the tools, keep it until closed or broken."""
        from mcp import Client

        started = False
        client = None
        try:
            async with Client(self._transport(), read_timeout_seconds=self.timeout) as client:
                listing = await client.list_tools()
                self._tools = [
                    McpTool(self, t.name, t.description or "", dict(t.input_schema))
                    for t in listing.tools
                ]
                self._client = client
                self.starts += 1
                started = True
                task_status.started()
                log.info("mcp_server_started", server=self.name, tools=len(self._tools),
                         starts=self.starts)  # fmt: skip
                await closed.wait()
        except Exception as exc:  # a server that cannot start or died: never the pool's end
            if not started:
                raise ToolError(f"MCP server {self.name!r} did not start: {_reason(exc)}") from None
            log.warning("mcp_server_lost", server=self.name, error=_reason(exc))
        finally:
            if self._client is client:
                self._client = None

    async def connect(self) -> Client:
        async with self._lock:
            if self._client is None:
                self._closed = anyio.Event()
                try:
                    with anyio.fail_after(self.timeout):
                        await self._pool.task_group().start(self._hold, self._closed)
                except TimeoutError:
                    raise ToolError(
                        f"MCP server {self.name!r} did not start in {self.timeout:g} s"
                    ) from None
            assert self._client is not None
            return self._client

    async def tools(self) -> list[McpTool]:
        """The server's tools, listed when it was started (starting it if need be)."""
        if self._tools is None:
            await self.connect()
        assert self._tools is not None
        return self._tools

    async def call(self, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        """(ok, result) of one call; a dead or stuck server is a tool error."""
        try:
            client = await self.connect()
        except ToolError as exc:
            return False, str(exc)
        started = time.monotonic()
        try:
            with anyio.fail_after(self.timeout):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=self.timeout)
        except TimeoutError:
            return False, f"MCP server {self.name!r}: {tool} did not answer in {self.timeout:g} s"
        except Exception as exc:
            # the connection is gone (or unusable): closed here, started again next call
            if self._client is client:
                self._client = None
                self._closed.set()
            log.warning("mcp_call_failed", server=self.name, tool=tool, error=_reason(exc),
                        after_s=round(time.monotonic() - started, 3))  # fmt: skip
            return False, (
                f"MCP server {self.name!r} failed during {tool} ({_reason(exc)}); its outcome "
                "is unknown. The server is restarted for the next call"
            )
        texts = [getattr(block, "text", None) for block in result.content]
        body: Any = result.structured_content
        if body is None:
            joined = "\n".join(t for t in texts if t is not None)
            body = joined if joined else [b.model_dump(mode="json") for b in result.content]
        return not result.is_error, body

    def close(self) -> None:
        self._closed.set()


def _errlog() -> TextIO:
    """Where a server's stderr goes: the worker's, the real one when it is replaced
    by something without a file descriptor (a test runner's capture)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__ or sys.stderr
    return sys.stderr


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_reason(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def _http_with_headers(url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers=dict(headers)) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


class McpServers:
    """Every MCP server of a worker. Entered (``async with``) by each agent that uses it,
    once per worker in effect: the first entry starts its task group, the last ends it
    and stops the servers."""

    def __init__(self, servers: Mapping[str, McpServerConfig], *, timeout: float = 60.0) -> None:
        self.servers = {
            name: McpServer(name, config, timeout=timeout, pool=self)
            for name, config in servers.items()
        }
        self._tg: TaskGroup | None = None
        self._entered = 0

    @classmethod
    def from_config(
        cls, tools: ToolsConfig, *, base: Path | None = None, env: Mapping[str, str] | None = None
    ) -> McpServers | None:
        """The servers ``[tools]`` declares (and its ``mcp_config`` file), or None."""
        servers = dict(tools.mcp)
        for name, config in servers.items():
            _server_config(config.model_dump(exclude_defaults=True), f"[tools.mcp.{name}]")
        if tools.mcp_config:
            path = Path(tools.mcp_config)
            servers.update(read_mcp_json(path if path.is_absolute() else (base or Path.cwd()) / path,
                                         env=env))  # fmt: skip
        return cls(servers, timeout=tools.mcp_timeout_s) if servers else None

    def task_group(self) -> TaskGroup:
        if self._tg is None:
            raise ConfigError(
                "MCP servers are used outside the agent's lifespan: run the agent in a worker, "
                "or enter `async with agent.lifespan():`"
            )
        return self._tg

    async def __aenter__(self) -> McpServers:
        if self._entered == 0:
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
        self._entered += 1
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered -= 1
        if self._entered or self._tg is None:
            return
        tg, self._tg = self._tg, None
        for server in self.servers.values():
            server.close()
        await tg.__aexit__(kind, exc, tb)
