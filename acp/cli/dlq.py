"""``acp dlq``: inspect, replay and purge dead letters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from acp.cli.app import app
from acp.cli.common import (
    _CONFIG_OPTION,
    _DEST_HELP,
    _ENTRY_ID,
    _DurabilityOption,
    _fail,
    _first_line,
    _RedisFileOption,
    _RedisOption,
    _require_dest,
    _when,
    _where,
    _with_bus,
)
from acp.errors import ProtocolError

if TYPE_CHECKING:
    from acp.protocol import Envelope
    from acp.runtime.bus import DeadLetter
    from acp.runtime.options import Deployment


dlq_app = typer.Typer(
    help="Inspect, replay and purge dead letters: messages the runtime gave up on.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")


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
    from acp.runtime.bus import RedisBus

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
    from acp.protocol import envelope_to_text, render_envelope
    from acp.runtime.bus import RedisBus

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
    from acp.runtime.bus import RedisBus

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
    from acp.runtime.bus import RedisBus

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
