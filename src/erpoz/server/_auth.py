"""Who is calling: the tenant of the presented API key (``Authorization: Bearer KEY`` or
``X-API-Key: KEY``). Missing key: 401 ``missing_api_key``; a key that is not configured: 401
``invalid_api_key`` (the same answer for every wrong key; OpenAI's SDKs raise their
``AuthenticationError`` on a 401). 403 is kept for a valid key that may not do something.
Without configured keys, every caller is the tenant ``"-"`` (the server then listens on
loopback only)."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ._state import ANONYMOUS, Caller, ServerState

# Declared for the OpenAPI document (the "Authorize" button of /docs); the key is read below.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer API_KEY")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: API_KEY")


class TenantError(Exception):
    """The caller is not known (401) or may not do this (403); ``code`` says which case."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.kind = "authentication_error" if status == 401 else "permission_error"
        super().__init__(message)


def _key(authorization: str, api_key: str) -> str:
    key = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    return key or api_key.strip()


def caller_for(state: ServerState, authorization: str, api_key: str) -> Caller:
    """Who calls, from the ``Authorization`` and ``X-API-Key`` headers ('' when absent), or
    ``TenantError`` (401)."""
    if state.tenants is None:
        return ANONYMOUS
    key = _key(authorization, api_key)
    if not key:
        raise TenantError(
            401, "an API key is required (Authorization: Bearer KEY)", "missing_api_key"
        )
    caller = state.tenants.identify(key)
    if caller is None:
        raise TenantError(401, "this API key is not valid", "invalid_api_key")
    return caller


def tenant_for(state: ServerState, authorization: str, api_key: str) -> str:
    """The caller's tenant, from the two headers (see :func:`caller_for`)."""
    return caller_for(state, authorization, api_key).tenant


def caller_of(
    request: Request,
    _b: HTTPAuthorizationCredentials | None = Security(_bearer),
    _k: str | None = Security(_header),
) -> Caller:
    """A FastAPI dependency: who calls (tenant and key name), or ``TenantError`` (401)."""
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
    """A FastAPI dependency: the caller's tenant, or ``TenantError`` (401)."""
    return caller_of(request, _b, _k).tenant
