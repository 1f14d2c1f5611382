"""The API's documentation page, ``/docs`` (Swagger UI), with its script and style served by
this server: nothing is fetched from a CDN or any other host.

The assets are files of the ``fastapi-offline`` package (MIT; it ships the dist build of
Swagger UI 5, Apache-2.0), a dependency of the ``server`` extra; erpoz only reads its files
(once, on first use, kept in memory) and serves them under ``/docs/`` with its own page, which
holds no inline script, under a Content-Security-Policy that allows this origin only.

``/redoc`` redirects to ``/docs``: ReDoc's standalone bundle loads its logo from Redocly's CDN.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

__all__ = ["DOCS_CSP", "router"]

#: What the documentation page may load: this origin only (Swagger UI sets styles from its
#: script, hence ``'unsafe-inline'`` styles; "Try it out" calls this origin).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}

#: Swagger UI's start, as FastAPI's own page configures it (the page holds no inline script).
_SWAGGER_INIT = b"""window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""

_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{root}/docs/favicon.png">
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
</head>
<body data-openapi="{root}{openapi}">
<div id="swagger-ui"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script src="{root}/docs/swagger-init.js"></script>
</body>
</html>
"""

_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - API docs</title></head>
<body><p>The documentation page needs the <code>fastapi-offline</code> package (pip install
'erpoz[server]'). The OpenAPI document is at <a href="{root}{openapi}">{openapi}</a>.</p>
</body></html>
"""


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(body: bytes, name: str) -> _Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return _Asset(body, _TYPES[name[name.rfind(".") :]], etag)


def _load_assets() -> dict[str, _Asset]:
    """Swagger UI's files by the name they are served under (none when ``fastapi-offline`` is
    not installed)."""
    try:
        root = resources.files("fastapi_offline").joinpath("static")
    except ModuleNotFoundError:
        return {}
    assets = {"swagger-init.js": _asset(_SWAGGER_INIT, "swagger-init.js")}
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        entry = root.joinpath(name)
        if entry.is_file():
            assets[name] = _asset(entry.read_bytes(), name)
    return assets


_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def router(title: str, openapi_url: str) -> APIRouter:
    """``GET /docs`` and its assets under ``/docs/``; ``GET /redoc`` redirects to it."""
    assets: dict[str, _Asset] = {}
    r = APIRouter(include_in_schema=False)

    def loaded() -> dict[str, _Asset]:
        if not assets:  # read on first use: an app that never shows its docs never reads them
            assets.update(_load_assets())
        return assets

    def page(request: Request) -> Response:
        root = html.escape(request.scope.get("root_path", "").rstrip("/"))
        found = "swagger-ui-bundle.js" in loaded()
        body = (_SWAGGER_PAGE if found else _MISSING).format(
            title=html.escape(title), root=root, openapi=html.escape(openapi_url)
        )
        status = 200 if found else 503
        headers = dict(_HEADERS, **{"Cache-Control": "no-cache"})
        return Response(body, status, headers, media_type="text/html; charset=utf-8")

    def serve(name: str, request: Request) -> Response:
        asset = loaded().get(name)
        if asset is None:
            return Response(
                b'{"error":{"message":"no such documentation file","type":"not_found"}}',
                status_code=404,
                media_type="application/json",
                headers={"X-Content-Type-Options": "nosniff"},
            )
        headers = dict(_HEADERS, ETag=asset.etag, **{"Cache-Control": "no-cache"})
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        return Response(body, media_type=asset.media_type, headers=headers)

    @r.api_route("/docs", methods=["GET", "HEAD"])
    async def swagger(request: Request) -> Response:
        return page(request)

    @r.api_route("/docs/{name}", methods=["GET", "HEAD"])
    async def docs_asset(name: str, request: Request) -> Response:
        return serve(name, request)

    @r.api_route("/redoc", methods=["GET", "HEAD"])
    async def redoc(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(root + "/docs", status_code=307)

    return r
