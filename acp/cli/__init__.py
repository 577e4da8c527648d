"""The ``acp`` command: wiring only. Every behaviour lives in the library.

One module per command group (``agents``, ``codec``, ``dlq``, ``work``, ``operate``);
each imports what a command runs when it runs, so ``acp --help`` loads none of the
runtime. ``connect``, ``targets`` and ``demo`` serve the commands alone.
"""

from acp.cli import agents, codec, dlq, operate, work  # noqa: F401 - they register commands
from acp.cli.app import app, main

__all__ = ["app", "main"]
