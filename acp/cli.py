"""The ``acp`` command: wiring only. Every behaviour lives in the library."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import anyio
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from acp.agents import AgentBase, AgentDefinition, Catalogue, RuntimeConfig
from acp.agents.examples import collect_examples
from acp.agents.toolbox import Toolbox
from acp.catalogue import choose_agents, find_workflow
from acp.errors import ACPError, DefinitionError, ProtocolError, RequestTimeout, UnknownAgent
from acp.logs import configure_logging
from acp.protocol import (
    Envelope,
    MessageKind,
    body_from_text,
    body_to_text,
    envelope_to_text,
    parse_workflow,
    render_envelope,
)
from acp.protocol.check import check_bodies
from acp.protocol.headers import H_JOIN, H_ROOT
from acp.runtime.bus import DeadLetter, RedisBus
from acp.runtime.client import Client, Result, ResultState
from acp.runtime.connect import redis_url_for_cli
from acp.runtime.coordinator import Coordinator
from acp.runtime.demo import run_demo
from acp.runtime.keys import COORDINATORS, INTAKE, TOOLS_TOPIC, WORKFLOW_INTAKE, WORKFLOW_TOPIC
from acp.runtime.metrics import Metrics, serve_metrics
from acp.runtime.options import Deployment
from acp.runtime.settings import (
    EMBEDDED,
    ENV_REDIS_URL,
    ENV_REDIS_URL_FILE,
    resolve_redis,
)
from acp.runtime.stack import Stack, plan_agents
from acp.runtime.status import agent_queues, read_status
from acp.runtime.targets import resolve_targets
from acp.runtime.trace import TraceNode, read_trace
from acp.runtime.worker import Service, Worker, serve_until_signalled

app = typer.Typer(
    name="acp",
    help="Run agents that speak the Agent Coordination Protocol (ACP).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
agents_app = typer.Typer(help="Inspect and validate agent definition files.", no_args_is_help=True)
codec_app = typer.Typer(help="Check the ACP wire and text codecs.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(codec_app, name="codec")


@app.callback()
def _global(
    log_level: Annotated[
        str,
        typer.Option("--log-level", envvar="ACP_LOG_LEVEL", help="debug, info, warning or error."),
    ] = "warning",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-pretty", help="Log format (default: JSON off a terminal)."),
    ] = None,
) -> None:
    """Logs go to stderr (JSON off a terminal), so command output stays clean."""
    configure_logging(log_level, json=log_json)


# --- acp agents -------------------------------------------------------------


_PATHS_HELP = "Definition files or folders (every *.md in a folder except README.md)."
_PATHS_HELP_DEFAULT = (
    _PATHS_HELP + " Default: $ACP_AGENTS, else ./agents if present, else the shipped catalogue."
)


def _catalogue(paths: list[Path] | None) -> Catalogue:
    """The definitions a command uses (see ``choose_agents``), said on stderr."""
    choice = choose_agents(paths)
    catalogue = choice.load()
    typer.echo(choice.describe(catalogue), err=True)
    if not catalogue.definitions and not catalogue.errors:
        typer.echo(f"note: no agent definitions (*.md) in {choice.source}", err=True)
    return catalogue


def _print_errors(errors: list[DefinitionError], *, err: bool) -> None:
    for error in errors:
        typer.echo(f"{error.file}:{error.line}: {error.message}", err=err)


@agents_app.command("list")
def agents_list(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help=_PATHS_HELP_DEFAULT, metavar="PATH", show_default=False),
    ] = None,
) -> None:
    """List the agents defined in PATHS as a table.

    Broken files are reported on stderr; run `acp agents validate` for details.

    Example: acp agents list agents/ ../shared/corpus/data-engineer.md
    """
    catalogue = _catalogue(paths)
    table = Table(title=f"{len(catalogue)} agents")
    for column in ("name", "model / tier", "complexity", "commands", "file"):
        table.add_column(column, overflow="fold")
    for d in catalogue.definitions.values():
        model = d.model if d.tier in (None, d.model) else f"{d.model} / {d.tier}"
        table.add_row(
            Text(d.name, style="bold"),
            Text(model),
            Text(d.computational_complexity),
            Text(", ".join(d.commands) or "-"),
            Text(str(d.path)),
        )
    Console().print(table)
    if catalogue.errors:
        _print_errors(catalogue.errors, err=True)


def _show_value(value: object) -> Text:
    if isinstance(value, str):
        return Text(value)
    return Text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@agents_app.command("show")
def agents_show(
    name: Annotated[
        str, typer.Argument(help="The agent's name.", metavar="NAME", show_default=False)
    ],
    paths: Annotated[
        list[Path] | None,
        typer.Option("--from", "-f", help=_PATHS_HELP_DEFAULT + " Repeatable."),
    ] = None,
    lines: Annotated[int, typer.Option(help="System prompt lines to show.", min=0)] = 12,
    config: _CONFIG_OPTION = None,
) -> None:
    """Show one agent: frontmatter, extra metadata, declared ACP messages, the tools it
    really gets in this deployment (and why each missing one is off), prompt.
    Declared MCP servers are started to list their tools.

    Example: acp agents show data-engineer --from agents/ --from ../shared/corpus
    """
    catalogue = _catalogue(paths)
    try:
        d = catalogue.get(name)
    except UnknownAgent as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    console = Console()
    fields = Table(title=d.name, show_header=False)
    fields.add_column("field", style="bold")
    fields.add_column("value")
    shown: dict[str, object] = {
        "description": d.description,
        "model": d.model,
        "tier": d.tier or "-",
        "computational_complexity": d.computational_complexity,
        "tools": ", ".join(d.tools) or "(not restricted)",
        "disallowedTools": ", ".join(d.disallowed_tools),
        "color": d.color,
        "permissionMode": d.permission_mode,
        "skills": ", ".join(d.skills),
        "hooks": d.hooks,
        "entrypoint": d.entrypoint,
        "allowed_tiers": ", ".join(d.allowed_tiers),
        "file": str(d.path),
    }
    for key, value in shown.items():
        if value:
            fields.add_row(Text(key), _show_value(value))
    console.print(fields)
    if d.extra:
        extra = Table(title="extra metadata", show_header=False)
        extra.add_column("key", style="bold")
        extra.add_column("value")
        for key, value in d.extra.items():
            extra.add_row(Text(key), _show_value(value))
        console.print(extra)
    messages = Table(title="declared ACP messages")
    for column in ("line", "kind", "command", "ACP section", "fields"):
        messages.add_column(column)
    for m in d.messages:
        messages.add_row(
            Text(str(m.line)),
            Text(m.kind.value),
            Text(m.command or "-"),
            Text("yes" if m.in_acp_section else "no"),
            Text(", ".join(m.fields)),
        )
    console.print(messages)
    console.print(_tools_table(d, _toolbox(config)))
    prompt = d.system_prompt.split("\n")
    console.print(Text(f"system prompt ({len(prompt)} lines):", style="bold"))
    console.print(Text("\n".join(prompt[:lines])))
    own = [e for e in catalogue.errors if d.path is not None and e.file == str(d.path)]
    if own:
        console.print(Text("problems in this file:", style="bold red"))
        _print_errors(own, err=False)


def _toolbox(config: Path | None) -> Toolbox:
    try:
        return Toolbox(_deployment(config).config.tools)
    except ACPError as exc:
        raise _fail(str(exc)) from None


def _tools_table(d: AgentDefinition, toolbox: Toolbox) -> Table:
    """What ``d`` gets here: each tool offered (MCP servers asked for theirs) and each
    one asked for that is off, with the reason."""

    async def resolve() -> tuple[list[str], dict[str, str]]:
        async with toolbox.lifespan():
            toolset = await toolbox.toolset(d)
        return [*toolset.local, *plan.server], toolset.off

    plan = toolbox.plan(d)
    offered, off = anyio.run(resolve) if plan.mcp else (plan.names(), plan.off)
    table = Table(title="tools in this deployment")
    table.add_column("tool")
    table.add_column("given")
    for name in offered:
        table.add_row(Text(name), Text("yes", style="green"))
    for name, why in off.items():
        table.add_row(Text(name), Text(f"no: {why}", style="yellow"))
    if not offered and not off:
        table.add_row(Text("-"), Text("none: the deployment's [tools] enables nothing"))
    return table


@agents_app.command("validate")
def agents_validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help=_PATHS_HELP_DEFAULT, metavar="PATH", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
    ] = False,
    config: _CONFIG_OPTION = None,
) -> None:
    """Load every definition in PATHS and report each problem with its file and line.

    Also warns about each tool a definition asks for that nothing provides here (no
    registered Python tool or MCP tool of that name): a warning, not a problem.
    Exits 0 when nothing is wrong and 1 otherwise, so it can gate CI.

    Example: acp agents validate agents/ --json
    """
    catalogue = _catalogue(paths)
    report = catalogue.report()
    toolbox = _toolbox(config)
    warnings = [
        {"file": str(d.path), "agent": d.name, "tool": name, "why": plan.off[name]}
        for d in catalogue.definitions.values()
        for plan in [toolbox.plan(d)]
        for name in plan.unknown
    ]
    report["warnings"] = warnings
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        troubled = {e.file for e in catalogue.errors}
        for d, agent in zip(catalogue.definitions.values(), report["agents"], strict=True):
            mark = "!!" if str(d.path) in troubled else "ok"
            commands = ", ".join(agent["commands"]) or "no commands"
            typer.echo(
                f"{mark}  {agent['name']}: {agent['model']}, "
                f"{agent['computational_complexity']} complexity, "
                f"{agent['examples']} examples ({commands})"
            )
        _print_errors(catalogue.errors, err=False)
        for w in warnings:
            typer.echo(f"warning: {w['file']}: tools: {w['tool']}: {w['why']}")
        problems = len(catalogue.errors)
        typer.echo(
            f"{len(catalogue)} agents, {report['examples']} examples, "
            f"{problems} problem{'' if problems == 1 else 's'}"
        )
    raise typer.Exit(0 if catalogue.ok else 1)


# --- acp codec --------------------------------------------------------------


@codec_app.command("check")
def codec_check(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Definition files, folders or .json message files.", metavar="PATH"),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Round-trip every ACP example in PATHS through the wire and text codecs.

    Prints sizes (wire frames against compact JSON) and a round-trip timing
    against stdlib json measured in the same run. Exits 1 on any mismatch.

    Example: acp codec check agents/ ../shared/corpus --json
    """
    examples, errors = collect_examples(*paths)
    report = check_bodies(examples)
    figures = report.model_dump(exclude={"problems"})
    if as_json:
        typer.echo(json.dumps(figures))
    else:
        console = Console()
        for key, value in figures.items():
            console.print(f"{key:>26}  {value}")
        for index, problem in report.problems:
            console.print(f"[red]mismatch[/red] example {index}: {problem}")
        if errors:
            console.print(
                f"[yellow]{len(errors)} file problems skipped (see acp agents validate)[/yellow]"
            )
    raise typer.Exit(1 if report.mismatches or not examples else 0)


