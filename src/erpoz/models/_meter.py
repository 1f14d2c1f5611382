"""Every leaf model call is metered: budget checked before, a ``model_called`` event after.

Routers never see this: the registry wraps each configured model in a :class:`Metered`, and the
recorder of the step that made the call travels with it in a context variable, so a router's
inner calls land in the same run's log.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceeded, ModelError
from ._limits import Admitted, RateGate
from ._protocol import ChatModel
from ._types import ChatRequest, ChatResult, ModelSpec, StreamChunk, Usage

if TYPE_CHECKING:
    from ..store import BudgetLedger, Hold

Emit = Callable[[str, Mapping[str, Any]], None]


@dataclass(slots=True)
class Recorder:
    """Where a call's events go (a step's ``ctx.emit``), for which run and tenant, under which
    budget."""

    emit: Emit
    run_id: str = ""
    budget: Budget | None = None
    tenant: str = "-"


_RUNS_KEPT = 10_000

_current: ContextVar[Recorder | None] = ContextVar("erpoz_model_recorder", default=None)


def current_recorder() -> Recorder | None:
    return _current.get()


def record(kind: str, data: Mapping[str, Any]) -> None:
    """Record an event in the calling step's run, when there is one (routers use this)."""
    rec = _current.get()
    if rec is not None:
        rec.emit(kind, data)


@dataclass(slots=True)
class Budget:
    """Cost ceilings in USD: per run, for the whole project and per tenant.

    With a ``ledger`` (the run store, set by ``erpoz run``, ``erpoz worker`` and ``erpoz
    serve``) the project and tenant ceilings hold across every process of the store: each call
    reserves its estimate there before it is sent and settles to its cost after. Without one
    they count this process's spend (plus ``project_spent_usd`` set at start). A run's own
    spend continues from its log when it is resumed (:meth:`restore`)."""

    per_run_usd: float | None = None
    per_project_usd: float | None = None
    project_spent_usd: float = 0.0
    per_model_spent: dict[str, float] = field(default_factory=dict)
    run_spent: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """Spend per run id in this process (every step, retry and ``ctx.models`` of a run share
    it); the most recent runs are kept."""
    per_tenant_usd: float | None = None
    """Every tenant's ceiling (a run's ``tenant`` tag; a run without one is tenant ``-``)."""
    tenants: dict[str, float] = field(default_factory=dict)
    """Ceilings of named tenants, in place of ``per_tenant_usd``."""
    tenant_spent: dict[str, float] = field(default_factory=dict)
    ledger: BudgetLedger | None = None
    hold_s: float = 900.0
    """How long a reservation lasts without being settled (a process killed mid-call): then it
    is charged at its estimate. Holds of a dead process on this host go at once."""

    def spent_by(self, run_id: str) -> float:
        return self.run_spent.get(run_id, 0.0)

    def tenant_limit(self, tenant: str) -> float | None:
        return self.tenants.get(tenant, self.per_tenant_usd)

    def restore(self, run_id: str, events: Iterable[Any]) -> None:
        """Continue run ``run_id``'s count from what its log (``events``) says it spent: the
        ``cost_usd`` of its ``model_called`` events (a resumed run, a run a worker took
        over)."""
        spent = sum(
            float(e.data.get("cost_usd") or 0.0) for e in events if e.kind == "model_called"
        )
        if spent > self.run_spent.get(run_id, 0.0):
            self.run_spent[run_id] = spent
            self._trim()

    def check(self, rec: Recorder | None, model: str, estimate: float) -> None:
        """Refuse a call that would go over a ceiling this process keeps: the run's, and,
        without a ledger, the project's and the tenant's."""
        if (
            self.per_run_usd is not None
            and rec is not None
            and self.spent_by(rec.run_id) + estimate > self.per_run_usd
        ):
            raise BudgetExceeded(
                f"this call (est. ${estimate:.6f}) would take run {rec.run_id or '?'} over "
                f"its budget of ${self.per_run_usd:.6f} (spent ${self.spent_by(rec.run_id):.6f}); "
                "nothing was sent",
                model=model,
            )
        if self.ledger is not None:
            return
        if (
            self.per_project_usd is not None
            and self.project_spent_usd + estimate > self.per_project_usd
        ):
            raise BudgetExceeded(
                f"this call (est. ${estimate:.6f}) would take the project over its budget of "
                f"${self.per_project_usd:.6f} (spent ${self.project_spent_usd:.6f}); "
                "nothing was sent",
                model=model,
            )
        tenant = rec.tenant if rec is not None else "-"
        limit = self.tenant_limit(tenant)
        spent = self.tenant_spent.get(tenant, 0.0)
        if limit is not None and spent + estimate > limit:
            raise BudgetExceeded(
                f"this call (est. ${estimate:.6f}) would take tenant {tenant} over its budget "
                f"of ${limit:.6f} (spent ${spent:.6f}); nothing was sent",
                model=model,
            )

    async def reserve(self, rec: Recorder | None, model: str, estimate: float) -> Hold | None:
        """Hold ``estimate`` in the ledger against the project's and the tenant's ceilings;
        ``BudgetExceeded`` when either would be passed. ``None``: nothing to hold."""
        tenant = rec.tenant if rec is not None else "-"
        tenant_usd = self.tenant_limit(tenant)
        if self.ledger is None or estimate <= 0:
            return None
        if self.per_project_usd is None and tenant_usd is None:
            return None
        hold = await self.ledger.reserve(
            estimate,
            project_usd=self.per_project_usd,
            tenant=tenant,
            tenant_usd=tenant_usd,
            ttl_s=self.hold_s,
        )
        over = hold.refused
        if over is None:
            return hold
        what = "the project" if over.tenant is None else f"tenant {over.tenant}"
        raise BudgetExceeded(
            f"this call (est. ${estimate:.6f}) would take {what} over its budget of "
            f"${over.limit_usd or 0.0:.6f} (spent ${over.spent_usd:.6f}, "
            f"${over.reserved_usd:.6f} held by calls in flight); nothing was sent",
            model=model,
        )

    async def settle(self, hold: Hold | None, cost: float) -> None:
        if hold is not None and self.ledger is not None:
            await self.ledger.settle(hold, cost)

    def add(self, model: str, cost: float, run_id: str = "", tenant: str = "-") -> None:
        self.project_spent_usd += cost
        self.per_model_spent[model] = self.per_model_spent.get(model, 0.0) + cost
        self.tenant_spent[tenant] = self.tenant_spent.get(tenant, 0.0) + cost
        if run_id:
            self.run_spent[run_id] = self.run_spent.pop(run_id, 0.0) + cost
            self._trim()

    def _trim(self) -> None:
        if len(self.run_spent) > _RUNS_KEPT:
            self.run_spent.popitem(last=False)


