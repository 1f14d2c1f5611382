"""A small MCP server (the official SDK's MCPServer) for docs/integrations/mcp.md: erpoz
starts it over stdio (``python calc_server.py``), or serve it over streamable HTTP with
``python calc_server.py --http 8765``."""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("calc", log_level="ERROR")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def file_expense(amount: float, note: str) -> str:
    """File an expense (a side effect: erpoz gives each call an idempotency key)."""
    return f"filed {amount:.2f} ({note})"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