# --- acp dlq ----------------------------------------------------------------


dlq_app = typer.Typer(
    help="Inspect, replay and purge dead letters: messages the runtime gave up on.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

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


_DurabilityOption = Annotated[
    DurabilityChoice | None,
    typer.Option(
        "--durability",
        help="fast: a write is acknowledged once the server holds it; safe: once it is in "
        "the server's append-only file (slower). Default: $ACP_BUS_DURABILITY, else "
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
    return Deployment.load(config, durability=durability.value if durability else None)


def _where(
    redis: str | None,
    url_file: Path | None,
    config: Path | None = None,
    durability: DurabilityChoice | None = None,
) -> _Where:
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


def _entry_ids(entry_ids: list[str] | None, every: bool) -> list[str] | None:
    """The selected entry ids (duplicates dropped), or None for --all; exit 2 otherwise."""
    if every and entry_ids:
        raise typer.BadParameter("give entry ids or --all, not both", param_hint="ENTRY_ID")
    if not every and not entry_ids:
        raise typer.BadParameter(
            "give the entry ids to act on (see acp dlq list) or --all", param_hint="ENTRY_ID"
        )
    if entry_ids is None:
        return None
    bad = [e for e in entry_ids if not _ENTRY_ID.match(e)]
    if bad:
        raise typer.BadParameter(
            f"{', '.join(bad)}: entry ids look like 1718000000000-0", param_hint="ENTRY_ID"
        )
    return list(dict.fromkeys(entry_ids))


def _decode(frame: bytes, deployment: Deployment) -> tuple[Envelope | None, str | None]:
    """The envelope in a dead frame, or why it cannot be read; the tag is not checked
    because the frame may be here precisely for a bad tag."""
    try:
        return deployment.inspecting_codec.decode(frame), None
    except ProtocolError as exc:
        return None, str(exc)


def _signature(frame: bytes, deployment: Deployment) -> str:
    """Whether the deployment's own codec accepts the frame's tag, and if not, why."""
    try:
        deployment.codec.decode(frame)
    except ProtocolError as exc:
        return f"refused: {exc}"
    keys = deployment.codec.keys
    return "valid" if keys is None else f"valid (key ring {', '.join(keys.key_ids)})"


def _when(ts: float, *, short: bool = False) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(
        "%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%SZ"
    )


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def _letter_record(letter: DeadLetter, env: Envelope | None) -> dict[str, Any]:
    return {
        "dest": letter.dest,
        "entry_id": letter.entry_id,
        "msg_id": letter.msg_id,
        "reason": letter.reason,
        "error": letter.error,
        "deliveries": letter.deliveries,
        "history": list(letter.history),
        "dead_at": letter.dead_at,
        "command": env.command if env else None,
        "kind": env.kind.value if env else None,
    }


def _hex_preview(frame: bytes, limit: int = 64) -> list[str]:
    lines = []
    for offset in range(0, min(len(frame), limit), 16):
        chunk = frame[offset : min(offset + 16, limit)]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:04x}  {chunk.hex(' '):<47}  |{text}|")
    return lines


@dlq_app.command("list")
def dlq_list(
    dests: Annotated[
        list[str] | None,
        typer.Argument(
            help="Destinations to look at; default: every destination.",
            metavar="DEST",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print one JSON object {"dead_letters": [...]}.')
    ] = False,
    count: Annotated[
        int, typer.Option("--count", "-n", help="Most dead letters per destination.", min=1)
    ] = 100,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """List dead letters, oldest first: entry id, message id, reason, deliveries,
    when it died and the first line of its last error.

    Example: acp dlq list data-engineer --redis redis://127.0.0.1:6379/0 --json
    """

    async def fetch(bus: RedisBus) -> tuple[list[DeadLetter], list[str], dict[str, int]]:
        known = await bus.destinations()
        letters: list[DeadLetter] = []
        unknown: list[str] = []
        more: dict[str, int] = {}
        for dest in dict.fromkeys(dests or known):
            if dest not in known:
                unknown.append(dest)
                continue
            total = (await bus.stats(dest)).dead
            if total:
                got = await bus.dead_letters(dest, count=count)
                letters.extend(got)
                if total > len(got):
                    more[dest] = total
        return letters, unknown, more

    where = _where(redis, redis_url_file, config)
    letters, unknown, more = _with_bus(where, fetch)
    for dest in unknown:
        typer.echo(f"note: no destination {dest!r}", err=True)
    for dest, total in more.items():
        typer.echo(
            f"note: showing {count} of {total} dead letters in {dest} (see --count)", err=True
        )
    if as_json:
        records = [
            _letter_record(letter, _decode(letter.frame, where.deployment)[0]) for letter in letters
        ]
        typer.echo(json.dumps({"dead_letters": records}, ensure_ascii=False))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    console = Console()
    by_dest: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_dest.setdefault(letter.dest, []).append(letter)
    for dest, group in by_dest.items():
        table = Table(title=f"{dest}: {len(group)} dead letter{'' if len(group) == 1 else 's'}")
        # Entry ids are what the other dlq commands take: never wrap them.
        table.add_column("entry id", no_wrap=True)
        table.add_column("msg id", overflow="fold")
        table.add_column("reason", overflow="fold")
        table.add_column("tries", justify="right")
        table.add_column("dead at UTC", no_wrap=True)
        table.add_column("error", overflow="fold")
        for letter in group:
            table.add_row(
                Text(letter.entry_id, style="bold"),
                Text(letter.msg_id),
                Text(letter.reason),
                Text(str(letter.deliveries)),
                Text(_when(letter.dead_at, short=True)),
                Text(_first_line(letter.error)),
            )
        console.print(table)


@dlq_app.command("show")
def dlq_show(
    dest: Annotated[str, typer.Argument(help=_DEST_HELP, metavar="DEST", show_default=False)],
    entry_id: Annotated[
        str,
        typer.Argument(help="Dead-letter entry id (from acp dlq list).", metavar="ENTRY_ID"),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Show one dead letter in full: reason, error, delivery history, headers and
    the message as a person reads it (or why its frame cannot be decoded, with a
    hex preview). Exits 1 when the destination or entry does not exist.

    Example: acp dlq show data-engineer 1718000000000-0 --redis redis://127.0.0.1:6379/0
    """
    if not _ENTRY_ID.match(entry_id):
        raise typer.BadParameter("entry ids look like 1718000000000-0", param_hint="ENTRY_ID")

    async def fetch(bus: RedisBus) -> DeadLetter:
        await _require_dest(bus, dest)
        # The bus reads dead letters oldest first; this one is somewhere among them.
        total = (await bus.stats(dest)).dead
        for letter in await bus.dead_letters(dest, count=max(total, 1)):
            if letter.entry_id == entry_id:
                return letter
        raise _fail(f"no dead letter {entry_id} in {dest} (see acp dlq list {dest})")

    where = _where(redis, redis_url_file, config)
    letter = _with_bus(where, fetch)
    env, problem = _decode(letter.frame, where.deployment)
    signature = _signature(letter.frame, where.deployment) if env is not None else None
    if as_json:
        record = _letter_record(letter, env)
        record["headers"] = dict(letter.headers)
        record["message"] = json.loads(envelope_to_text(env)) if env else None
        record["decode_error"] = problem
        record["signature"] = signature
        record["frame_bytes"] = len(letter.frame)
        record["frame_hex"] = None if env else letter.frame[:64].hex()
        typer.echo(json.dumps(record, ensure_ascii=False))
        return
    lines = [
        f"dead letter {letter.entry_id} in {letter.dest}",
        f"  message id  {letter.msg_id}",
        f"  reason      {letter.reason}",
        f"  deliveries  {letter.deliveries}",
        f"  dead at     {_when(letter.dead_at)}",
        "error:",
        *(f"  {line}" for line in (letter.error or "-").splitlines()),
        f"history ({len(letter.history)}):",
        *(
            f"  {n}. {line}" if i == 0 else f"     {line}"
            for n, entry in enumerate(letter.history, 1)
            for i, line in enumerate(entry.splitlines() or [""])
        ),
        "headers:" if letter.headers else "headers: none",
        *(f"  {name}: {value}" for name, value in sorted(letter.headers.items())),
    ]
    if env is not None:
        lines += [
            f"signature: {signature}",
            "message:",
            *(f"  {line}" for line in render_envelope(env).splitlines()),
        ]
    else:
        lines += [
            f"message: cannot be decoded: {problem}",
            f"frame: {len(letter.frame)} bytes; first {min(len(letter.frame), 64)} in hex:",
            *(f"  {line}" for line in _hex_preview(letter.frame)),
        ]
    typer.echo("\n".join(lines))


@dlq_app.command("replay")
def dlq_replay(
    dest: Annotated[str, typer.Argument(help=_DEST_HELP, metavar="DEST", show_default=False)],
    entry_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Dead-letter entry ids to replay.", metavar="ENTRY_ID"),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
) -> None:
    """Put dead letters back on DEST's queue with a fresh delivery count, after the
    cause is fixed. Exits 1 if some given entry ids are not dead letters there.

    Example: acp dlq replay data-engineer 1718000000000-0 --redis redis://127.0.0.1:6379/0
    """
    ids = _entry_ids(entry_ids, every)

    async def replay(bus: RedisBus) -> int:
        await _require_dest(bus, dest)
        if ids is not None:
            return await bus.replay(dest, ids)
        # The bus moves a bounded batch per call; stop at what was dead when we
        # started, so letters that die again meanwhile are not replayed in a loop.
        target = (await bus.stats(dest)).dead
        moved = 0
        while moved < target:
            batch = await bus.replay(dest)
            if not batch:
                break
            moved += batch
        return moved

    moved = _with_bus(_where(redis, redis_url_file, config, durability), replay)
    typer.echo(f"replayed {moved} dead letter{'' if moved == 1 else 's'} to {dest}")
    if ids is not None and moved < len(ids):
        raise _fail(f"{len(ids) - moved} of the given entry ids are not dead letters in {dest}")


@dlq_app.command("purge")
def dlq_purge(
    dest: Annotated[str, typer.Argument(help=_DEST_HELP, metavar="DEST", show_default=False)],
    entry_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Dead-letter entry ids to delete.", metavar="ENTRY_ID"),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
) -> None:
    """Delete dead letters for good. Asks first unless --yes; answering no exits 1
    and deletes nothing. Exits 1 if some given entry ids are not dead letters there.

    Example: acp dlq purge data-engineer --all --yes --redis redis://127.0.0.1:6379/0
    """
    ids = _entry_ids(entry_ids, every)

    async def count(bus: RedisBus) -> int:
        await _require_dest(bus, dest)
        return len(ids) if ids is not None else (await bus.stats(dest)).dead

    # Ask between two connections: none is held open while a person decides.
    where = _where(redis, redis_url_file, config, durability)
    n = _with_bus(where, count)
    if n == 0:
        typer.echo(f"no dead letters in {dest}")
        return
    if not yes:
        what = f"all {n}" if ids is None else f"{n} selected"
        if not typer.confirm(f"Delete {what} dead letters of {dest}? This cannot be undone."):
            raise _fail("nothing deleted")

    async def purge(bus: RedisBus) -> int:
        await _require_dest(bus, dest)
        return await bus.purge(dest, ids)

    deleted = _with_bus(where, purge)
    typer.echo(f"purged {deleted} dead letter{'' if deleted == 1 else 's'} from {dest}")
    if ids is not None and deleted < len(ids):
        raise _fail(f"{len(ids) - deleted} of the given entry ids are not dead letters in {dest}")


# --- acp worker / acp send ----------------------------------------------------


_METRICS_OPTION = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics on this port (127.0.0.1).",
        show_default=False,
    ),
]


async def _serve_with_metrics(metrics: Metrics | None, port: int | None, service: Service) -> None:
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


def _claude_factory(
    runtime_config: RuntimeConfig,
    base_url: str | None,
    cache_ttl: Literal["5m", "1h"],
    catalogue: Catalogue,
    redis_url: str | None = None,
) -> Callable[[AgentDefinition], AgentBase]:
    """Claude-backed agents for a worker: one client and one toolbox for all of them
    (its MCP connections are the worker's, whatever the number of agents)."""
    shared: dict[str, Any] = {}

    def build(definition: AgentDefinition) -> AgentBase:
        from acp.agents.claude import ClaudeAgent, claude_client  # the SDK loads slowly

        if not shared:
            # MissingAPIKey names ANTHROPIC_API_KEY
            shared["client"] = claude_client(base_url=base_url)
            secret = urlsplit(redis_url).password if redis_url else None
            shared["toolbox"] = Toolbox(runtime_config.tools, secrets=[secret or ""])
        return ClaudeAgent(
            definition, client=shared["client"], config=runtime_config, cache_ttl=cache_ttl,
            catalogue=catalogue.definitions, toolbox=shared["toolbox"],
        )  # fmt: skip

    return build


@app.command("worker")
def worker_command(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Agent names from the definitions, or module:attr of Python agents.",
            metavar="TARGET",
        ),
    ],
    agents: _AGENTS_OPTION = None,
    concurrency: Annotated[int, typer.Option(help="Messages in flight per agent.", min=1)] = 16,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    durability: _DurabilityOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Stable worker id (default host-pid); a restart under it resumes its work."
        ),
    ] = None,
    config: _CONFIG_OPTION = None,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="ANTHROPIC_BASE_URL", help="Anthropic API or a compatible gateway."),
    ] = None,
    cache_ttl: Annotated[
        CacheTTL, typer.Option(help="System prompt cache lifetime.")
    ] = CacheTTL.five_minutes,
    metrics_port: _METRICS_OPTION = None,
) -> None:
    """Run agents: Python handlers and Claude-backed definitions, until Ctrl-C / SIGTERM.

    Example: acp worker data-engineer acp.catalogue.pipeline_doctor:agent --redis redis://127.0.0.1:6379/0
    """
    where = _where(redis, redis_url_file, config, durability)
    try:
        catalogue = _catalogue(agents)
        ttl: Literal["5m", "1h"] = "1h" if cache_ttl is CacheTTL.one_hour else "5m"
        claude = _claude_factory(where.deployment.config, base_url, ttl, catalogue, where.url)
        resolved = resolve_targets(targets, catalogue=catalogue, claude=claude)
    except ACPError as exc:
        raise _fail(str(exc)) from None

    async def run() -> None:
        async with where.deployment.bus(where.url) as bus:
            metrics = Metrics() if metrics_port is not None else None
            worker = Worker(
                bus, resolved, concurrency=concurrency, worker_id=name, metrics=metrics,
                codec=where.deployment.codec, delegation=where.deployment.config.delegation,
            )  # fmt: skip
            typer.echo(
                f"worker {worker.worker_id}: {', '.join(a.name for a in resolved)} on {bus.settings.redacted_url}",
                err=True,
            )
            await _serve_with_metrics(metrics, metrics_port, worker)

    _run(run)


@app.command("send")
def send_command(
    agent: Annotated[str, typer.Argument(help="The agent to send to.")],
    body: Annotated[
        str, typer.Option("--json", help="The ACP body, as JSON text.", metavar="BODY")
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the reply and print it.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the reply (with --wait). It is also the command's "
            "deadline: work still queued when it passes is dropped, not run and paid for."
        ),
    ] = 60.0,
    no_deadline: Annotated[
        bool,
        typer.Option(
            "--no-deadline",
            help="With --wait: let the command run even after the wait ends "
            "(follow it with acp result ID). Without --wait a command has no deadline.",
        ),
    ] = False,
    human: Annotated[bool, typer.Option("--human", help="Render the reply for a person.")] = False,
    tier: Annotated[
        str | None, typer.Option(help="Override the agent's tier for this message.")
    ] = None,
    config: _CONFIG_OPTION = None,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    durability: _DurabilityOption = None,
) -> None:
    """Send a command to an agent; with --wait, print its reply as JSON (or rendered).

    Every command sent is tracked: `acp result ID` says later where it stands
    (queued, parked, running, done, dead) and shows its reply.

    Example: acp send data-engineer --json '{"cmd":"PIPELINE_STATUS","component_id":"etl"}' --wait
    """
    try:
        payload = body_from_text(body)
    except ProtocolError as exc:
        raise _fail(f"--json: {exc}", 2) from None
    where = _where(redis, redis_url_file, config, durability)

    async def run(bus: RedisBus) -> tuple[Envelope, Envelope | None]:
        client = Client(bus, sender="cli", codec=where.deployment.codec)
        if not wait:
            return await client.send(agent, payload, tier=tier), None
        deadline = None if no_deadline else time.time() + timeout
        env = client.command(agent, payload, reply=True, tier=tier, deadline=deadline, track=True)
        try:
            return env, await client.request_envelope(env, timeout=timeout)
        except RequestTimeout as exc:
            raise _fail(f"{exc}\nfollow it: acp result {env.id} --wait") from None

    sent, reply = _with_bus(where, run)
    if reply is None:
        typer.echo(json.dumps({"sent": sent.id, "to": agent}))
        typer.echo(f"follow it: acp result {sent.id} --wait", err=True)
        return
    typer.echo(render_envelope(reply) if human else body_to_text(reply.body))
    if reply.kind is MessageKind.ERROR:
        raise typer.Exit(1)


