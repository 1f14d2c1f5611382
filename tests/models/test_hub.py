"""ctx.models as a step uses it: metering, budgets, recording, structured output, test doubles."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import erpoz
from erpoz import Context, Engine, Flow, step
from erpoz.errors import ConfigError, ModelError
from erpoz.models import Budget, ChatResult, ImagePart, Message, ModelHub, ModelSpec, Usage
from erpoz.store import MemoryStore
from erpoz.testing import FunctionModel, ScriptedModel


def run_flow(hub: ModelHub, fn: Any, **inputs: Any) -> tuple[Any, list[Any]]:
    flow = Flow("m", inputs={k: type(v) for k, v in inputs.items()})
    flow.add(fn, **{k: flow.input(k) for k in inputs})

    async def main() -> tuple[Any, list[Any]]:
        store = MemoryStore()
        result = await Engine(store, services={ModelHub: hub}).run(flow, inputs)
        return result, await store.events(result.run_id)

    return asyncio.run(main())


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("m", q)).text


def test_each_call_is_recorded_with_tokens_and_cost() -> None:
    hub = ModelHub()
    reply = ChatResult("fine", "up-1", Usage(1000, 500))
    hub.add(ScriptedModel([reply]), ModelSpec("m", "test", price_in=2.0, price_out=10.0))
    result, events = run_flow(hub, ask, q="how are you")
    assert result.output == "fine"
    (call,) = [e for e in events if e.kind == "model_called"]
    assert call.step == "ask"
    assert call.data["input_tokens"] == 1000 and call.data["output_tokens"] == 500
    assert call.data["cost_usd"] == pytest.approx((1000 * 2.0 + 500 * 10.0) / 1e6)
    assert call.data["answered_by"] == "up-1"


def test_tokens_are_counted_when_the_provider_reports_none() -> None:
    hub = ModelHub()
    hub.add(FunctionModel(lambda r: ChatResult("x" * 40, "f")), ModelSpec("m", "test"))
    _, events = run_flow(hub, ask, q="y" * 400)
    (call,) = [e for e in events if e.kind == "model_called"]
    assert call.data["input_tokens"] == 100 and call.data["output_tokens"] == 10


def test_a_failed_call_is_recorded_and_fails_the_step() -> None:
    hub = ModelHub()
    down = ModelError("upstream 503", model="m", retryable=True, status=503)
    hub.add(ScriptedModel([down]), ModelSpec("m", "test"))
    result, events = run_flow(hub, ask, q="hi")
    assert result.status == "failed" and "upstream 503" in (result.error or "")
    (call,) = [e for e in events if e.kind == "model_called"]
    assert call.data["status"] == "error" and call.data["retryable"] is True
    assert call.data["http_status"] == 503


def test_run_budget_refuses_before_sending() -> None:
    model = ScriptedModel(["a", "b"])
    hub = ModelHub(budget=Budget(per_run_usd=0.001))
    hub.add(model, ModelSpec("m", "test", price_in=1000.0, price_out=1000.0))
    result, events = run_flow(hub, ask, q="hello")
    assert result.status == "failed" and "budget" in (result.error or "")
    assert model.calls == []  # nothing was sent
    assert any(e.kind == "step_failed" and "BudgetExceeded" in e.data["error"] for e in events)


def test_project_budget_counts_across_runs() -> None:
    hub = ModelHub(budget=Budget(per_project_usd=0.0005))
    hub.add(
        FunctionModel(lambda r: ChatResult("ok", "f", Usage(100, 10))),
        ModelSpec("m", "test", price_in=1.0, price_out=1.0),
    )
    outcomes = [run_flow(hub, ask, q="q")[0].status for _ in range(8)]
    assert outcomes[0] == "succeeded" and outcomes[-1] == "failed"
    assert hub.budget is not None and hub.budget.project_spent_usd <= 0.0005 + 1e-9


def test_unknown_model_and_wrong_modality_are_clear_errors() -> None:
    hub = ModelHub()
    hub.add(FunctionModel(lambda r: "x"), ModelSpec("text-only", "test"))

    async def main() -> None:
        models = hub.unbound()
        with pytest.raises(ModelError, match=r"unknown model 'nope' \(models: text-only\)"):
            await models.chat("nope", "hi")
        picture = Message.user("what is this?", ImagePart(data=b"\x89PNG..."))
        with pytest.raises(ModelError, match="cannot take image input"):
            await models.chat("text-only", [picture])

    asyncio.run(main())


def test_prompt_longer_than_the_context_window_is_refused() -> None:
    model = FunctionModel(lambda r: "x")
    hub = ModelHub()
    hub.add(model, ModelSpec("small", "test", context_window=10))

    async def main() -> None:
        with pytest.raises(ModelError, match="context window"):
            await hub.unbound().chat("small", "word " * 100)

    asyncio.run(main())
    assert model.calls == []


class Invoice(BaseModel):
    number: str
    total: float


def test_structured_output_re_asks_until_it_fits() -> None:
    model = ScriptedModel(['{"number": "INV-1"}', '{"number": "INV-1", "total": 49.0}'])
    hub = ModelHub()
    hub.add(model, ModelSpec("m", "test"))

    async def main() -> Invoice:
        return await hub.unbound().structured("m", "extract", Invoice, retries=1)

    assert asyncio.run(main()) == Invoice(number="INV-1", total=49.0)
    assert model.calls[0].response_schema is not None
    assert "does not fit" in model.calls[1].messages[-1].text


def test_structured_output_gives_up_with_a_model_error() -> None:
    hub = ModelHub()
    hub.add(ScriptedModel(["not json", "still not"]), ModelSpec("m", "test"))

    async def main() -> Invoice:
        return await hub.unbound().structured("m", "extract", Invoice, retries=1)

    with pytest.raises(ModelError, match="does not fit Invoice after 2 tries"):
        asyncio.run(main())


def test_streaming_is_metered_once_with_the_whole_answer() -> None:
    hub = ModelHub()
    hub.add(FunctionModel(lambda r: "one two three"), ModelSpec("m", "test"))

    @step
    async def streamed(q: str, ctx: Context) -> str:
        parts = []
        async for chunk in ctx.models.stream("m", q):
            if chunk.result is None:
                parts.append(chunk.text)
        return "".join(parts).strip()

    result, events = run_flow(hub, streamed, q="count")
    assert result.output == "one two three"
    assert len([e for e in events if e.kind == "model_called"]) == 1


def test_scripted_model_says_when_its_script_runs_out() -> None:
    model = ScriptedModel(["only"])

    async def main() -> None:
        hub = ModelHub()
        hub.add(model, ModelSpec("m", "test"))
        await hub.unbound().chat("m", "1")
        with pytest.raises(ModelError, match="script exhausted"):
            await hub.unbound().chat("m", "2")

    asyncio.run(main())


def test_truncate_drops_old_turns_then_cuts_to_fit_the_window() -> None:
    model = FunctionModel(lambda r: "ok")
    hub = ModelHub()
    hub.add(model, ModelSpec("small", "test", context_window=300))

    @step
    async def chatty(q: str, ctx: Context) -> str:
        history = [Message.system("be brief")]
        history += [Message.user("old turn " * 100), Message.assistant("old answer " * 100)]
        history.append(Message.user(q))
        return (await ctx.models.chat("small", history, max_tokens=50, truncate=True)).text

    result, events = run_flow(hub, chatty, q="latest " * 300)
    assert result.output == "ok"
    sent = model.calls[0].messages
    assert sent[0].text == "be brief" and sent[-1].text.startswith("latest")
    assert sum(len(m.text) for m in sent) <= 250 * 4
    (cut,) = [e.data for e in events if e.kind == "context_truncated"]
    assert cut["dropped_messages"] == 2 and cut["cut_chars"] > 0
    assert cut["tokens_after"] <= 250


def test_run_budget_is_shared_by_every_call_and_step_of_a_run() -> None:
    hub = ModelHub(budget=Budget(per_run_usd=0.0025))
    model = FunctionModel(lambda r: ChatResult("ok", "f", Usage(1000, 0)))
    hub.add(model, ModelSpec("m", "test", price_in=1.0, price_out=0.0))

    @step
    async def twice(q: str, ctx: Context) -> str:
        await ctx.models.chat("m", q, max_tokens=0)
        return (await ctx.models.chat("m", q, max_tokens=0)).text  # a fresh ctx.models

    flow = Flow("b", inputs={"q": str})
    first = flow.add(twice, id="first", q=flow.input("q"))
    flow.add(twice, id="second", q=first)

    async def main() -> tuple[Any, list[Any]]:
        store = MemoryStore()
        result = await Engine(store, services={ModelHub: hub}).run(flow, {"q": "x"})
        return result, await store.events(result.run_id)

    result, events = asyncio.run(main())
    # each call costs $0.001 (estimated ~$0): after 3 calls the run is over $0.0025
    assert result.status == "failed" and result.failed_step == "second"
    assert len(model.calls) == 3
    refused = [e.data for e in events if e.kind == "model_called" and e.data["status"] == "refused"]
    assert len(refused) == 1 and "BudgetExceeded" in refused[0]["error"]


@step
async def unknown_model(q: str, ctx: Context) -> str:
    try:
        await ctx.models.chat("no-such-model", q)
    except ModelError as exc:
        return str(exc)
    return "unexpected"


def test_erpoz_run_gives_steps_the_projects_models_else_the_offline_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ERPOZ_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no erpoz.yaml here
    flow = Flow("d", inputs={"q": str})
    flow.add(unknown_model, q=flow.input("q"))
    out = erpoz.run(flow, q="x").output
    assert "unknown model 'no-such-model'" in out
    assert "reader" in out and "default" in out
    project = tmp_path / "elsewhere.yaml"
    project.write_text("models:\n  mine: {provider: extractive}\n")
    out = erpoz.run(flow, q="x", config=project).output
    assert "unknown model 'no-such-model'" in out and "mine" in out and "reader" not in out


def test_erpoz_run_with_services_reads_no_project_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "erpoz.yaml").write_text("models: [not, a, mapping]\n")  # never read
    monkeypatch.delenv("ERPOZ_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    hub = ModelHub()
    hub.add(FunctionModel(lambda r: "only mine", name="m"), ModelSpec("m", "test"))
    flow = Flow("d", inputs={"q": str})
    flow.add(unknown_model, q=flow.input("q"))
    out = erpoz.run(flow, q="x", services={ModelHub: hub}).output
    assert "unknown model 'no-such-model'" in out and "reader" not in out
    with pytest.raises(ConfigError, match=r"config .* or services, not both"):
        erpoz.run(flow, q="x", services={ModelHub: hub}, config=tmp_path / "erpoz.yaml")


def test_an_engine_given_no_hub_has_no_models_and_says_how_to_give_them() -> None:
    flow = Flow("d", inputs={"q": str})
    flow.add(unknown_model, q=flow.input("q"))
    result = asyncio.run(Engine(MemoryStore()).run(flow, {"q": "x"}))
    assert result.status == "failed"
    assert "this engine has no models" in str(result.error)
    assert "services={ModelHub: hub}" in str(result.error)
