"""Ask a cheap model first; escalate to a stronger one when a validator rejects the answer."""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeAlias

from ..errors import BudgetExceeded, ConfigError
from ..models import ChatModel, ChatRequest, ChatResult, StreamChunk, record
from ._decision import (
    FALL_THROUGH,
    Member,
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
    rejected each answer and why, and which abstained (validators that do not judge answers
    of that form).

    A cascade escalates more often than it should on tasks its validators were not made for;
    past some rate it costs more than asking the strongest model alone. It watches that: over
    its last ``cost_window`` calls (once ``cost_min_calls`` were made), when what it spent
    exceeds what the strongest model alone would have cost, it records a ``quality_alert``
    (``guard: cascade_cost``) in the calling run, once, until the ratio is back below 1.
    """

    kind: ClassVar[str] = "cascade"

    def __init__(
        self,
        name: str,
        models: Sequence[ChatModel],
        validators: Sequence[Validator] = (),
        *,
        threshold: float = 0.5,
        cost_window: int = 50,
        cost_min_calls: int = 20,
    ) -> None:
        self.name = name
        self._members = members_of(name, models)
        self.models = tuple(m.model for m in self._members)
        self.validators = tuple(validators)
        self._named = tuple((_name_of(v), v) for v in self.validators)
        self.threshold = threshold
        self.costs = CostWatch(name, cost_window, cost_min_calls)

    def estimate(self, request: ChatRequest) -> float | None:
        """What the first (cheapest) model would cost; escalations cost more."""
        return self._members[0].cost(request)

    async def judge(self, request: ChatRequest, result: ChatResult) -> tuple[str, Verdict]:
        """The first rejection (the validator's name and its verdict), or ``("", accepted)``."""
        name, verdict, _ = await self._judge(request, result)
        return name, verdict

    async def _judge(
        self, request: ChatRequest, result: ChatResult
    ) -> tuple[str, Verdict, list[str]]:
        """As :meth:`judge`, and the validators that abstained on the way."""
        threshold = self.threshold
        confidence = result.confidence
        abstained: list[str] = []
        if confidence is not None and confidence < threshold:
            return (
                "confidence",
                Verdict(
                    False, confidence, f"confidence {confidence:.2f} < threshold {threshold:g}"
                ),
                abstained,
            )
        for name, validator in self._named:
            out: Any = validator(request, result)
            if inspect.isawaitable(out):
                out = await out
            verdict = self._verdict(name, out)
            if verdict.abstained:
                abstained.append(name)
            elif not verdict.ok:
                return name, verdict, abstained
        return "", Verdict(True, confidence), abstained

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
        spent: list[ChatResult] = []
        try:
            result = await self._generate(request, spent)
        finally:
            if spent:
                self.costs.add(request, spent, self._members)
        return result

    async def _generate(self, request: ChatRequest, spent: list[ChatResult]) -> ChatResult:
        rows: list[dict[str, Any]] | None = [] if recording() else None
        last = len(self._members) - 1
        for i, member in enumerate(self._members):
            try:
                result = await member.model.generate(request)
                spent.append(result)
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
            validator, verdict, abstained = await self._judge(request, result)
            if verdict.ok:
                self._row(rows, i, "accepted", score=verdict.score, abstained=abstained or None)
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
                abstained=abstained or None,
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


class CostWatch:
    """What a cascade spent over its last ``window`` calls against what its strongest model
    alone would have cost for the same requests; a ``quality_alert`` in the calling run when
    the cascade is the dearer, once per crossing."""

    def __init__(self, router: str, window: int = 50, min_calls: int = 20) -> None:
        if window < 1 or not 1 <= min_calls <= window:
            raise ConfigError(
                f"router '{router}': cost_window >= 1 and 1 <= cost_min_calls <= cost_window"
            )
        self.router = router
        self.window = window
        self.min_calls = min_calls
        self._calls: deque[tuple[float, float, bool]] = deque(maxlen=window)
        self._firing = False
        self._lock = threading.Lock()

    @staticmethod
    def strongest_alone(
        request: ChatRequest, spent: Sequence[ChatResult], members: Sequence[Member]
    ) -> float:
        """What the strongest member would have cost: its own cost when it was asked, else its
        prices on this prompt and on the answer's length (its estimate without prices)."""
        strongest = members[-1]
        for result in spent:
            if result.model == strongest.name or result.route[-1:] == (strongest.name,):
                return result.cost_usd
        answer = spent[-1]
        if strongest.price_in is not None:
            tokens_in = answer.usage.input_tokens or prompt_tokens(request)
            return (
                tokens_in * strongest.price_in + answer.usage.output_tokens * strongest.price_out
            ) / 1e6
        return strongest.cost(request) or 0.0

    def add(
        self, request: ChatRequest, spent: Sequence[ChatResult], members: Sequence[Member]
    ) -> None:
        cost = sum(r.cost_usd for r in spent)
        alone = self.strongest_alone(request, spent, members)
        with self._lock:
            self._calls.append((cost, alone, len(spent) > 1))
            calls = len(self._calls)
            total = sum(c for c, _, _ in self._calls)
            baseline = sum(a for _, a, _ in self._calls)
            escalated = sum(1 for _, _, e in self._calls if e)
            dearer = calls >= self.min_calls and baseline > 0 and total > baseline
            fire = dearer and not self._firing
            self._firing = dearer
        if fire:
            record(
                "quality_alert",
                {
                    "subject": self.router,
                    "guard": "cascade_cost",
                    "router": self.router,
                    "window": calls,
                    "escalation_rate": round(escalated / calls, 4),
                    "cost_usd": round(total, 9),
                    "strongest_alone_usd": round(baseline, 9),
                    "cost_ratio": round(total / baseline, 4),
                    "message": (
                        f"cascade '{self.router}' cost {total / baseline:.0%} of its strongest "
                        f"model alone over its last {calls} calls ({escalated} escalated): its "
                        "validators reject too much for this traffic"
                    ),
                },
            )

    @property
    def ratio(self) -> float | None:
        """Spent over strongest-alone, on the current window (``None`` before any call)."""
        with self._lock:
            baseline = sum(a for _, a, _ in self._calls)
            return sum(c for c, _, _ in self._calls) / baseline if baseline else None
