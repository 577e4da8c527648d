"""The ``acp`` command: wiring only. Every behaviour lives in the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from acp.agents import Catalogue, load_catalogue
from acp.agents.examples import collect_examples
from acp.errors import DefinitionError, UnknownAgent
from acp.protocol.check import check_bodies

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


# --- acp agents -------------------------------------------------------------


_PATHS_HELP = "Definition files or folders (every *.md in a folder except README.md)."


def _catalogue(paths: list[Path]) -> Catalogue:
    return load_catalogue(*paths)


def _print_errors(errors: list[DefinitionError], *, err: bool) -> None:
    for error in errors:
        typer.echo(f"{error.file}:{error.line}: {error.message}", err=err)


@agents_app.command("list")
def agents_list(
    paths: Annotated[
        list[Path], typer.Argument(help=_PATHS_HELP, metavar="PATH", show_default=False)
    ],
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
        typer.Option("--from", "-f", help=_PATHS_HELP + " Repeatable; default: agents/."),
    ] = None,
    lines: Annotated[int, typer.Option(help="System prompt lines to show.", min=0)] = 12,
) -> None:
    """Show one agent: frontmatter, extra metadata, declared ACP messages, tools, prompt.

    Example: acp agents show data-engineer --from agents/ --from ../shared/corpus
    """
    catalogue = _catalogue(paths or [Path("agents")])
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
    prompt = d.system_prompt.split("\n")
    console.print(Text(f"system prompt ({len(prompt)} lines):", style="bold"))
    console.print(Text("\n".join(prompt[:lines])))
    own = [e for e in catalogue.errors if d.path is not None and e.file == str(d.path)]
    if own:
        console.print(Text("problems in this file:", style="bold red"))
        _print_errors(own, err=False)


@agents_app.command("validate")
def agents_validate(
    paths: Annotated[
        list[Path], typer.Argument(help=_PATHS_HELP, metavar="PATH", show_default=False)
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
    ] = False,
) -> None:
    """Load every definition in PATHS and report each problem with its file and line.

    Exits 0 when nothing is wrong and 1 otherwise, so it can gate CI.

    Example: acp agents validate agents/ --json
    """
    catalogue = _catalogue(paths)
    report = catalogue.report()
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


def main() -> None:
    app()
