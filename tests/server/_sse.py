"""Reading server-sent events and waiting on runs, for the server tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Sse:
    event: str
    data: Any
    id: int | None = None


def parse_sse(lines: Iterable[str]) -> list[Sse]:
    """Messages of an event stream (comments dropped)."""
    out: list[Sse] = []
    event, data, ident = "message", [], None
    for line in lines:
        if line == "":
            if data:
                out.append(Sse(event, json.loads("\n".join(data)), ident))
            event, data, ident = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                ident = int(value)
    return out


def wait_status(
    client: httpx.Client,
    run_id: str,
    headers: dict[str, str],
    statuses: Iterable[str] = ("succeeded", "failed", "cancelled", "waiting"),
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll ``GET /api/runs/{id}`` until the run has one of ``statuses``."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/runs/{run_id}", headers=headers).json()
        if body.get("status") in wanted:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {body.get('status')} after {timeout} s")
        time.sleep(0.05)
