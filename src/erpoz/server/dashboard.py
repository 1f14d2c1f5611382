"""The web dashboard: a single-page app at ``/`` with its assets under ``/ui/...``.

The app is plain HTML, CSS and JavaScript modules shipped inside the package
(``erpoz/server/static``): no build step, no CDN, nothing fetched from another host. It reads
everything through the JSON API (``/api/...``) with the API key the user typed (kept in the
browser's ``localStorage``), and builds the page with ``textContent`` / ``createElement`` only,
so whatever a run holds is shown as text. The responses carry a strict Content-Security-Policy
as a second line of defence: scripts, styles and connections from this origin only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ._state import ServerState

__all__ = ["CSP", "router"]

#: What the dashboard's pages may load: everything from this origin, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    """The files of ``static/`` (flat), read once; only these names are ever served."""
    assets: dict[str, _Asset] = {}
    root = resources.files("erpoz.server").joinpath("static")
    for entry in root.iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[name] = _Asset(body, _TYPES[suffix], etag)
    return assets


_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _serve(asset: _Asset, request: Request) -> Response:
    headers = dict(_HEADERS, ETag=asset.etag)
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    return Response(body, media_type=asset.media_type, headers=headers)


def _not_found() -> Response:
    return Response(
        b'{"error":{"message":"no such dashboard file","type":"not_found"}}',
        status_code=404,
        media_type="application/json",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def router(state: ServerState) -> APIRouter:
    """``GET /`` (the app) and ``GET /ui/{name}`` (its assets). Mounted last by
    :func:`~erpoz.server.create_app`; it serves nothing else, so ``/api``, ``/v1``,
    ``/metrics`` and ``/docs`` stay with their routers. The pages themselves hold no data: what
    they show comes from the API, with the caller's key, so they need no key to load."""
    assets = _load_assets()
    r = APIRouter(include_in_schema=False)

    @r.api_route("/", methods=["GET", "HEAD"])
    async def index(request: Request) -> Response:
        asset = assets.get("index.html")
        return _not_found() if asset is None else _serve(asset, request)

    @r.api_route("/ui/{name}", methods=["GET", "HEAD"])
    async def asset(name: str, request: Request) -> Response:
        found = assets.get(name)
        return _not_found() if found is None else _serve(found, request)

    return r
