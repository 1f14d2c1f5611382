"""Real MCP servers for the tests, written with the SDK's MCPServer (FastMCP in mcp 1.x).

``python mcp_servers.py`` serves over stdio; ``python mcp_servers.py --http PORT`` over
streamable HTTP. Every call of ``send`` appends a JSON line (its arguments and the
idempotency key the call carried) to the file ``$MCP_SENT``, so a test can see what reached
the outside world.
"""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("calc", version="1.0", log_level="ERROR")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def send(to: str, body: str, ctx: Context) -> str:
    """Send a message (a side effect: recorded in $MCP_SENT)."""
    meta = dict(ctx.request_context.meta or {})
    with open(os.environ["MCP_SENT"], "a", encoding="utf-8") as f:
        key = meta.get("io.erpoz/idempotency-key")
        f.write(json.dumps({"to": to, "body": body, "key": key}) + "\n")
    return f"sent to {to}"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def lookup(invoice: str) -> str:
    """Look an invoice up; the answer holds a customer's e-mail address."""
    return f"invoice {invoice}: 49.00 EUR, customer ana.lima@example.com"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    if b == 0:
        raise ToolError("division by zero")
    return a / b


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """End the server process at once (a server dying in the middle of a call)."""
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
