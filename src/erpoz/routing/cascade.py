"""Ask a cheap model first; escalate to a stronger one when a validator rejects the answer."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeAlias

from ..errors import BudgetExceeded, ConfigError
from ..models._protocol import ChatModel
from ..models._types import ChatRequest, ChatResult, StreamChunk
from ._decision import (
    FALL_THROUGH,
    Verdict,
    cost_field,
    decided,
    describe,
    members_of,
    prompt_tokens,
    recording,
    routed,
)

Judgement: TypeAlias = Verdict | bool | float
Validator: TypeAlias = Callable[[ChatRequest, ChatResult], Judgement | Awaitable[Judgement]]
"""Judges an answer: a :class:`Verdict`, ``True``/``False``, or a score in [0, 1] (accepted
when at least the cascade's threshold). May be ``async``."""


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


class CascadeRouter:
    """A chat model that asks ``models`` from cheap to strong and returns the first answer
    every validator accepts, or else the strongest model's answer.

    An answer is rejected when its ``confidence`` is below ``threshold`` or any validator
    rejects it (validators run in order, stopping at the first rejection; a float score is a
    rejection below ``threshold``). A failing model (``ModelError`` or timeout) escalates too,
    except ``BudgetExceeded``, which is raised at once. The strongest model's answer is taken
    as it is; its failure is raised. The ``route_decided`` event names which validator
    rejected each answer and why.
    """

    kind: ClassVar[str] = "cascade"

    def __init__(
        self,
        name: str,
        models: Sequence[ChatModel],
        validators: Sequence[Validator] = (),
        *,
        threshold: float = 0.5,
    ) -> None:
        self.name = name
        self._members = members_of(name, models)
        self.models = tuple(m.model for m in self._members)
        self.validators = tuple(validators)
        self._named = tuple((_name_of(v), v) for v in self.validators)
        self.threshold = threshold

    def estimate(self, request: ChatRequest) -> float | None:
        """What the first (cheapest) model would cost; escalations cost more."""
        return self._members[0].cost(request)

    async def judge(self, request: ChatRequest, result: ChatResult) -> tuple[str, Verdict]:
        """The first rejection (the validator's name and its verdict), or ``("", accepted)``."""
        threshold = self.threshold
        confidence = result.confidence
        if confidence is not None and confidence < threshold:
            return "confidence", Verdict(
                False, confidence, f"confidence {confidence:.2f} < threshold {threshold:g}"
            )
        for name, validator in self._named:
            out: Any = validator(request, result)
            if inspect.isawaitable(out):
                out = await out
            verdict = self._verdict(name, out)
            if not verdict.ok:
                return name, verdict
        return "", Verdict(True, confidence)

    def _verdict(self, name: str, out: Any) -> Verdict:
        if isinstance(out, Verdict):
            return out
        if isinstance(out, bool):
            return Verdict(out, None, "" if out else "returned False")
        if isinstance(out, int | float):
            score = float(out)
            ok = score >= self.threshold
            return Verdict(ok, score, "" if ok else f"score {score:.2f} < {self.threshold:g}")
        raise ConfigError(
            f"router '{self.name}': validator {name} returned {type(out).__name__}; "
            "a validator returns a Verdict, a bool or a float score"
        )

    async def generate(self, request: ChatRequest) -> ChatResult:
        rows: list[dict[str, Any]] | None = [] if recording() else None
        last = len(self._members) - 1
        for i, member in enumerate(self._members):
            try:
                result = await member.model.generate(request)
            except BudgetExceeded as exc:
                self._row(rows, i, "budget_exceeded", error=str(exc))
                self._record(request, rows, None, f"{member.name}: budget exceeded; not escalating")
                raise
            except FALL_THROUGH as exc:
                self._row(rows, i, "failed", error=describe(member.name, exc))
                if i == last:
                    self._record(request, rows, None, f"the strongest model, {member.name}, failed")
                    raise
                continue
            if i == last:
                self._row(rows, i, "final")
                reason = (
                    f"{member.name} answered first"
                    if i == 0
                    else f"escalated to the strongest model, {member.name}; taken as it is"
                )
                self._record(request, rows, member.name, reason)
                return routed(result, self.name)
            validator, verdict = await self.judge(request, result)
            if verdict.ok:
                self._row(rows, i, "accepted", score=verdict.score)
                reason = f"{member.name} accepted" + (" after escalation" if i else "")
                self._record(request, rows, member.name, reason)
                return routed(result, self.name)
            self._row(
                rows,
                i,
                "rejected",
                validator=validator,
                score=verdict.score,
                why=verdict.reason,
            )
        raise AssertionError("unreachable: the strongest model's answer is always taken")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The accepted answer in one chunk: an answer is judged whole, before it is shown."""
        result = await self.generate(request)
        yield StreamChunk(result.text)
        yield StreamChunk("", result)

    def _row(
        self, rows: list[dict[str, Any]] | None, index: int, status: str, **fields: Any
    ) -> None:
        if rows is not None:
            row: dict[str, Any] = {"model": self._members[index].name, "status": status}
            row.update((k, v) for k, v in fields.items() if v is not None)
            rows.append(row)

    def _record(
        self,
        request: ChatRequest,
        rows: list[dict[str, Any]] | None,
        winner: str | None,
        tail: str,
    ) -> None:
        if rows is None:
            return
        notes = [
            f"{r['model']} rejected by {r['validator']}: {r.get('why') or 'rejected'}"
            if r["status"] == "rejected"
            else f"{r['model']} failed"
            for r in rows[:-1]  # the last row is what ``tail`` says
            if r["status"] in ("rejected", "failed")
        ]
        notes.append(tail)
        rows += [{"model": m.name, "status": "not_tried"} for m in self._members[len(rows) :]]
        tokens = prompt_tokens(request)
        for m, row in zip(self._members, rows, strict=True):
            row["estimate_usd"] = cost_field(m.cost(request, tokens))
        decided(self.name, self.kind, rows, winner, "; ".join(notes))
