"""``acp codec``: check the wire and text codecs on real bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from acp.cli.app import app

codec_app = typer.Typer(help="Check the ACP wire and text codecs.", no_args_is_help=True)
app.add_typer(codec_app, name="codec")


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
    from acp.agents.examples import collect_examples
    from acp.protocol.check import check_bodies

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
