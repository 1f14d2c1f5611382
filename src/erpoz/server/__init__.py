"""The HTTP server (``erpoz serve``): runs API, OpenAI-compatible gateway, dashboard, metrics."""

from ._auth import TenantError, tenant_of
from ._state import DEFAULT_MAX_BODY, EventBus, ServerState, Tenants
from .app import create_app

__all__ = [
    "DEFAULT_MAX_BODY",
    "EventBus",
    "ServerState",
    "TenantError",
    "Tenants",
    "create_app",
    "tenant_of",
]