def count_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token) for budgets before a call and for
    providers that report no usage."""
    return max(1, (len(text) + 3) // 4)


class Metered:
    """A configured chat model with accounting: checks budgets, records ``model_called``."""

    def __init__(
        self,
        inner: ChatModel,
        spec: ModelSpec,
        budget: Budget | None = None,
        tokenizer: Callable[[str], int] = count_tokens,
        rates: RateGate | None = None,
    ) -> None:
        self.inner = inner
        self.spec = spec
        self.name = spec.name
        self.budget = budget
        self._count = tokenizer
        # a model with limits always has a gate: this process's own unless one is given
        self.rates = (rates or RateGate()) if spec.limits is not None else None

    def estimate(self, request: ChatRequest) -> float:
        """Expected cost of a call before it is made (routers compare models with this)."""
        out = request.max_tokens if request.max_tokens is not None else 256
        return self.spec.cost(Usage(self._count(request.prompt_text), out))

    def _tokens(self, request: ChatRequest) -> int:
        out = request.max_tokens if request.max_tokens is not None else 256
        return self._count(request.prompt_text) + out

    async def _check(
        self, request: ChatRequest
    ) -> tuple[Recorder | None, Hold | None, Admitted | None]:
        """Admit the call (or record why not, and raise): the run's recorder, the budget hold
        and the rate-limit grants to settle once the call is over."""
        rec = _current.get()
        admitted: Admitted | None = None
        try:
            if self.rates is not None and self.spec.limits is not None:
                admitted = await self.rates.admit(
                    self.name, self.spec.limits, self._tokens(request)
                )
            hold = await self._admit(rec, request)
        except ModelError as exc:
            if admitted is not None and self.rates is not None:  # nothing was sent
                await self.rates.give_back(admitted)
            if rec is not None:
                rec.emit(
                    "model_called",
                    {
                        "model": self.name,
                        "provider": self.spec.provider,
                        "status": "refused",
                        "error": f"{type(exc).__name__}: {exc}",
                        "type": type(exc).__name__,
                        "retryable": False,
                        "cost_usd": 0.0,
                    },
                )
            raise
        return rec, hold, admitted

    async def _release(
        self, admitted: Admitted | None, request: ChatRequest, result: ChatResult | None
    ) -> None:
        """Settle the rate-limit grants to what the call used (its estimate when unknown)."""
        if admitted is None or self.rates is None:
            return
        used = self._tokens(request)
        if result is not None and (result.usage.input_tokens or result.usage.output_tokens):
            used = result.usage.input_tokens + result.usage.output_tokens
        await self.rates.settle(admitted, used)

    async def _admit(self, rec: Recorder | None, request: ChatRequest) -> Hold | None:
        """Refuse before sending: wrong input kinds, too long a prompt, over budget."""
        missing = request.modalities - self.spec.modalities
        if missing:
            raise ModelError(
                f"cannot take {', '.join(sorted(missing))} input (modalities: "
                f"{', '.join(sorted(self.spec.modalities))})",
                model=self.name,
                code="unsupported_modality",
            )
        prompt_tokens = self._count(request.prompt_text)
        if prompt_tokens > self.spec.context_window:
            raise ModelError(
                f"the prompt has ~{prompt_tokens} tokens, more than the context window "
                f"({self.spec.context_window}); shorten it or route to a larger model",
                model=self.name,
                code="context_length_exceeded",
            )
        budget = self.budget or (rec.budget if rec else None)
        if budget is None:
            return None
        estimate = self.estimate(request)
        budget.check(rec, self.name, estimate)
        return await budget.reserve(rec, self.name, estimate)

    async def _settle(self, rec: Recorder | None, hold: Hold | None, cost: float) -> None:
        if hold is not None:
            budget = self.budget or (rec.budget if rec else None)
            assert budget is not None
            await budget.settle(hold, cost)

    def _account(
        self,
        rec: Recorder | None,
        request: ChatRequest,
        result: ChatResult,
        t0: float,
        admitted: Admitted | None = None,
    ) -> ChatResult:
        usage = result.usage
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            usage = Usage(self._count(request.prompt_text), self._count(result.text))
        cost = self.spec.cost(usage)
        latency = time.perf_counter() - t0
        if rec is not None:
            rec.emit(
                "model_called",
                {
                    "model": self.name,
                    "provider": self.spec.provider,
                    "answered_by": result.model,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cost_usd": round(cost, 9),
                    "latency_ms": round(latency * 1000, 3),
                    "status": "ok",
                    "tool_calls": len(result.tool_calls),
                    **(
                        {"rate_wait_s": round(admitted.waited_s, 3)}
                        if admitted and admitted.waited_s
                        else {}
                    ),
                },
            )
        budget = self.budget or (rec.budget if rec else None)
        if budget is not None:
            budget.add(self.name, cost, rec.run_id if rec else "", rec.tenant if rec else "-")
        return replace(result, usage=usage, cost_usd=cost, latency_s=latency)

    def _failed(self, rec: Recorder | None, exc: BaseException, t0: float) -> None:
        if rec is None:
            return
        err = exc if isinstance(exc, ModelError) else None
        rec.emit(
            "model_called",
            {
                "model": self.name,
                "provider": self.spec.provider,
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "type": type(exc).__name__,
                "retryable": bool(err and err.retryable),
                "http_status": err.status if err else None,
                "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
                "cost_usd": 0.0,
            },
        )

    async def generate(self, request: ChatRequest) -> ChatResult:
        rec, hold, admitted = await self._check(request)
        t0 = time.perf_counter()
        # settled at: the cost; 0 for a call that failed; the estimate for one cut off (a
        # timeout, a cancel), which may have been paid for
        cost = hold.amount_usd if hold is not None else 0.0
        result: ChatResult | None = None
        try:
            try:
                result = await self.inner.generate(request)
            except Exception as exc:
                cost = 0.0
                self._failed(rec, exc, t0)
                raise
            result = self._account(rec, request, result, t0, admitted)
            cost = result.cost_usd
            return result
        finally:
            await self._settle(rec, hold, cost)
            await self._release(admitted, request, result)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        rec, hold, admitted = await self._check(request)
        t0 = time.perf_counter()
        parts: list[str] = []
        final: ChatResult | None = None
        cost = hold.amount_usd if hold is not None else 0.0  # as in generate
        try:
            try:
                async for chunk in self.inner.stream(request):
                    if chunk.result is not None:
                        final = chunk.result
                        continue
                    parts.append(chunk.text)
                    yield chunk
            except Exception as exc:
                cost = 0.0
                self._failed(rec, exc, t0)
                raise
            if final is None:
                final = ChatResult("".join(parts), self.name)
            result = self._account(rec, request, final, t0, admitted)
            cost = result.cost_usd
            yield StreamChunk("", result)
        finally:
            await self._settle(rec, hold, cost)
            await self._release(admitted, request, final)


def bind(recorder: Recorder) -> Any:
    """Make ``recorder`` current for the calls made in this context; returns the reset token."""
    return _current.set(recorder)


def unbind(token: Any) -> None:
    _current.reset(token)


async def spent_in_store(store: Any) -> float:
    """What the runs in ``store`` have spent on models (the ``cost_usd`` of ``model_called``
    events), so a project budget holds across processes."""
    total = 0.0
    for info in await store.list_runs(limit=10**9):
        for event in await store.events(info.run_id):
            if event.kind == "model_called":
                total += float(event.data.get("cost_usd") or 0.0)
    return total
