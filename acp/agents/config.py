"""Model tiers, complexity classes and budgets: configuration, never code.

Loaded from a TOML file (``runtime/acp.toml`` is the shipped default) and
overridable by environment so one file serves every deployment:
``ACP_TIER_<TIER>_<FIELD>`` (``ACP_TIER_SONNET_MODEL=claude-sonnet-4-6``),
``ACP_COMPLEXITY_<CLASS>_<FIELD>``, ``ACP_BUDGET_DAILY_USD``, ``ACP_WIRE_<FIELD>``
(``ACP_WIRE_REQUIRE_SIGNATURES=true``), ``ACP_BUS_<FIELD>`` (``ACP_BUS_DURABILITY=safe``),
``ACP_REDIS_SSL_CA_CERTS``, ``ACP_REDIS_SSL_CERTFILE``, ``ACP_REDIS_SSL_KEYFILE``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from acp.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "Budgets",
    "BusConfig",
    "ComplexityClass",
    "Delegation",
    "McpServerConfig",
    "Price",
    "RedisTLS",
    "Results",
    "RuntimeConfig",
    "TierSpec",
    "ToolsConfig",
    "Usage",
    "WireConfig",
    "load_config",
]

#: the configuration shipped with the project: ``runtime/acp.toml`` in a checkout,
#: a copy inside the package in an installed wheel
_IN_WHEEL = Path(__file__).resolve().parents[1] / "default_config.toml"
DEFAULT_CONFIG = (
    _IN_WHEEL
    if _IN_WHEEL.exists()
    else Path(__file__).resolve().parents[2] / "runtime" / "acp.toml"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Price(_Frozen):
    """USD per million tokens."""

    input: float = Field(ge=0)
    cache_write_5m: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    output: float = Field(ge=0)


class Usage(_Frozen):
    """Tokens one model call used, as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    #: uses of the API's server tools (priced per use, ``[tools]`` in the config)
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    @model_serializer(mode="wrap")
    def _compact(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Server tool uses only when there were some (most calls make none)."""
        data: dict[str, Any] = dump(self)
        for name in ("web_search_requests", "web_fetch_requests"):
            if not data.get(name):
                data.pop(name, None)
        return data

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in _USAGE_FIELDS})


_USAGE_FIELDS = tuple(Usage.model_fields)


class TierSpec(_Frozen):
    model: str
    price: Price
    concurrency: int = Field(ge=1)
    requests_per_minute: int = Field(ge=1)
    input_tokens_per_minute: int = Field(ge=1)
    output_tokens_per_minute: int = Field(ge=1)

    def cost(self, usage: Usage, *, cache_ttl: str = "5m") -> float:
        """USD for the tokens of ``usage`` at this tier's prices (server tool uses are
        priced by :meth:`ToolsConfig.cost`)."""
        write = self.price.cache_write_1h if cache_ttl == "1h" else self.price.cache_write_5m
        return (
            usage.input_tokens * self.price.input
            + usage.cache_creation_input_tokens * write
            + usage.cache_read_input_tokens * self.price.cache_read
            + usage.output_tokens * self.price.output
        ) / 1_000_000


class ComplexityClass(_Frozen):
    expected_input_tokens: int = Field(ge=0)
    expected_output_tokens: int = Field(ge=0)
    max_tokens: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    weight: float = Field(gt=0)
    effort: str = "medium"
    #: model turns one request may take in an agent loop (tool calls, delegations);
    #: the last one is offered no tools, so it answers
    max_turns: int = Field(default=8, ge=1)


class Budgets(_Frozen):
    daily_usd: float | None = Field(default=None, ge=0)
    per_agent_daily_usd: dict[str, float] = Field(default_factory=dict)
    per_tenant_daily_usd: dict[str, float] = Field(default_factory=dict)
    #: the most one request may spend: its own model turns, every step after them
    #: and every delegation below it, whatever the day (unset: no such limit)
    per_request_usd: float | None = Field(default=None, gt=0)


class Results(_Frozen):
    """How long, and how many, result records are kept (``acp result``)."""

    ttl_s: float = Field(default=24 * 3600.0, gt=0)
    max_entries: int = Field(default=100_000, ge=1)


class WireConfig(_Frozen):
    """How frames are written and which are accepted: every process of a deployment
    must agree, so it lives here rather than in each command's flags."""

    #: refuse unsigned frames and unknown key ids (dead letter ``integrity``); needs
    #: a key ring (``ACP_HMAC_KEYS``, ``ACP_HMAC_KEYS_FILE`` or ``hmac_keys_file``).
    #: Unset: required exactly when a key ring is configured
    require_signatures: bool | None = None
    #: accept body-only (version 2) signatures while older writers still run
    legacy_signatures: bool = False
    #: the zstd dictionary new frames are written with (every known one is read)
    dictionary: int = Field(default=2, ge=1)
    #: the largest frame accepted, in bytes
    max_frame: int = Field(default=1024 * 1024, ge=1024)
    #: a file holding the key ring (``id=secret`` entries, one per line or comma
    #: separated, oldest first); ``ACP_HMAC_KEYS`` and ``ACP_HMAC_KEYS_FILE`` win
    hmac_keys_file: str | None = None


