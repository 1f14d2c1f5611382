"""The HTTP server (``erpoz serve``): runs API, OpenAI-compatible gateway, dashboard, metrics."""

from ._auth import TenantError, caller_of, tenant_of
from ._build import build_state
from ._http import bind_socket, bounded_http
from ._state import DEFAULT_MAX_BODY, Caller, EventBus, ServerState, Tenants
from .app import create_app

__all__ = [
    "DEFAULT_MAX_BODY",
    "Caller",
    "EventBus",
    "ServerState",
    "TenantError",
    "Tenants",
    "bind_socket",
    "bounded_http",
    "build_state",
    "caller_of",
    "create_app",
    "tenant_of",
]
