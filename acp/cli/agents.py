"""``acp agents``: list, show and validate definition files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from acp.cli.app import app
from acp.cli.common import (
    _CONFIG_OPTION,
    _PATHS_HELP_DEFAULT,
    _catalogue,
    _deployment,
    _fail,
    _print_errors,
)
from acp.errors import ACPError, UnknownAgent

if TYPE_CHECKING:
    from acp.agents import AgentDefinition
    from acp.agents.toolbox import Toolbox


agents_app = typer.Typer(help="Inspect and validate agent definition files.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")


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
    from acp.agents.toolbox import Toolbox

    try:
        return Toolbox(_deployment(config).config.tools)
    except ACPError as exc:
        raise _fail(str(exc)) from None


def _tools_table(d: AgentDefinition, toolbox: Toolbox) -> Table:
    """What ``d`` gets here: each tool offered (MCP servers asked for theirs) and each
    one asked for that is off, with the reason."""

    async def resolve() -> tuple[list[str], dict[str, str]]:
        async with toolbox.lifespan():
            toolset = await toolbox.toolset(plan)
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