class BusConfig(_Frozen):
    """What the bus promises and how much it keeps (``BusOptions`` has the rest)."""

    #: "safe" acknowledges a send or commit only once the server's append-only file
    #: has it; "replicated" once a replica has it too; "fast" once the server holds
    #: it in memory
    durability: Literal["fast", "safe", "replicated"] = "fast"
    #: queues the coordinator's intake is split into, by agent (``coordinator.<k>``):
    #: on a cluster, about twice the number of primaries spreads dispatch over the
    #: shards; on one server 1 (one queue, one blocking read). The leader consumes
    #: every partition, old ones included, so changing it loses no queued work
    intake_partitions: int = Field(default=1, ge=1, le=256)
    #: message ids remembered per destination for the send dedup and the ledger
    dedup_max: int = Field(default=100_000, ge=1000)
    #: dead letters kept per destination, the oldest trimmed past it
    dead_max: int = Field(default=10_000, ge=1)
    #: bytes of an oversized or unreadable frame kept in its dead letter
    dead_payload_max: int = Field(default=64 * 1024, ge=0)


class Delegation(_Frozen):
    """What keeps a tree of delegations safe."""

    #: agents between a root request and the deepest delegated command
    max_depth: int = Field(default=3, ge=0)
    #: delegations one model turn may make (the rest are refused as tool errors)
    max_children_per_turn: int = Field(default=5, ge=1)
    #: delegations a whole tree may make, below one root request
    max_children_per_root: int = Field(default=50, ge=1)
    #: per agent, who it may reach, replacing what its definition says
    reach: dict[str, list[str]] = Field(default_factory=dict)


