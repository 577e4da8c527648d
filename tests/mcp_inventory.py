"""A small MCP server for the tool tests, written with the ``mcp`` SDK: over stdio
(``python tests/mcp_inventory.py``) or streamable HTTP (``... http PORT``).
``INVENTORY_LOG`` (a file) gets one line per reservation, so a test can count side
effects; ``die`` ends the process the way a crash would; ``slow`` outlasts a call
timeout."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("inventory")
STOCK = {"A1": 42, "B7": 0}


@server.tool()
def stock(sku: str) -> dict[str, object]:
    """Units in stock for a SKU, and the server's process id."""
    return {"sku": sku, "units": STOCK.get(sku, 0), "pid": os.getpid()}


@server.tool()
def reserve(sku: str, units: int) -> str:
    """Reserve units of a SKU for an order (a side effect: logged)."""
    with Path(os.environ["INVENTORY_LOG"]).open("a") as log:
        log.write(f"{sku} {units}\n")
    return f"reserved {units} of {sku}"


@server.tool()
def environment() -> dict[str, str]:
    """The server's environment (the tests check no secret is in it)."""
    return dict(os.environ)


@server.tool()
def die() -> str:
    """End the server process at once."""
    os._exit(3)


@server.tool()
def slow(seconds: float) -> str:
    """Take this long to answer."""
    time.sleep(seconds)
    return "done"


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:  # streamable HTTP on loopback: ``http PORT``
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
