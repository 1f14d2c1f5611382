"""What the server (or the way to it) answered when it was not success, as erpoz errors."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..errors import ErpozError, RunError, StoreError

__all__ = [
    "ApiError",
    "AuthenticationFailed",
    "Conflict",
    "ConnectionFailed",
    "InvalidRequest",
    "NotFound",
    "ServerUnavailable",
    "WaitTimedOut",
    "error_from",
    "transport_error",
]


class ApiError(ErpozError):
    """The server answered an error: ``status`` (HTTP), ``kind`` (the body's ``error.type``:
    ``not_found``, ``conflict``, ``invalid_request_error`` …), ``param`` (the field at fault,
    when the server names one) and ``body`` (the whole error object, extra fields included).
    ``status`` is ``None`` when no answer came (:class:`ConnectionFailed`)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        kind: str,
        param: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.param = param
        self.body = body or {}
        # no answer, a server that is down or overloaded, a rate limit: worth trying again
        self.retryable = status is None or status in (408, 429) or status >= 500

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"{self.message} ({where}, {self.kind})"


class AuthenticationFailed(ApiError):
    """401 (no API key, or one the server does not know) or 403 (a key not allowed this)."""


class NotFound(ApiError, RunError):
    """404: no such run (or another tenant's), flow, or step."""


class Conflict(ApiError, RunError):
    """409: the run is in the wrong state (finished, waiting for review, being run)."""


class InvalidRequest(ApiError):
    """400, 413 or 422: the request does not fit (bad inputs, a field, too large);
    ``param`` names the field."""


class ServerUnavailable(ApiError, StoreError):
    """503: the server's run store cannot be used right now."""


class ConnectionFailed(ApiError):
    """The server could not be reached, or the connection broke before an answer (after the
    client's own reconnection attempts, when following)."""


class WaitTimedOut(RunError):
    """A run did not end its turn within the time the caller was willing to wait; it goes on
    in the server."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: AuthenticationFailed,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    503: ServerUnavailable,
}


def error_from(response: httpx.Response, body: bytes | None = None) -> ApiError:
    """The error a non-success answer stands for (its JSON ``{"error": {...}}`` read)."""
    raw = response.content if body is None else body
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
    elif isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        error = {"message": parsed["detail"]}
    status = response.status_code
    message = str(error.get("message") or raw[:200].decode("utf-8", "replace") or "no body")
    cls = _BY_STATUS.get(status, ApiError)
    kind = str(error.get("type") or ("server_error" if status >= 500 else "error"))
    param = error.get("param")
    return cls(
        f"{response.request.method} {response.request.url.path}: {message}",
        status=status,
        kind=kind,
        param=param if isinstance(param, str) else None,
        body=error,
    )


def transport_error(exc: httpx.HTTPError, what: str) -> ConnectionFailed:
    """An httpx transport error (refused, timed out, cut off) as ours."""
    return ConnectionFailed(
        f"{what}: {type(exc).__name__}: {exc}", status=None, kind="connection_error"
    )
