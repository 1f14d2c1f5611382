"""Who is calling: the tenant of the presented API key (``Authorization: Bearer KEY`` or
``X-API-Key: KEY``). Missing key: 401; a key that is not configured: 403. Without configured
keys, every caller is the tenant ``"-"`` (the server then listens on loopback only)."""

from __future__ import annotations

from fastapi import Request

from ._state import ServerState


class TenantError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def tenant_of(request: Request) -> str:
    """A FastAPI dependency: the caller's tenant, or ``TenantError`` (401 / 403)."""
    state: ServerState = request.app.state.erpoz
    if state.tenants is None:
        return "-"
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else ""
    key = key or request.headers.get("x-api-key", "").strip()
    if not key:
        raise TenantError(401, "an API key is required (Authorization: Bearer KEY)")
    tenant = state.tenants.resolve(key)
    if tenant is None:
        raise TenantError(403, "this API key is not valid")
    return tenant
