"""The erpoz HTTP server: one FastAPI app with the runs API, the OpenAI-compatible gateway,
the dashboard and the metrics, over one :class:`ServerState`.

``erpoz serve`` builds it from the project (``erpoz.yaml``, the run store, the flows named on
the command line); :func:`create_app` is the Python entry (tests use it with any state).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from .. import __version__
from ._auth import TenantError
from ._state import ServerState


class _BodyLimit(BaseHTTPMiddleware):
    """Refuse a request body over the limit with 413 before it is read (Content-Length), or
    while it is read (chunked bodies)."""

    def __init__(self, app: Any, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                return _error(400, "invalid Content-Length header", "invalid_request_error")
            if too_big:
                return _error(
                    413, f"request body over the limit of {self.limit} bytes", "too_large"
                )
        elif request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.limit:
                    return _error(
                        413, f"request body over the limit of {self.limit} bytes", "too_large"
                    )
            request._body = body  # read once; the route reads it from here
        return await call_next(request)


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def create_app(state: ServerState) -> FastAPI:
    """The app over ``state``: ``/api/...`` (runs, reviews, audit, models, stats),
    ``/v1/...`` (the OpenAI-compatible gateway), ``/metrics`` and the dashboard at ``/``."""
    from . import api, dashboard, gateway, metrics

    app = FastAPI(
        title="erpoz",
        version=__version__,
        description="Runs, reviews and audit of erpoz flows; an OpenAI-compatible gateway.",
        docs_url="/docs",
    )
    app.state.erpoz = state
    app.add_middleware(_BodyLimit, limit=state.max_body)

    @app.exception_handler(TenantError)
    async def _tenant_error(request: Request, exc: TenantError) -> JSONResponse:
        return _error(exc.status, exc.message, "authentication_error")

    app.include_router(api.router(state))
    app.include_router(gateway.router(state))
    app.include_router(metrics.router(state))
    app.include_router(dashboard.router(state))
    return app
