"""The ``acp`` command: wiring only. Every behaviour lives in the library."""

from __future__ import annotations

import typer

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

# --- acp codec --------------------------------------------------------------


def main() -> None:
    app()
