"""What a tenant is told when the server or an upstream fails: a neutral message and a request
id. The details (an upstream's address and error text, a store's path, an exception) go to the
server's log under that id, for the operator; they may name internal hosts and files that no
tenant should see."""

from __future__ import annotations

import logging
import secrets

__all__ = ["neutral_message", "new_request_id"]

log = logging.getLogger("erpoz.server")

_WHAT = {
    502: "the upstream model failed",
    503: "the run store is not available",
}


def new_request_id() -> str:
    """An id for a request that has no run id: ``req_`` and 16 hex digits."""
    return "req_" + secrets.token_hex(8)


def neutral_message(status: int, detail: str, request_id: str) -> str:
    """Log ``detail`` under ``request_id``; the message a tenant gets instead."""
    log.warning("request %s: %d: %s", request_id, status, detail)
    what = _WHAT.get(status, "the server failed to answer this request")
    return f"{what}; the operator can look it up under request id {request_id}"
