"""Who is calling: the tenant of the presented API key (``Authorization: Bearer KEY`` or
``X-API-Key: KEY``). Missing key: 401; a key that is not configured: 403 (the same answer for
every wrong key). Without configured keys, every caller is the tenant ``"-"`` (the server then
listens on loopback only)."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ._state import ANONYMOUS, Caller, ServerState

# Declared for the OpenAPI document (the "Authorize" button of /docs); the key is read below.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer API_KEY")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: API_KEY")


class TenantError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def _key(authorization: str, api_key: str) -> str:
    key = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    return key or api_key.strip()


def presented_key(request: Request) -> str:
    """The API key a request carries ('' when none)."""
    return _key(request.headers.get("authorization", ""), request.headers.get("x-api-key", ""))


def caller_for(state: ServerState, authorization: str, api_key: str) -> Caller:
    """Who calls, from the ``Authorization`` and ``X-API-Key`` headers ('' when absent), or
    ``TenantError`` (401 / 403)."""
    if state.tenants is None:
        return ANONYMOUS
    key = _key(authorization, api_key)
    if not key:
        raise TenantError(401, "an API key is required (Authorization: Bearer KEY)")
    caller = state.tenants.identify(key)
    if caller is None:
        raise TenantError(403, "this API key is not valid")
    return caller


def tenant_for(state: ServerState, authorization: str, api_key: str) -> str:
    """The caller's tenant, from the two headers (see :func:`caller_for`)."""
    return caller_for(state, authorization, api_key).tenant


def caller_of(
    request: Request,
    _b: HTTPAuthorizationCredentials | None = Security(_bearer),
    _k: str | None = Security(_header),
) -> Caller:
    """A FastAPI dependency: who calls (tenant and key name), or ``TenantError`` (401 / 403)."""
    state: ServerState = request.app.state.erpoz
    if state.tenants is None:
        return ANONYMOUS
    headers = request.headers
    return caller_for(state, headers.get("authorization", ""), headers.get("x-api-key", ""))


def tenant_of(
    request: Request,
    _b: HTTPAuthorizationCredentials | None = Security(_bearer),
    _k: str | None = Security(_header),
) -> str:
    """A FastAPI dependency: the caller's tenant, or ``TenantError`` (401 / 403)."""
    return caller_of(request, _b, _k).tenant
