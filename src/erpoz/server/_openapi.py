"""The error answers of every operation in ``/openapi.json``, where they occur.

Routes are declared where they are handled (``api.py``, ``gateway.py``, ``metrics.py``); the
errors the app answers around them (keys, body limits, the store, malformed input) are the
same for many routes, so they are written down here once, by what a route is, and added to
each route's documented responses when the app is made.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["ERROR_SCHEMA", "document"]

#: ``{"error": {"message", "type", ...}}``: every error the server answers.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
                "request_id": {
                    "type": "string",
                    "description": "5xx only: the id the server's log keeps the details under",
                },
            },
        }
    },
}

_WHY = {
    400: "Content-Length that is not a number",
    401: "no API key, or a key that is not configured (code missing_api_key / invalid_api_key)",
    404: "no such run (another tenant's run is answered the same way)",
    409: "the run's state does not allow it (finished, being run here, waiting for review)",
    413: "body over the server's limit (erpoz serve --max-body)",
    422: "malformed body or parameter (param names it)",
    503: "the run store is not available",
}

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: /api routes that read no store
_NO_STORE = frozenset({"/api/health", "/api/whoami", "/api/models", "/api/flows"})
#: /api routes that answer 409 (besides every route under /api/reviews/{run_id}/)
_CONFLICTS = frozenset({"/api/runs", "/api/runs/{run_id}/resume", "/api/runs/{run_id}/cancel"})


def _codes(path: str, methods: set[str]) -> dict[int, str]:
    """The error statuses of one operation of the runs API, with why."""
    if path == "/api/health":
        return {}
    codes = [401, 422]
    if path not in _NO_STORE:
        codes.append(503)
    if "{run_id}" in path or path == "/api/audit/verify":
        codes.append(404)
    if methods & _BODY_METHODS:
        codes += [400, 413]
        if path in _CONFLICTS or path.startswith("/api/reviews/"):
            codes.append(409)
    out = {code: _WHY[code] for code in sorted(codes)}
    if path == "/api/runs" and "POST" in methods:
        out[404] = "no such flow exposed (flows lists them)"
    if path.startswith("/api/runs/{run_id}/lineage/"):
        out[404] = "no such run, or no such step in it (steps lists them)"
    if path == "/api/audit/verify":
        out[404] = "no such run (when run is given)"
    return dict(sorted(out.items()))


def _response(why: str) -> dict[str, Any]:
    return {"description": why, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def _errors_of(path: str, method: str) -> dict[int, str]:
    """The error statuses of one operation, with why (``{}`` for routes not documented
    here)."""
    methods = {method.upper()}
    if path.startswith("/api/"):
        return _codes(path, methods)
    if path.startswith("/v1/"):
        codes = {401: _WHY[401]}
        if methods & _BODY_METHODS:
            codes.update({400: _WHY[400], 413: _WHY[413]})
        if "{" in path:
            codes[404] = "no such model, router or flow"
        return codes
    return {}


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` add the error answers to each operation's responses (those a
    route declares itself win)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                declared = operation.setdefault("responses", {})
                for code, why in _errors_of(path, method).items():
                    declared.setdefault(str(code), _response(why))
                for code, response in declared.items():
                    # FastAPI documents its own 422 body; this server answers in its format
                    if code[:1] in "45" and ("content" not in response or code == "422"):
                        response["content"] = _response("")["content"]
                operation["responses"] = dict(sorted(declared.items()))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
