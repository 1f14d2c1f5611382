"""The MCP server ``bench.mcp_overhead`` calls (over stdio): one read-only tool and one with
side effects, both doing next to nothing, so that what is measured is the path to them."""

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("bench", log_level="ERROR")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def note(text: str) -> str:
    """Take a note (a tool without the read-only hint: erpoz gives its calls idempotency keys)."""
    return f"noted {len(text)}"


if __name__ == "__main__":
    server.run()
