"""Spread requests over equivalent models: weighted at random, or to the fastest lately."""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from ..models import ChatModel, ChatRequest, ChatResult, StreamChunk
from ._decision import (
    FALL_THROUGH,
    cost_field,
    decided,
    members_of,
    prompt_tokens,
    recording,
    routed,
    routed_chunk,
)

Strategy = Literal["weighted", "least_latency"]


class LoadBalanceRouter:
    """A chat model that spreads requests over ``models``.

    ``weighted``: each request goes to a model drawn at random in proportion to ``weights``
    (equal by default; ``seed`` makes the draws repeatable). ``least_latency``: to the model
    with the lowest moving average (EWMA, weight ``alpha``) of observed latency; models not
    yet observed are tried first, in order. A failure counts as its time plus
    ``error_penalty_s``, so a broken model stops being picked. It does not fail over: wrap it
    in a ``FallbackRouter`` for that.
    """

    kind: ClassVar[str] = "balance"

    def __init__(
        self,
        name: str,
        models: Sequence[ChatModel],
        *,
        weights: Sequence[float] | None = None,
        strategy: Strategy = "weighted",
        seed: int | None = None,
        alpha: float = 0.3,
        error_penalty_s: float = 5.0,
    ) -> None:
        self.name = name
        self._members = members_of(name, models)
        self.models = tuple(m.model for m in self._members)
        if strategy not in ("weighted", "least_latency"):
            raise ConfigError(
                f"router '{name}': strategy must be 'weighted' or 'least_latency', got {strategy!r}"
            )
        if weights is None:
            weights = [1.0] * len(self._members)
        if len(weights) != len(self._members):
            raise ConfigError(
                f"router '{name}': {len(weights)} weights for {len(self._members)} models"
            )
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"router '{name}': weights must be >= 0 and not all 0")
        if not 0 < alpha <= 1:
            raise ConfigError(f"router '{name}': alpha must be in (0, 1], got {alpha}")
        self.strategy: Strategy = strategy
        self.weights = tuple(float(w) for w in weights)
        self._cum = tuple(itertools.accumulate(self.weights))
        self._total = self._cum[-1]
        self._rng = random.Random(seed)
        self.alpha = alpha
        self.error_penalty_s = error_penalty_s
        self._ewma: list[float | None] = [None] * len(self._members)

    def latencies(self) -> dict[str, float | None]:
        """Each model's moving average of latency in seconds (``None``: not observed yet)."""
        return {m.name: v for m, v in zip(self._members, self._ewma, strict=True)}

    def estimate(self, request: ChatRequest) -> float | None:
        """The weighted mean of the models' expected costs (``None`` if any is unknown)."""
        total = 0.0
        tokens = prompt_tokens(request)
        for m, w in zip(self._members, self.weights, strict=True):
            cost = m.cost(request, tokens)
            if cost is None:
                return None
            total += w * cost
        return total / self._total

    def _pick(self) -> tuple[int, str]:
        if self.strategy == "weighted":
            draw = self._rng.random() * self._total
            index = bisect.bisect_right(self._cum, draw)
            return min(index, len(self._cum) - 1), f"weighted draw {draw / self._total:.3f}"
        ewma = self._ewma
        best = -1
        best_s = 0.0
        for i, value in enumerate(ewma):
            if value is None:
                return i, "latency not observed yet"
            if best < 0 or value < best_s:
                best, best_s = i, value
        return best, f"lowest average latency ({best_s * 1000:.1f} ms)"

    def _observe(self, index: int, seconds: float) -> None:
        old = self._ewma[index]
        self._ewma[index] = seconds if old is None else old + self.alpha * (seconds - old)

    def _record(self, request: ChatRequest, index: int, reason: str) -> None:
        tokens = prompt_tokens(request)
        candidates: list[dict[str, Any]] = [
            {
                "model": m.name,
                "estimate_usd": cost_field(m.cost(request, tokens)),
                "weight": w,
                "latency_ms": None if e is None else round(e * 1000, 3),
            }
            for m, w, e in zip(self._members, self.weights, self._ewma, strict=True)
        ]
        decided(
            self.name,
            self.kind,
            candidates,
            self._members[index].name,
            reason,
            strategy=self.strategy,
        )

    async def generate(self, request: ChatRequest) -> ChatResult:
        index, reason = self._pick()
        if recording():
            self._record(request, index, reason)
        model = self._members[index].model
        t0 = time.perf_counter()
        try:
            result = await model.generate(request)
        except FALL_THROUGH:
            self._observe(index, time.perf_counter() - t0 + self.error_penalty_s)
            raise
        self._observe(index, time.perf_counter() - t0)
        return routed(result, self.name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        index, reason = self._pick()
        if recording():
            self._record(request, index, reason)
        t0 = time.perf_counter()
        try:
            async for chunk in self._members[index].model.stream(request):
                yield routed_chunk(chunk, self.name)
        except FALL_THROUGH:
            self._observe(index, time.perf_counter() - t0 + self.error_penalty_s)
            raise
        self._observe(index, time.perf_counter() - t0)