@app.command("result")
def result_command(
    msg_id: Annotated[str, typer.Argument(help="The message id acp send printed.", metavar="ID")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the command is done or dead.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    human: Annotated[bool, typer.Option("--human", help="Render the reply for a person.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Where a command sent earlier stands: queued, parked (no worker for its agent),
    running, done (with its reply) or dead (with the reason and how to replay it).

    Exits 0 when done, 1 when dead or unknown, 3 when still on its way.

    Example: acp result 0193a5c2e4f1b2c3d4e5f60718293a4b --wait
    """

    async def look(bus: RedisBus) -> Result:
        client = Client(bus, codec=where.deployment.codec)
        return await client.result(msg_id, wait=timeout if wait else None)

    where = _where(redis, redis_url_file, config)
    result = _with_bus(where, look)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), default=str))
    else:
        _show_result(result, human=human)
    if result.state is ResultState.DONE:
        code = 1 if result.reply is not None and result.reply.kind is MessageKind.ERROR else 0
    else:
        code = 3 if not result.final and result.state is not ResultState.UNKNOWN else 1
    raise typer.Exit(code)


def _show_result(result: Result, *, human: bool) -> None:
    if result.state is ResultState.UNKNOWN:
        typer.echo(
            f"{result.msg_id}: unknown (not sent with acp send or Client.send, "
            "or its record expired; see [results] in the runtime config)"
        )
        return
    what = f"{result.command or 'message'} to {result.agent or '?'}"
    when = f" at {_when(result.updated_at)}" if result.updated_at else ""
    detail = f": {result.detail}" if result.detail and not result.final else ""
    typer.echo(f"{result.msg_id}: {what}: {result.state.value}{when}{detail}")
    if result.state is ResultState.DEAD and result.reply is not None:
        body = result.reply.body
        typer.echo(f"  reason   {body.get('reason')} after {body.get('attempts')} attempt(s)")
        typer.echo(f"  error    {_first_line(str(body.get('detail', '')))}")
        typer.echo(f"  replay   {body.get('replay')}")
    elif result.reply is not None:
        typer.echo(render_envelope(result.reply) if human else body_to_text(result.reply.body))


# --- acp coordinator / acp status ---------------------------------------------


@app.command("coordinator")
def coordinator_command(
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
    agents: _AGENTS_OPTION = None,
    name: Annotated[str | None, typer.Option(help="Coordinator id (default host-pid).")] = None,
    lease_ttl: Annotated[
        float, typer.Option(help="Leader lease seconds: a standby takes over within this.")
    ] = 5.0,
    status_interval: Annotated[
        float, typer.Option(help="Seconds between platform status updates.")
    ] = 10.0,
    metrics_port: _METRICS_OPTION = None,
) -> None:
    """Schedule agent work by tier and complexity, inside rate limits and budgets.

    Run two for high availability: one leads, the other takes over within the
    lease time. Stop with Ctrl-C / SIGTERM.

    Example: acp coordinator --redis redis://127.0.0.1:6379/0 --config runtime/acp.toml
    """
    where = _where(redis, redis_url_file, config, durability)
    try:
        catalogue = _catalogue(agents)
    except ACPError as exc:
        raise _fail(str(exc)) from None

    async def run() -> None:
        async with where.deployment.bus(where.url) as bus:
            metrics = Metrics() if metrics_port is not None else None
            coordinator = Coordinator(
                bus, where.deployment.config, definitions=catalogue.definitions,
                coordinator_id=name, lease_ttl=lease_ttl, status_interval=status_interval,
                metrics=metrics, codec=where.deployment.codec,
            )  # fmt: skip
            typer.echo(f"coordinator {coordinator.id} on {bus.settings.redacted_url}", err=True)
            await _serve_with_metrics(metrics, metrics_port, coordinator)

    _run(run)


def _rate(rate: float | None) -> str:
    return "no work finished yet" if rate is None else f"{rate:.1%}"


def _status_view(status: dict[str, Any]) -> Group:
    workers = Table(title="workers", title_justify="left")
    for column in ("agent", "kind", "tier", "worker", "in flight", "handled", "capacity"):
        workers.add_column(column)
    for w in status["workers"]:
        workers.add_row(
            w.get("agent", "?"), w.get("kind", "?"), w.get("tier", "?"), w.get("worker", "?"),
            str(w.get("in_flight", 0)), str(w.get("handled", 0)), str(w.get("capacity", "?")),
        )  # fmt: skip
    queues = Table(title="queues", title_justify="left")
    for column in ("destination", "ready", "in flight", "delayed", "dead", "lag s"):
        queues.add_column(column)
    for dest, q in status["queues"].items():
        dead = f"[red]{q['dead']}[/red]" if q["dead"] else "0"
        queues.add_row(
            dest, str(q["ready"]), str(q["in_flight"]), str(q["delayed"]), dead, f"{q['lag_s']:.1f}"
        )
    parts: list[Any] = [workers, queues]
    platform = status.get("platform")
    if platform:
        tiers = Table(title="tiers", title_justify="left")
        for column in ("tier", "in flight", "cap", "requests left"):
            tiers.add_column(column)
        for tier, t in platform["scheduling"]["tiers"].items():
            tiers.add_row(tier, str(t["in_flight"]), str(t["concurrency"]), str(t["requests_left"]))
        cost = platform["cost_today"]
        budget = f" of {cost['budget_usd']:.2f}" if cost.get("budget_usd") else ""
        agents_ = platform["agents"]
        parts += [
            tiers,
            Text(
                f"cost today ${cost['total_usd']:.4f}{budget} · waiting for a worker: "
                f"{agents_['waiting_for_a_worker']} · success rate: {_rate(agents_['success_rate'])}"
            ),
        ]
    else:
        parts.append(
            Text("no coordinator status yet (is `acp coordinator` running?)", style="yellow")
        )
    return Group(*parts)


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Workers, queues, dead letters, tiers and cost today against budget.

    Example: acp status --watch --redis redis://127.0.0.1:6379/0
    """
    where = _where(redis, redis_url_file, config)
    if as_json:
        typer.echo(json.dumps(_with_bus(where, read_status), default=str))
        return
    if not watch:
        Console().print(_status_view(_with_bus(where, read_status)))
        return

    async def follow() -> None:
        async with where.deployment.bus(
            where.url, reconnect_timeout=_ADMIN_RECONNECT_TIMEOUT
        ) as bus:
            with Live(_status_view(await read_status(bus)), refresh_per_second=4) as live:
                while True:
                    await anyio.sleep(interval)
                    live.update(_status_view(await read_status(bus)))

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(follow)


# --- acp demo / acp up ----------------------------------------------------------


@app.command("demo")
def demo_command(
    agents: _AGENTS_OPTION = None,
    messages: Annotated[int, typer.Option(help="Commands of traffic to send.", min=1)] = 300,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with the summary as JSON.")] = False,
) -> None:
    """A complete run on one screen: a private server, the coordinator, workers,
    real traffic, dead letters, and the pipeline monitor asking the data engineer.
    No key needed; with ANTHROPIC_API_KEY the data engineer answers through Claude.

    Example: acp demo
    """
    console = Console(highlight=False, soft_wrap=True)
    if "ACP_LOG_LEVEL" not in os.environ:
        configure_logging(
            "error"
        )  # the demo narrates; its expected warnings (dead letters) would clutter it
    try:
        catalogue = _catalogue(agents)
        deployment = _deployment(config, durability)
    except ACPError as exc:
        raise _fail(str(exc)) from None
    summary = _run(
        lambda: run_demo(
            catalogue,
            deployment.config,
            say=console.print,
            messages=messages,
            deployment=deployment,
        )
    )
    if as_json:
        typer.echo(json.dumps(summary))
        return
    claude = "answered through Claude" if summary["claude"] else "waiting for a Claude worker"
    console.print(
        f"\nSummary: {summary['handled']} messages handled, {summary['round_trips_per_s']:,.0f} round trips/s "
        f"(p50 {summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms), "
        f"{summary['dead_letters']} dead letters, cost ${summary['cost_usd']:.4f}; data engineer {claude}."
    )


@app.command("up")
def up_command(
    agents: _AGENTS_OPTION = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            metavar="URL",
            help=f"Use this server instead of a private one (else ${ENV_REDIS_URL}; a "
            "password in it shows in `ps`: prefer the variable or --redis-url-file).",
        ),
    ] = None,
    redis_url_file: _RedisFileOption = None,
    durability: _DurabilityOption = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Keep the private server's data here (default: temporary).")
    ] = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Run everything: a private Redis-protocol server (unless --redis), the
    coordinator and workers for every agent in the catalogue, with live status.
    Ctrl-C stops it all cleanly.

    Example: acp up --agents agents/
    """
    console = Console()
    try:
        deployment = _deployment(config, durability)
        named = resolve_redis(redis, url_file=redis_url_file)
        catalogue = _catalogue(agents)
        plan = plan_agents(catalogue, deployment.config)
    except ACPError as exc:
        raise _fail(str(exc)) from None
    stack = Stack(
        plan, deployment.config, catalogue.definitions, data_dir=data_dir,
        redis_url=None if named is EMBEDDED else named.url, deployment=deployment,
    )  # fmt: skip

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(stack.run)
            assert stack.settings is not None
            console.print(f"Redis at [bold]{stack.settings.redacted_url}[/bold]; agents running: "
                          f"{', '.join(a.name for a in plan.agents) or 'none'}")  # fmt: skip
            if plan.waiting_for_key:
                console.print(
                    f"waiting for ANTHROPIC_API_KEY (their work is queued): {', '.join(plan.waiting_for_key)}"
                )
            console.print(
                f"send work:  ACP_REDIS_URL={stack.settings.redacted_url} acp send AGENT --json '{{\"cmd\": ...}}' --wait"
            )
            async with deployment.bus(stack.settings.url) as bus:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, Live(
                    _status_view(await read_status(bus)), console=console, refresh_per_second=2
                ) as live:  # fmt: skip

                    async def refresh() -> None:
                        while True:
                            await anyio.sleep(1.0)
                            live.update(_status_view(await read_status(bus)))

                    tg.start_soon(refresh)
                    async for _ in signals:
                        break
            console.print("stopping: in-flight work finishes, the rest stays queued")
            stack.stop()
            tg.cancel_scope.cancel()

    _run(run)


# --- acp run ------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@app.command("run")
def run_command(
    workflows: Annotated[
        list[str],
        typer.Argument(
            help="Workflow messages as JSON files (the shapes definitions use), or the name "
            "of a shipped workflow (health_check, release).",
            metavar="WORKFLOW",
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress and print each report at the end.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reports.")] = 3600.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each report as JSON, one per line.")
    ] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
    durability: _DurabilityOption = None,
) -> None:
    """Start workflows: phases in order, parallel steps at once, sequential in order,
    each step's agent getting the previous phase's outputs. Needs a running coordinator.
    Several workflows run side by side; exits 1 if any of them failed.

    Example: acp run health_check examples/my-release.json --wait
    """
    bodies: list[dict[str, Any]] = []
    for name in workflows:
        try:
            path = find_workflow(name)
            body = body_from_text(path.read_text(encoding="utf-8"))
            parse_workflow(body)  # refuse what is not a workflow before anything is sent
        except (OSError, ACPError) as exc:
            raise _fail(f"{name}: {exc}", 2) from None
        bodies.append(body)
    # with --json, stdout carries only the reports: progress goes to stderr
    console = Console(highlight=False, soft_wrap=True, stderr=as_json)
    where = _where(redis, redis_url_file, config, durability)
    inspect = where.deployment.inspecting_codec

    async def run(bus: RedisBus) -> list[Envelope]:
        client = Client(bus, sender="cli", via="coordinator", codec=where.deployment.codec)
        if not await bus.members(COORDINATORS):
            console.print(
                "[yellow]no coordinator is running: the workflows wait in its intake[/yellow]"
            )
        if not wait:
            for body in bodies:
                sent = await client.send(WORKFLOW_INTAKE, body, track=False)
                typer.echo(json.dumps({"workflow_id": sent.id, "workflow": body.get("workflow")}))
            return []
        started = [client.command(WORKFLOW_INTAKE, body, reply=True) for body in bodies]
        envs = {env.id: env for env in started}
        reports: dict[str, Envelope] = {}

        async def follow() -> None:
            async for event in bus.subscribe(WORKFLOW_TOPIC):
                if event.headers.get("workflow") not in envs:
                    continue
                status = inspect.decode(event.frame).body.get("workflow_status", {})
                name = status.get("workflow")
                if status.get("event") == "step":
                    mark = {"succeeded": "[green]ok[/green]", "running": "..."}.get(
                        status.get("step_status", ""), status.get("step_status")
                    )
                    console.print(
                        f"  {name} step {status.get('step')} {status.get('agent')}: {mark}"
                    )
                elif status.get("event") == "started":
                    console.print(f"workflow {name} started: {status.get('steps')} steps")

        async def one(env: Envelope) -> None:
            reports[env.id] = await client.request_envelope(env, timeout=timeout)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.05)
            async with anyio.create_task_group() as requests:
                for env in started:
                    requests.start_soon(one, env)
            tg.cancel_scope.cancel()
        return [reports[env.id] for env in started]

    reports = _with_bus(where, run)
    failed = False
    for report in reports:
        r = report.body
        failed = failed or report.kind is MessageKind.ERROR or r.get("status") == "failed"
        if as_json:
            typer.echo(body_to_text(r))
            continue
        console.print(
            f"workflow {r.get('workflow')}: {r.get('status')} in {_duration(r.get('seconds', 0))}, "
            f"cost ${r.get('cost_usd', 0):.4f}"
        )
        for step in r.get("steps", []):
            console.print(
                f"  {step['step']:<28} {step['agent']:<24} {step['status']:<10} "
                f"${step['cost_usd']:.4f} {_duration(step['seconds'])}"
            )
    if failed:
        raise typer.Exit(1)


# --- acp trace ----------------------------------------------------------------------


@app.command("trace")
def trace_command(
    root_id: Annotated[
        str, typer.Argument(help="The root request's id (acp send prints it).", metavar="ROOT_ID")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """The delegation tree of a request: each agent, its tier and model, model turns,
    tokens, cost, time and outcome, and whom it asked.

    Example: acp trace 0193a5c2e4f1b2c3d4e5f60718293a4b
    """
    where = _where(redis, redis_url_file, config)

    async def look(bus: RedisBus) -> TraceNode:
        result = await Client(bus, codec=where.deployment.codec).result(root_id)
        node = await read_trace(bus, root_id, agent=result.agent or "?")
        if result.reply is not None:
            node.meta = dict(result.reply.body.get("_acp") or {})
            node.outcome = result.state.value
        return node

    node = _with_bus(where, look)
    if as_json:
        typer.echo(json.dumps(node.as_dict(), default=str))
        return
    typer.echo("\n".join(node.render()))
    typer.echo(f"tree cost ${node.total_cost():.4f}")


# --- acp tail -----------------------------------------------------------------------


@app.command("tail")
def tail_command(
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", help="Only this agent's queue (repeatable).", show_default=False),
    ] = None,
    human: Annotated[
        bool, typer.Option("--human", help="Render each message for a person.")
    ] = False,
    redis: _RedisOption = None,
    redis_url_file: _RedisFileOption = None,
    config: _CONFIG_OPTION = None,
) -> None:
    """Follow messages as they flow into queues, until Ctrl-C: compact JSON, one
    message a line, or rendered for a person. It only watches: nothing is consumed.

    A command sent through the coordinator shows twice, one hop each: first in the
    coordinator's intake ("hop": "coordinator", waiting to be scheduled), then in its
    agent's queue ("hop": "agent", dispatched). Same id, one delivery. Tool calls
    made in agent loops show too ("topic": "tools": agent, tool, duration, outcome).

    Example: acp tail --agent data-engineer --human
    """
    where = _where(redis, redis_url_file, config)
    codec = where.deployment.inspecting_codec

    async def queues(bus: RedisBus) -> None:
        dests = agent or list(await agent_queues(bus))
        async for delivery in bus.follow(dests):
            try:
                env = codec.decode(delivery.frame)
            except ACPError as exc:
                typer.echo(json.dumps({"queue": delivery.dest, "undecodable": str(exc)}))
                continue
            hop = "coordinator" if delivery.dest == INTAKE else "agent"
            if human:
                place = (
                    f"coordinator intake, for {env.recipient}"
                    if hop == "coordinator"
                    else f"{delivery.dest}'s queue"
                )
                if H_JOIN in env.headers:  # a delegation, or the answer to one
                    what = (
                        "answer to"
                        if env.kind in (MessageKind.REPLY, MessageKind.ERROR)
                        else "delegated by"
                    )
                    root = env.headers.get(H_ROOT, "?")
                    place += f"; {what} {env.recipient if what == 'answer to' else env.sender} (tree {root})"
                typer.echo(f"-- {place}\n{render_envelope(env)}")
            else:
                record = json.loads(envelope_to_text(env))
                typer.echo(json.dumps({"queue": delivery.dest, "hop": hop, **record}))

    async def tool_calls(bus: RedisBus) -> None:
        """Tool calls are not messages: workers report them on a topic."""
        async for event in bus.subscribe(TOOLS_TOPIC):
            try:
                env = codec.decode(event.frame)
            except ACPError:
                continue
            call = env.body.get("tool_call")
            if not isinstance(call, dict) or (agent and call.get("agent") not in agent):
                continue
            if human:
                typer.echo(
                    f"-- tool call: {call.get('agent')} ran {call.get('tool')}: "
                    f"{call.get('outcome')} in {call.get('duration_ms')} ms "
                    f"(message {env.body.get('msg_id')})"
                )
            else:
                typer.echo(json.dumps({"topic": TOOLS_TOPIC, "msg_id": env.body.get("msg_id"),
                                       **call}))  # fmt: skip

    async def follow(bus: RedisBus) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(queues, bus)
            tg.start_soon(tool_calls, bus)

    with contextlib.suppress(KeyboardInterrupt):
        _with_bus(where, follow)


def main() -> None:
    app()
