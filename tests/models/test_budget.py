"""Budgets from the log: a run's spend goes on across resume, project and tenant ceilings are
kept in the store's ledger (reserve before a call, settle after), so that hubs in different
processes (here: different hubs on one store, as two processes would have) share them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, open_store, step
from erpoz.engine import Decision
from erpoz.errors import BudgetExceeded, ConfigError
from erpoz.models import Budget, ChatResult, ModelHub, ModelSpec, Usage, parse_config
from erpoz.project import build_hub
from erpoz.store import Store
from erpoz.testing import FunctionModel

# $1 per 1,000 tokens in and out: "hello" is 2 prompt tokens; max_tokens=8 -> estimate $0.010
SPEC = ModelSpec("paid", "test", price_in=1000.0, price_out=1000.0)
ESTIMATE = 0.010


def hub_with(budget: Budget, store: Store | None = None, **reply: Any) -> ModelHub:
    """A hub whose model answers with a usage of exactly its estimate (2 in, 8 out tokens), as a
    process of the project would build it; ``store`` is its ledger when given."""
    hub = ModelHub(budget=budget)
    usage = reply.get("usage", Usage(2, 8))
    hub.add(FunctionModel(lambda r: ChatResult("ok", "paid", usage), name="paid"), SPEC)
    if store is not None:
        budget.ledger = store  # type: ignore[assignment]
    return hub


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("paid", q, max_tokens=8)).text


one_call = Flow("one_call", inputs={"q": str})
one_call.add(ask, q=one_call.input("q"))


@step
async def first(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("paid", q, max_tokens=8)).text


@step(review=True)
def checked(text: str) -> str:
    return text


@step
async def second(text: str, ctx: Context) -> str:
    try:
        return (await ctx.models.chat("paid", "hello", max_tokens=8)).text
    except BudgetExceeded as exc:
        return f"refused: {exc}"


paused = Flow("paused", inputs={"q": str})
paused.add(second, text=paused.add(checked, text=paused.add(first, q=paused.input("q"))))


def test_a_resumed_run_goes_on_spending_from_what_its_log_says(tmp_path: Path) -> None:
    """The run spends $0.010, waits for review, and is resumed by another process (a fresh hub):
    its per-run ceiling of $0.015 leaves no room for a second call. Before, the count started at
    0 in the resuming process and the call was made."""
    db = tmp_path / "runs.db"

    async def start() -> str:
        store = open_store(db)
        hub = hub_with(Budget(per_run_usd=0.015))
        result = await Engine(store, services={ModelHub: hub}).run(paused, {"q": "hello"})
        await store.close()
        assert result.status == "waiting"
        return result.run_id

    async def resume(run_id: str) -> str:
        store = open_store(db)
        hub = hub_with(Budget(per_run_usd=0.015))  # this process has spent nothing
        result = await Engine(store, services={ModelHub: hub}).resume(
            run_id, paused, decision=Decision("approve")
        )
        await store.close()
        assert result.status == "succeeded"
        return str(result.output)

    run_id = asyncio.run(start())
    output = asyncio.run(resume(run_id))
    assert output.startswith("refused: model 'paid': this call (est. $0.010000) would take run")
    assert "over its budget of $0.015000 (spent $0.010000)" in output


def run_as(hub: ModelHub, store: Store, tenant: str) -> Any:
    return Engine(store, services={ModelHub: hub}).run(
        one_call, {"q": "hello"}, tags={"tenant": tenant}
    )


def test_two_processes_share_the_project_budget_through_the_ledger(tmp_path: Path) -> None:
    """Two hubs on one store (two processes of the project) each allow what the store's
    ledger leaves: $0.035 fits three calls of $0.010 between them, not three each."""

    async def main() -> list[str]:
        store = open_store(tmp_path / "runs.db")
        a = hub_with(Budget(per_project_usd=0.035), store)
        b = hub_with(Budget(per_project_usd=0.035), store)
        outcomes = []
        for hub in (a, b, a, b, a, b):
            result = await run_as(hub, store, "-")
            outcomes.append(result.status if result.ok else str(result.error))
        (project,) = await store.budget_scopes()  # type: ignore[attr-defined]
        assert (round(project.spent_usd, 9), project.reserved_usd) == (0.03, 0.0)
        await store.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes[:3] == ["succeeded"] * 3
    for refused in outcomes[3:]:
        assert "BudgetExceeded" in refused and "would take the project over its budget" in refused
        assert "(spent $0.030000, $0.000000 held by calls in flight)" in refused


def test_tenants_have_their_own_budgets(tmp_path: Path) -> None:
    budget = Budget(per_tenant_usd=0.015, tenants={"acme": 0.025})

    async def main() -> dict[str, list[bool]]:
        store = open_store(tmp_path / "runs.db")
        hub = hub_with(budget, store)
        out: dict[str, list[bool]] = {}
        for tenant in ("acme", "beta", "acme", "beta", "acme", "-", "-"):
            out.setdefault(tenant, []).append((await run_as(hub, store, tenant)).ok)
        spent = {s.scope: round(s.spent_usd, 9) for s in await store.budget_scopes()}  # type: ignore[attr-defined]
        await store.close()
        assert spent == {"tenant:-": 0.01, "tenant:acme": 0.02, "tenant:beta": 0.01}
        return out

    assert asyncio.run(main()) == {
        "acme": [True, True, False],  # its own ceiling: $0.025
        "beta": [True, False],  # the default: $0.015
        "-": [True, False],  # runs without a tenant tag share tenant "-"
    }


def test_without_a_ledger_tenant_budgets_count_in_the_process() -> None:
    hub = hub_with(Budget(per_tenant_usd=0.015))

    async def main() -> list[bool]:
        store = open_store("memory")  # the engine's store; the hub was given no ledger
        return [(await run_as(hub, store, t)).ok for t in ("acme", "acme", "beta")]

    assert asyncio.run(main()) == [True, False, True]


def test_a_failed_call_is_settled_at_nothing_and_a_cut_off_one_at_its_estimate() -> None:
    async def main() -> None:
        store = open_store("memory")
        budget = Budget(per_project_usd=1.0)
        hub = hub_with(budget, store)
        calls = {"n": 0}

        async def slow_then_broken(request: Any) -> str:
            calls["n"] += 1
            if calls["n"] == 1:
                await asyncio.sleep(30)  # cut off by the step's timeout
            raise RuntimeError("upstream broke")

        broken = ModelHub(budget=budget)
        broken.add(FunctionModel(slow_then_broken, name="paid"), SPEC)

        @step(timeout=0.2)
        async def capped(q: str, ctx: Context) -> str:
            return (await ctx.models.chat("paid", q, max_tokens=8)).text

        flow = Flow("capped", inputs={"q": str})
        flow.add(capped, q=flow.input("q"))
        engine = Engine(store, services={ModelHub: broken})
        assert not (await engine.run(flow, {"q": "hello"})).ok  # timed out mid-call
        assert not (await engine.run(flow, {"q": "hello"})).ok  # the provider failed
        assert (await run_as(hub, store, "-")).ok  # a call that went through: $0.010
        (project,) = await store.budget_scopes()  # type: ignore[attr-defined]
        # the cut-off call may have been paid for: its estimate; the failed one: nothing
        assert (round(project.spent_usd, 9), project.reserved_usd) == (0.02, 0.0)

    asyncio.run(main())


def test_a_refused_tenant_call_is_recorded_and_nothing_is_sent(tmp_path: Path) -> None:
    sent: list[Any] = []

    async def main() -> list[Any]:
        store = open_store(tmp_path / "runs.db")
        hub = ModelHub(budget=Budget(tenants={"free": 0.005}))
        hub.add(FunctionModel(lambda r: sent.append(r) or "ok", name="paid"), SPEC)
        hub.budget.ledger = store  # type: ignore[union-attr]
        result = await run_as(hub, store, "free")
        events = await store.events(result.run_id)
        await store.close()
        assert not result.ok and "would take tenant free over its budget of $0.005000" in str(
            result.error
        )
        return [e.data for e in events if e.kind == "model_called"]

    calls = asyncio.run(main())
    assert [c["status"] for c in calls] == ["refused"] and sent == []


def test_tenant_budgets_in_erpoz_yaml(tmp_path: Path) -> None:
    config = parse_config(
        "models:\n"
        "  paid: {provider: test, price: {input: 1000, output: 1000}}\n"
        "budget:\n"
        "  per_project_usd: 20\n"
        "  per_tenant_usd: 0.5\n"
        "  tenants: {acme: 2, free-trial: 0.1}\n",
        file="erpoz.yaml",
        extra_providers={"test": lambda spec: FunctionModel(lambda r: "ok", name=spec.name)},
    )
    hub = build_hub(config, extra_providers={"test": lambda spec: FunctionModel(lambda r: "x")})
    assert hub.budget is not None
    assert (hub.budget.per_project_usd, hub.budget.per_tenant_usd) == (20, 0.5)
    assert hub.budget.tenant_limit("acme") == 2 and hub.budget.tenant_limit("other") == 0.5
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "budget:\n  tenants:\n    acme: -1\n",
            file="erpoz.yaml",
        )
    assert caught.value.line == 3
    assert "budget.tenants: 'acme' must be greater than or equal to 0" in str(caught.value)
