"""The HTTP server (``erpoz serve``): runs API, OpenAI-compatible gateway, dashboard, metrics.

Its names are loaded on first use, so that :mod:`erpoz.server.wire` (the runs API's request
and answer shapes, shared with :mod:`erpoz.client`) imports without the ``server`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from ._auth import TenantError, caller_of, tenant_of
    from ._build import build_state, load_keys
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
    "load_keys",
    "tenant_of",
]

_WHERE = {
    "TenantError": "._auth",
    "caller_of": "._auth",
    "tenant_of": "._auth",
    "build_state": "._build",
    "load_keys": "._build",
    "bind_socket": "._http",
    "bounded_http": "._http",
    "DEFAULT_MAX_BODY": "._state",
    "Caller": "._state",
    "EventBus": "._state",
    "ServerState": "._state",
    "Tenants": "._state",
    "create_app": ".app",
}


__getattr__: Callable[[str], Any] = lazy_getattr(__name__, _WHERE, globals())
