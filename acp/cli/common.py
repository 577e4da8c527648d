"""What the commands share: options, where the server is, errors as one line."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import typer

from acp.errors import ACPError, DefinitionError
from acp.runtime.environment import ENV_REDIS_URL, ENV_REDIS_URL_FILE

if TYPE_CHECKING:
    from acp.agents import Catalogue
    from acp.runtime.bus import RedisBus
    from acp.runtime.metrics import Metrics
    from acp.runtime.options import Deployment
    from acp.runtime.worker import Service


_PATHS_HELP = "Definition files or folders (every *.md in a folder except README.md)."
_PATHS_HELP_DEFAULT = (
    _PATHS_HELP + " Default: $ACP_AGENTS, else ./agents if present, else the shipped catalogue."
)


def _catalogue(paths: list[Path] | None) -> Catalogue:
    """The definitions a command uses (see ``choose_agents``), said on stderr."""
    from acp.catalogue import choose_agents

    choice = choose_agents(paths)
    catalogue = choice.load()
    typer.echo(choice.describe(catalogue), err=True)
    if not catalogue.definitions and not catalogue.errors:
        typer.echo(f"note: no agent definitions (*.md) in {choice.source}", err=True)
    return catalogue


def _print_errors(errors: list[DefinitionError], *, err: bool) -> None:
    for error in errors:
        typer.echo(f"{error.file}:{error.line}: {error.message}", err=err)


_T = TypeVar("_T")
_ENTRY_ID = re.compile(r"^[0-9]+-[0-9]+$")
#: redis-py already retries a failed connect for a few seconds; past that a one-shot
#: admin command reports the error instead of retrying for a minute (and logging
#: each retry on stdout, in the middle of --json output)
_ADMIN_RECONNECT_TIMEOUT = 0.0

_RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis",
        metavar="URL",
        help=f"Redis server URL, e.g. redis://127.0.0.1:6379/0 (else ${ENV_REDIS_URL}). A "
        "password in it shows in `ps` to every user of this machine: prefer the "
        "environment variable or --redis-url-file.",
        show_default=False,
    ),
]
_RedisFileOption = Annotated[
    Path | None,
    typer.Option(
        "--redis-url-file",
        metavar="FILE",
        help=f"Read the Redis server URL from FILE (else ${ENV_REDIS_URL_FILE}): keeps a "
        "password out of `ps` and of child processes' environments.",
        show_default=False,
    ),
]
_CONFIG_OPTION = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Runtime configuration: tiers, complexity, budgets, result records, "
        "wire (signatures, dictionary) and bus (durability, bounds) "
        "(default: $ACP_CONFIG, else the shipped runtime/acp.toml).",
        show_default=False,
    ),
]


class DurabilityChoice(StrEnum):
    fast = "fast"
    safe = "safe"
    replicated = "replicated"


_DurabilityOption = Annotated[
    DurabilityChoice | None,
    typer.Option(
        "--durability",
        help="fast: a write is acknowledged once the server holds it; safe: once it is in "
        "the server's append-only file (slower); replicated: once a replica has it too (no "
        "acknowledged write is lost when a replica takes over). Default: "
        "$ACP_BUS_DURABILITY, else "
        "durability in the config's bus section, else fast.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class _Where:
    """The server a command talks to and the deployment's settings (bus options,
    durability, codec with its key ring), from flags, environment and config."""

    url: str
    deployment: Deployment


def _deployment(config: Path | None, durability: DurabilityChoice | None = None) -> Deployment:
    from acp.runtime.options import Deployment

    return Deployment.load(config, durability=durability.value if durability else None)


def _where(
    redis: str | None,
    url_file: Path | None,
    config: Path | None = None,
    durability: DurabilityChoice | None = None,
) -> _Where:
    from acp.cli.connect import redis_url_for_cli

    try:
        return _Where(redis_url_for_cli(redis, url_file), _deployment(config, durability))
    except ACPError as exc:
        raise _fail(str(exc)) from None


_DEST_HELP = "Destination (agent or queue name)."


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _run(fn: Callable[[], Awaitable[_T]]) -> _T:
    """``anyio.run``, with the runtime's errors (also from inside a task group) as one
    line on stderr and exit 1: a user sees what went wrong, not a traceback."""
    try:
        return anyio.run(fn)
    except ACPError as exc:
        raise _fail(str(exc)) from None
    except BaseExceptionGroup as group:
        first = _first_acp_error(group)
        if first is None:
            raise
        raise _fail(str(first)) from None


def _first_acp_error(group: BaseExceptionGroup[Any]) -> ACPError | None:
    for exc in group.exceptions:
        if isinstance(exc, ACPError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _first_acp_error(exc)):
            return found
    return None


async def _on_bus(where: _Where, work: Callable[[RedisBus], Awaitable[_T]]) -> _T:
    async with where.deployment.bus(where.url, reconnect_timeout=_ADMIN_RECONNECT_TIMEOUT) as bus:
        return await work(bus)


def _with_bus(where: _Where, work: Callable[[RedisBus], Awaitable[_T]]) -> _T:
    """Run ``work`` on the named server. Library errors (server unreachable, refused)
    become one line on stderr and exit 1; they never hold the password."""
    return _run(lambda: _on_bus(where, work))


async def _require_dest(bus: RedisBus, dest: str) -> None:
    """Refuse unknown destinations: a typo must not read as "no dead letters", and
    replaying into one would create it."""
    if dest not in await bus.destinations():
        raise _fail(f"no destination {dest!r} on {bus.settings.redacted_url}")


_METRICS_OPTION = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics on this port (127.0.0.1).",
        show_default=False,
    ),
]


async def _serve_with_metrics(metrics: Metrics | None, port: int | None, service: Service) -> None:
    from acp.runtime.metrics import serve_metrics
    from acp.runtime.worker import serve_until_signalled

    async with anyio.create_task_group() as tg:
        if metrics is not None and port is not None:
            bound = await tg.start(serve_metrics, metrics, port)
            typer.echo(f"metrics on http://127.0.0.1:{bound}/metrics", err=True)
        await serve_until_signalled(service)
        tg.cancel_scope.cancel()


class CacheTTL(StrEnum):
    five_minutes = "5m"
    one_hour = "1h"


_AGENTS_OPTION = Annotated[
    list[Path] | None,
    typer.Option(
        "--agents",
        help=_PATHS_HELP_DEFAULT,
        show_default=False,
    ),
]


def _when(ts: float, *, short: bool = False) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(
        "%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%SZ"
    )


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]
