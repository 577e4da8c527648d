"""The ``acp`` application and its global options; the commands register themselves
from the modules beside this one."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="acp",
    help="Run agents that speak the Agent Coordination Protocol (ACP).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    from acp.logs import configure_logging  # structlog loads slowly: not for --help

    configure_logging(log_level, json=log_json)


def main() -> None:
    app()
