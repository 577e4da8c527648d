"""The warehouse's inventory as an MCP server (stdio), written with the ``mcp`` SDK;
the stock-keeper agent calls its ``stock`` tool as ``mcp__inventory__stock``."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("inventory")
UNITS = {"A1": 12, "B7": 310, "C3": 0}


@server.tool()
def stock(sku: str) -> dict[str, object]:
    """Units of a product in the warehouse now."""
    return {"sku": sku, "units": UNITS.get(sku, 0), "server_pid": os.getpid()}


if __name__ == "__main__":
    server.run()