class McpServerConfig(_Frozen):
    """One MCP server: a command run over stdio, or a streamable HTTP ``url``
    (the shape of a Claude Code ``.mcp.json`` entry)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Literal["stdio", "http"] | None = None
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    #: the server's whole environment beyond a few harmless variables (PATH, HOME,
    #: LANG...): nothing of the worker's own environment, so none of its secrets
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class ToolsConfig(_Frozen):
    """What tools Claude-backed agents may be given (a definition's ``tools:`` asks;
    this decides). Everything that acts on the machine is off until turned on here."""

    #: the directory Read, Grep, Glob (and Write, Edit, Bash when enabled) work in;
    #: unset: no file tools at all
    workspace: str | None = None
    #: Write, Edit and MultiEdit may change files in the workspace
    writable: bool = False
    #: Bash runs commands (a subprocess in the workspace, no secrets in its environment)
    bash: bool = False
    bash_timeout_s: float = Field(default=30.0, gt=0)
    #: the API's server tools WebSearch and WebFetch
    web_search: bool = False
    web_fetch: bool = False
    #: uses of a server tool one model turn may make
    web_max_uses: int = Field(default=5, ge=1)
    #: USD per 1,000 uses (the API bills web search per use; web fetch costs its tokens)
    web_search_usd_per_1000: float = Field(default=10.0, ge=0)
    web_fetch_usd_per_1000: float = Field(default=0.0, ge=0)
    #: the largest file Read reads and Grep searches, in bytes
    read_max: int = Field(default=1024 * 1024, ge=1)
    #: the largest tool output the model sees, in characters (the rest is cut, with a note)
    output_max: int = Field(default=32 * 1024, ge=256)
    #: Python tools by name: ``{name = "module:attribute"}`` (a ``@tool`` function)
    python: dict[str, str] = Field(default_factory=dict)
    #: MCP servers by name; their tools are ``mcp__<server>__<tool>``
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict)
    #: a Claude Code ``.mcp.json`` file whose servers are added to ``mcp``
    mcp_config: str | None = None
    #: seconds an MCP call may take before it is a tool error
    mcp_timeout_s: float = Field(default=60.0, gt=0)

    def server_tools_usd(self, tools: Sequence[str], disallowed: Sequence[str]) -> float:
        """The most the API's server tools may bill for one model turn of an agent whose
        definition lists ``tools`` (empty: all that is on here) and ``disallowed``: each
        one on here and offered to it, used ``web_max_uses`` times. The coordinator
        reserves it beside the tokens (``Toolbox.plan`` offers the same ones)."""
        priced = {
            "WebSearch": (self.web_search, self.web_search_usd_per_1000),
            "WebFetch": (self.web_fetch, self.web_fetch_usd_per_1000),
        }
        return sum(
            self.web_max_uses * per_1000 / 1000
            for name, (on, per_1000) in priced.items()
            if on and (not tools or name in tools) and name not in disallowed
        )

    def cost(self, usage: Usage) -> float:
        """USD for the server tool uses in ``usage``."""
        return (
            usage.web_search_requests * self.web_search_usd_per_1000
            + usage.web_fetch_requests * self.web_fetch_usd_per_1000
        ) / 1000


class RedisTLS(_Frozen):
    """TLS files for ``rediss://`` servers, where the URL does not name them (redis-py's
    parameter names): ``ACP_REDIS_SSL_CA_CERTS`` and so on override them."""

    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


class RuntimeConfig(_Frozen):
    tiers: dict[str, TierSpec]
    complexity: dict[str, ComplexityClass]
    budgets: Budgets = Field(default_factory=Budgets)
    results: Results = Field(default_factory=Results)
    wire: WireConfig = Field(default_factory=WireConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    redis: RedisTLS = Field(default_factory=RedisTLS)
    delegation: Delegation = Field(default_factory=Delegation)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)

    def tier(self, name: str) -> TierSpec:
        try:
            return self.tiers[name]
        except KeyError:
            raise ConfigError(
                f"unknown tier {name!r}; configured: {', '.join(self.tiers)}"
            ) from None

    def price(self, tier: str, usage: Usage, *, cache_ttl: str = "5m") -> float:
        """USD for one call's ``usage`` on ``tier``: its tokens and its server tool uses
        (what every budget counts)."""
        return self.tier(tier).cost(usage, cache_ttl=cache_ttl) + self.tools.cost(usage)

    def complexity_class(self, name: str) -> ComplexityClass:
        try:
            return self.complexity[name]
        except KeyError:
            raise ConfigError(
                f"unknown complexity {name!r}; configured: {', '.join(self.complexity)}"
            ) from None

    def tier_order(self) -> list[str]:
        """Tiers cheapest first (by output price): the order escalation climbs."""
        return sorted(
            self.tiers, key=lambda t: (self.tiers[t].price.output, self.tiers[t].price.input)
        )


def _coerce(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for key, value in env.items():
        parts = key.lower().split("_")
        if key.startswith("ACP_TIER_") and len(parts) >= 4:
            section, name, field = "tiers", parts[2], "_".join(parts[3:])
        elif key.startswith("ACP_COMPLEXITY_") and len(parts) >= 4:
            section, name, field = "complexity", parts[2], "_".join(parts[3:])
        elif key == "ACP_BUDGET_DAILY_USD":
            data.setdefault("budgets", {})["daily_usd"] = float(value)
            continue
        elif key.startswith(("ACP_WIRE_", "ACP_BUS_", "ACP_REDIS_SSL_")) and len(parts) >= 3:
            data.setdefault(parts[1], {})["_".join(parts[2:])] = _coerce(value)
            continue
        else:
            continue
        target = data.setdefault(section, {}).setdefault(name, {})
        if field.startswith("price_"):
            target.setdefault("price", {})[field[len("price_") :]] = float(value)
        else:
            target[field] = _coerce(value)


def _paths_from(base: Path, tools: Any) -> None:
    """Relative paths in ``[tools]`` are from the file's folder, wherever the process runs."""
    if not isinstance(tools, dict):
        return

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(base / value)
        return value

    for key in ("workspace", "mcp_config"):
        if key in tools:
            tools[key] = absolute(tools[key])
    for server in (tools.get("mcp") or {}).values():
        if isinstance(server, dict) and "cwd" in server:
            server["cwd"] = absolute(server["cwd"])


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> RuntimeConfig:
    """Read ``path`` (default: ``ACP_CONFIG`` or the shipped file), apply env overrides."""
    env = os.environ if env is None else env
    source = Path(path or env.get("ACP_CONFIG") or DEFAULT_CONFIG)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {source} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    _apply_env(data, env)
    _paths_from(source.resolve().parent, data.get("tools"))
    try:
        return RuntimeConfig.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"{source}: {where}") from exc
