"""``python -m acp``: the same as the ``acp`` command."""

from acp.cli import main

main()
