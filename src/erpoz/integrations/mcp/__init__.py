"""MCP (Model Context Protocol), both ways, with the official ``mcp`` SDK (the ``mcp`` extra).

- The tools of MCP servers declared in ``erpoz.yaml`` (``mcp:``, stdio or streamable HTTP) are
  erpoz tools: denied unless a policy rule grants them, reviewed when a rule says so, passed
  through the guards at ``tool_call`` / ``tool_result``, and recorded (``tool_called`` and
  ``mcp_called`` events naming the server, with the idempotency key that the server also gets
  in the call's ``_meta``). ``erpoz mcp tools`` lists them with their schemas.
- ``erpoz mcp serve`` exposes flows as MCP tools (:mod:`erpoz.integrations.mcp.server`).
"""

from __future__ import annotations

from ...models import ProjectConfig
from ...tools import Tool
from ._client import (
    IDEMPOTENCY_META,
    McpSession,
    McpToolError,
    as_tool,
    close_sessions,
    list_tools,
    session,
    tools_of,
)
from ._config import ServerSpec, servers_from_config

__all__ = [
    "IDEMPOTENCY_META",
    "McpSession",
    "McpToolError",
    "ServerSpec",
    "as_tool",
    "close_sessions",
    "list_tools",
    "project_tools",
    "servers_from_config",
    "session",
    "tools_of",
]


async def project_tools(config: ProjectConfig) -> list[Tool]:
    """The tools of the project's MCP servers (none without an ``mcp`` section); each server
    is connected once per process. ``ConfigError`` naming the server's line when one cannot be
    reached."""
    specs = servers_from_config(config)
    if not specs:
        return []
    return await tools_of(specs)
