from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _close_mcp_sessions() -> Iterator[None]:
    """Each test's MCP servers stop with the test (a session is kept per process otherwise)."""
    yield
    try:
        from erpoz.integrations.mcp import close_sessions
    except ImportError:
        return
    close_sessions()
