"""Try models in order until one answers; a model that just failed cools down for a while."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

from ..errors import BudgetExceeded, ModelError
from ..models import ChatModel, ChatRequest, ChatResult, StreamChunk
from ._decision import (
    FALL_THROUGH,
    aclose,
    cost_field,
    decided,
    describe,
    is_retryable,
    members_of,
    prompt_tokens,
    recording,
    routed,
    routed_chunk,
)

#: HTTP statuses that say the model (not the request) is wrong: its key, access or name.
_MODEL_AT_FAULT = frozenset({401, 403, 404})


def _all(n: int) -> str:
    return "its only model" if n == 1 else f"all {n} models"


class FallbackRouter:
    """A chat model that asks ``models`` in order and returns the first answer.

    A provider failure (``ModelError``, retryable or not) or a timeout moves on to the next
    model; ``BudgetExceeded`` does not (a budget refusal must not buy a pricier answer).
    A model that failed with a retryable error, a timeout, or a 401/403/404 cools down for
    ``cooldown_s``: it is skipped while others are available, and asked only once every other
    model has failed this request (cooling models least recently failed first). When all
    fail, a ``ModelError`` lists each model's error; it is retryable if any of them was.
    Streams fall back only until the first chunk has been passed on.
    """

    kind: ClassVar[str] = "fallback"

    def __init__(
        self,
        name: str,
        models: Sequence[ChatModel],
        *,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._members = members_of(name, models)
        self.models = tuple(m.model for m in self._members)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._all = tuple(range(len(self._members)))
        self._failed_at: dict[int, float] = {}  # member index -> clock() of its last failure

    def estimate(self, request: ChatRequest) -> float | None:
        """What the first model to be asked would cost."""
        return self._members[self._order()[0]].cost(request)

    def cooling(self) -> list[str]:
        """Names of the models now in cool-down."""
        now = self._clock()
        return [
            self._members[i].name for i, t in self._failed_at.items() if now - t < self.cooldown_s
        ]

    def _order(self) -> tuple[int, ...]:
        if not self._failed_at:
            return self._all
        now = self._clock()
        cool = self.cooldown_s
        failed = self._failed_at
        ready = [i for i in self._all if i not in failed or now - failed[i] >= cool]
        waiting = sorted((i for i in failed if now - failed[i] < cool), key=failed.__getitem__)
        return (*ready, *waiting)

    def _failed(self, index: int, exc: BaseException) -> None:
        status = exc.status if isinstance(exc, ModelError) else None
        if is_retryable(exc) or status in _MODEL_AT_FAULT:
            self._failed_at[index] = self._clock()

    def _answered(self, index: int) -> None:
        if self._failed_at:
            self._failed_at.pop(index, None)

    async def generate(self, request: ChatRequest) -> ChatResult:
        order = self._order()
        errors: list[tuple[int, BaseException]] = []
        for index in order:
            member = self._members[index]
            try:
                result = await member.model.generate(request)
            except BudgetExceeded as exc:
                self._record(request, order, errors, None, refused=(index, exc))
                raise
            except FALL_THROUGH as exc:
                self._failed(index, exc)
                errors.append((index, exc))
                continue
            self._answered(index)
            self._record(request, order, errors, index)
            return routed(result, self.name)
        self._record(request, order, errors, None)
        raise self._all_failed(errors)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        order = self._order()
        errors: list[tuple[int, BaseException]] = []
        for index in order:
            member = self._members[index]
            chunks = aiter(member.model.stream(request))
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                self._answered(index)
                self._record(request, order, errors, index)
                return
            except BudgetExceeded as exc:
                self._record(request, order, errors, None, refused=(index, exc))
                raise
            except FALL_THROUGH as exc:
                self._failed(index, exc)
                errors.append((index, exc))
                continue
            self._record(request, order, errors, index)
            try:
                yield routed_chunk(first, self.name)
                async for chunk in chunks:
                    yield routed_chunk(chunk, self.name)
            except FALL_THROUGH as exc:  # too late to fall back: part of the answer is out
                self._failed(index, exc)
                raise
            finally:
                await aclose(chunks)
            self._answered(index)
            return
        self._record(request, order, errors, None)
        raise self._all_failed(errors)

    def _all_failed(self, errors: list[tuple[int, BaseException]]) -> ModelError:
        what = "; ".join(describe(self._members[i].name, exc) for i, exc in errors)
        return ModelError(
            f"{_all(len(errors))} failed: {what}",
            model=self.name,
            retryable=any(is_retryable(exc) for _, exc in errors),
        )

    def _record(
        self,
        request: ChatRequest,
        order: tuple[int, ...],
        errors: list[tuple[int, BaseException]],
        winner: int | None,
        refused: tuple[int, BaseException] | None = None,
    ) -> None:
        if not recording():
            return
        failed = dict(errors)
        now = self._clock()
        tokens = prompt_tokens(request)
        candidates: list[dict[str, Any]] = []
        skipped: list[str] = []
        for index in order:
            m = self._members[index]
            estimate = cost_field(m.cost(request, tokens))
            row: dict[str, Any] = {"model": m.name, "estimate_usd": estimate}
            since = self._failed_at.get(index)
            if index in failed:
                exc = failed[index]
                limited = isinstance(exc, ModelError) and exc.code == "rate_limited"
                row.update(status="rate_limited" if limited else "failed")
                row["error"] = describe(m.name, exc)
                row["retryable"] = is_retryable(exc)
            elif refused is not None and index == refused[0]:
                row.update(status="budget_exceeded", error=str(refused[1]))
            elif index == winner:
                row["status"] = "answered"
            elif since is not None and now - since < self.cooldown_s:
                row["status"] = "cooling"
                skipped.append(m.name)
            else:
                row["status"] = "not_tried"
            if since is not None and index != winner:
                row["failed_s_ago"] = round(now - since, 3)
            candidates.append(row)
        notes = [f"skipped {name} (cooling down)" for name in skipped]
        for index, exc in errors:
            name = self._members[index].name
            if is_retryable(exc):
                notes.append(f"{name} failed (retryable)")
            else:
                status = exc.status if isinstance(exc, ModelError) else None
                code = f" (status {status})" if status else ""
                notes.append(f"{name} failed with a non-retryable error{code}, fell through anyway")
        winner_name = None if winner is None else self._members[winner].name
        if refused is not None:
            name = self._members[refused[0]].name
            notes.append(f"{name}: budget exceeded; not falling through to other models")
        elif winner_name is None:
            notes.append(f"{_all(len(errors))} failed")
        elif notes:
            notes.append(f"{winner_name} answered")
        else:
            notes.append(f"first choice {winner_name} answered")
        decided(self.name, self.kind, candidates, winner_name, "; ".join(notes))
