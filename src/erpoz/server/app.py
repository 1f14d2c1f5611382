"""The erpoz HTTP server: one FastAPI app with the runs API, the OpenAI-compatible gateway,
the dashboard and the metrics, over one :class:`ServerState`.

``erpoz serve`` builds it from the project (``erpoz.yaml``, the run store, the flows named on
the command line); :func:`create_app` is the Python entry (tests use it with any state).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ._auth import TenantError
from ._incident import neutral_message, new_request_id
from ._state import ServerState

if TYPE_CHECKING:
    from .gateway import HotRoute

log = logging.getLogger("erpoz.server")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request_error",
}


def _declared_length(scope: Scope, limit: int) -> Response | bool:
    """Whether the request declares a Content-Length within ``limit``; the error response when
    it declares more (413) or nonsense (400)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return _too_large(limit) if int(value) > limit else True
            except ValueError:
                return _error(400, "invalid Content-Length header", "invalid_request_error")
    return False


async def _read_within(receive: Receive, limit: int) -> bytes | Response | None:
    """The body, read to its end; 413 as soon as it passes ``limit``; ``None`` when the client
    left before sending it all."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            return _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | Response | None:
    """A request's whole body within ``limit`` bytes; the error response when it declares or
    sends more (413) or declares nonsense (400); ``None`` when the client left."""
    declared = _declared_length(scope, limit)
    if isinstance(declared, Response):
        return declared
    return await _read_within(receive, limit)


class _App(FastAPI):
    """FastAPI with plain ASGI routes in front (``hot_routes``, by method and path): a request
    for one of them skips Starlette's routing, middleware stack, dependency solving and request
    object, about 0.1 ms of CPU per request, twice what an erpoz run in memory costs. The route
    applies the body limit itself and answers every error itself; everything else goes to
    FastAPI."""

    hot_routes: Mapping[tuple[str, str], HotRoute] = MappingProxyType({})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot_routes:
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            route = self.hot_routes.get((scope["method"], path))
            if route is not None:
                await self._hot(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _hot(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        state: ServerState = self.state.erpoz
        body = await _read_body(scope, receive, state.max_body)
        if body is None:  # the client left before sending its request
            return
        if isinstance(body, Response):
            response = body
        else:
            try:
                response = await route(scope["headers"], body)
            except Exception as exc:  # the route answers its own errors: this is a bug
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                response = _error(500, f"internal error: {type(exc).__name__}", "server_error")
        await response(scope, receive, send)


class _BodyLimit:
    """Refuse a request body over the limit with 413: before it is read when it declares a
    Content-Length, while it is read when it is chunked. A plain ASGI middleware (a
    ``BaseHTTPMiddleware`` cost about 0.3 ms of CPU per request)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        declared = _declared_length(scope, limit)
        if isinstance(declared, Response):
            await declared(scope, receive, send)
            return
        if declared or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)  # a declared body streams on, unread
            return
        # no Content-Length (a chunked body): read it here, within the limit, then hand it on
        body = await _read_within(receive, limit)
        if body is None:
            await self.app(scope, receive, send)  # the client left: let the app see it
            return
        if isinstance(body, Response):
            await body(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, f"request body over the limit of {limit} bytes", "too_large")


def _error(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, **extra}}, status_code=status)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "inputs", "n")`` -> ``body.inputs.n``."""
    return ".".join(str(p) for p in loc) or "request"


def create_app(state: ServerState) -> FastAPI:
    """The app over ``state``: ``/api/...`` (runs, reviews, audit, models, stats),
    ``/v1/...`` (the OpenAI-compatible gateway), ``/metrics`` and the dashboard at ``/``."""
    from . import _docs, _openapi, api, dashboard, gateway, metrics, schedules

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.startup()
        try:
            yield
        finally:
            await state.shutdown()

    app = _App(
        title="erpoz",
        version=__version__,
        description="Runs, reviews and audit of erpoz flows; an OpenAI-compatible gateway.",
        docs_url=None,  # served by _docs, without a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.erpoz = state
    app.add_middleware(_BodyLimit, limit=state.max_body)

    @app.exception_handler(TenantError)
    async def _tenant_error(request: Request, exc: TenantError) -> JSONResponse:
        response = _error(exc.status, exc.message, exc.kind, code=exc.code)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(api.ApiError)
    async def _api_error(request: Request, exc: api.ApiError) -> JSONResponse:
        if exc.status >= 500:  # the details are the operator's: the log has them
            rid = new_request_id()
            message = neutral_message(exc.status, exc.message, rid)
            return _error(exc.status, message, exc.kind, request_id=rid)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # name the field: "body.inputs: Input should be a valid dictionary"
        errors = list(exc.errors())
        problems = []
        for e in errors:
            loc = tuple(e.get("loc", ()))
            if e.get("type") == "json_invalid":
                where = f" at position {loc[1]}" if len(loc) > 1 else ""
                why = (e.get("ctx") or {}).get("error", "")
                problems.append(f"body: invalid JSON{where}" + (f": {why}" if why else ""))
            else:
                problems.append(f"{_where(loc)}: {e.get('msg', 'invalid')}")
        first = errors[0] if errors else {}
        return _error(
            422,
            "; ".join(problems) or "invalid request",
            "invalid_request_error",
            param="body" if first.get("type") == "json_invalid" else _where(first.get("loc", ())),
            code=first.get("type"),
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI reads a JSON body as UTF-8; any other bytes are malformed JSON (422)
            cause = exc.__cause__
            return _error(
                422,
                f"body: invalid JSON: not UTF-8 (byte {cause.start})",
                "invalid_request_error",
                param="body",
                code="json_invalid",
            )
        if exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": _allowed(request.app, request.scope)}
        detail = exc.detail
        if isinstance(detail, dict) and "error" in detail:
            return JSONResponse(detail, status_code=exc.status_code, headers=exc.headers)
        kind = _STATUS_TYPES.get(
            exc.status_code, "server_error" if exc.status_code >= 500 else "error"
        )
        response = _error(exc.status_code, str(detail), kind)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = new_request_id()
        log.exception(
            "request %s: unexpected error on %s %s", rid, request.method, request.url.path
        )
        message = f"internal error; the operator can look it up under request id {rid}"
        return _error(500, message, "server_error", request_id=rid)

    app.include_router(api.router())
    app.include_router(schedules.router(state))
    app.include_router(gateway.router(state))
    app.hot_routes = gateway.hot_routes(state)
    app.include_router(metrics.router(state))
    app.include_router(_docs.router(app.title, app.openapi_url or "/openapi.json"))
    app.include_router(dashboard.router(state))
    _openapi.document(app)
    return app


def _allowed(app: FastAPI, scope: Scope) -> str:
    """Every method some route of ``scope``'s path answers (``Allow`` of a 405): Starlette's
    own names only the methods of the first route that matched the path."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)
