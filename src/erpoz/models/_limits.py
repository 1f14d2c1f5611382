"""Per-model rate limits: requests and tokens per window (per minute by default), shared by
every process of the run store, that routers respect.

Before a call is sent, it takes one request and its estimated tokens (prompt + ``max_tokens``,
else 256) from the model's limits in the store (:class:`erpoz.store.RateLimits`); after, the
tokens are settled to what the call used. A call over a limit is, by the model's ``on_limit``:

- ``skip`` (default): refused at once with a ``ModelError`` whose ``code`` is ``rate_limited``
  — a router goes on to its next model, and records why in ``route_decided`` (status
  ``rate_limited``); a bare model's step fails (or retries by its retry policy);
- ``wait``: waits until the window has room (at most ``max_wait_s``, then refused as above);
  the wait is recorded in the call's ``model_called`` event (``rate_wait_s``).

Without a store that keeps rate limits (the memory store, code outside a run), limits hold
within this process only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ModelError
from ..store import LimitStates, MemoryRates, RateGrant, RateLimits

#: How long a grant counts before it is settled (a call cut off without a settle).
HOLD_S = 300.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A model's limits: ``requests`` and ``tokens`` per ``per_s`` seconds (``None``: no
    limit), and what a call over them does (``skip`` or ``wait``, at most ``max_wait_s``)."""

    requests: int | None = None
    tokens: int | None = None
    per_s: float = 60.0
    on_limit: Literal["skip", "wait"] = "skip"
    max_wait_s: float = 60.0
    shared: str | None = None
    """A name the limit is counted under instead of the model's: models that give the same one
    share it (a provider account's limit over all its models)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """The grants a call holds (to settle once it is over) and how long it waited for them."""

    requests: str | None
    tokens: str | None
    waited_s: float


class _LocalRates:
    """The limits of this process alone (no store that keeps them)."""

    def __init__(self) -> None:
        self._rates = MemoryRates()

    async def take_rate(
        self, key: str, limit: float, window_s: float, amount: float = 1.0, hold_s: float = 0.0
    ) -> RateGrant:
        return self._rates.take(key, limit, window_s, amount, hold_s)

    async def settle_rate(self, grant_id: str, amount: float) -> None:
        self._rates.settle(grant_id, amount)

    async def rate_grants(self, key: str, since: float = 0.0) -> list[tuple[float, float]]:
        return self._rates.grants(key, since)


class RateGate:
    """Where a hub's model calls take their grants: ``book`` (the run store, set by the CLI,
    the server and workers) or, until one is set, this process alone."""

    def __init__(self, book: RateLimits | None = None) -> None:
        self.book: RateLimits = book if book is not None else _LocalRates()

    async def admit(self, model: str, limit: RateLimit, tokens: int) -> Admitted:
        waited = 0.0
        while True:
            got, wait, why = await self._take(model, limit, tokens)
            if got is not None:
                return Admitted(got[0], got[1], waited)
            if limit.on_limit == "wait" and waited + wait <= limit.max_wait_s:
                await asyncio.sleep(wait + 0.001)
                waited += wait + 0.001
                continue
            raise ModelError(
                f"rate limited: {why}"
                + (f" (waited {waited:.1f} s)" if waited else "")
                + (f"; room again in {wait:.1f} s" if wait != float("inf") else ""),
                model=model,
                retryable=True,
                code="rate_limited",
            )

    async def _take(
        self, model: str, limit: RateLimit, tokens: int
    ) -> tuple[tuple[str | None, str | None] | None, float, str]:
        """Both grants, or neither (the request's is given back) with the wait and why."""
        window = f"{limit.per_s:g} s"
        key = limit_key(model, limit)
        over = f" (shared: {limit.shared})" if limit.shared else ""
        req: RateGrant | None = None
        if limit.requests is not None:
            req = await self.book.take_rate(
                f"{key}:requests", limit.requests, limit.per_s, 1, HOLD_S
            )
            if not req.granted:
                return None, req.wait_s, f"{limit.requests} requests per {window}{over} reached"
        tok: RateGrant | None = None
        if limit.tokens is not None:
            tok = await self.book.take_rate(
                f"{key}:tokens", limit.tokens, limit.per_s, tokens, HOLD_S
            )
            if not tok.granted:
                if req is not None:
                    await self.book.settle_rate(req.grant_id, 0)
                what = (
                    f"the call's ~{tokens} tokens are more than {limit.tokens} per {window}"
                    if tok.wait_s == float("inf")
                    else f"{limit.tokens} tokens per {window}{over} reached"
                )
                return None, tok.wait_s, what
        return (req.grant_id if req else None, tok.grant_id if tok else None), 0.0, ""

    async def give_back(self, admitted: Admitted) -> None:
        """The call was not sent after all (refused by its budget): it used nothing."""
        for grant in (admitted.requests, admitted.tokens):
            if grant is not None:
                await self.book.settle_rate(grant, 0)

    async def settle(self, admitted: Admitted, tokens_used: int) -> None:
        if admitted.requests is not None:
            await self.book.settle_rate(admitted.requests, 1)
        if admitted.tokens is not None:
            await self.book.settle_rate(admitted.tokens, tokens_used)


def limit_key(model: str, limit: RateLimit) -> str:
    """The store key a model's limit counts under (``…:requests`` / ``…:tokens`` after it)."""
    return f"shared:{limit.shared}" if limit.shared else f"model:{model}"


_WHAT = {"runs": "runs started", "running": "runs in flight"}


def _describe(key: str) -> dict[str, Any]:
    """What a key of the store limits: a model's (or shared) requests or tokens, a queue's runs
    started or in flight (``*``: every queue), or something else."""
    head, _, rest = key.partition(":")
    if head in ("model", "shared"):
        name, _, unit = rest.rpartition(":")
        return {"what": unit, head: name}
    if head in _WHAT:
        return {"what": _WHAT[head], "queue": rest}
    return {"what": key}


async def limits_overview(book: object, specs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every limit, as it stands: the model limits configured here (``specs``: a hub's model
    specs; ``configured: true``, with ``on_limit``) and every limit the store keeps (a worker's
    ``--rate`` / ``--max-running``, other processes' model limits), each with its units used in
    its window now (concurrency: slots in use) and its room. ``book``: the store (a store that
    keeps no limits: the configured ones only, used 0)."""
    states = {s.key: s for s in await book.limit_states()} if isinstance(book, LimitStates) else {}
    out: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(specs.items()):
        lim = getattr(spec, "limits", None)
        if not isinstance(lim, RateLimit):
            continue
        for unit, value in (("requests", lim.requests), ("tokens", lim.tokens)):
            if value is None:
                continue
            key = f"{limit_key(name, lim)}:{unit}"
            row = out.setdefault(key, {"key": key, "kind": "rate", **_describe(key), "models": []})
            row["models"].append(name)
            state = states.get(key)
            used = state.used if state is not None else 0.0
            row.update(
                limit=float(value),
                per_s=float(lim.per_s),
                used=used,
                room=max(0.0, value - used),
                last=None if state is None else state.last,
                on_limit=lim.on_limit,
                configured=True,
            )
    for key, state in states.items():
        if key not in out:
            out[key] = {**state.to_json(), **_describe(key), "configured": False}
    return [out[k] for k in sorted(out)]
