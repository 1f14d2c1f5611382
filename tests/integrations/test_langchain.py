"""erpoz.integrations.langchain against the real libraries: LangChain chat models as erpoz
models (``ChatOpenAI`` of langchain-openai talking to erpoz's local OpenAI-compatible stub
server over HTTP, and langchain-core's offline ``GenericFakeChatModel``), LangChain tools as
erpoz tools, and erpoz flows as LangChain Runnables."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool as lc_tool
from langchain_openai import ChatOpenAI

from erpoz import Context, Engine, Flow, RunResult, StepFailed, step
from erpoz.audit import verify
from erpoz.errors import ConfigError, FlowError, ModelError, WaitingForReview
from erpoz.guards import Check, Guardrails, PIIDetector
from erpoz.integrations.langchain import (
    LangChainChat,
    as_runnable,
    tool_from_langchain,
)
from erpoz.models import ModelHub, ModelSpec, block_real_providers
from erpoz.models._config import parse_config
from erpoz.policy import Policy, Rule
from erpoz.project import build_hub
from erpoz.store import MemoryStore, Store
from erpoz.testing import Behaviour, OpenAIStubServer
from erpoz.tools import ToolError, ToolPolicy, ToolRegistry


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(stub: OpenAIStubServer) -> None:
    stub.reset()


def project(stub: OpenAIStubServer, extra: str = "") -> str:
    return (
        "models:\n"
        "  lc:\n"
        "    provider: langchain\n"
        "    params:\n"
        "      factory: langchain_openai:ChatOpenAI\n"
        f"      kwargs: {{base_url: '{stub.base_url}', api_key: sk-local, model: stub-model,"
        " max_retries: 0}\n"
        "    price: {input: 1.0, output: 2.0}\n"
        "    context_window: 4096\n" + extra
    )


@step
async def ask(question: str, ctx: Context) -> str:
    return (await ctx.models.chat("lc", question)).text


@step
async def ask_default(question: str, ctx: Context) -> str:
    return (await ctx.models.chat("default", question)).text


def one_step(fn: Any, name: str = "ask") -> Flow:
    flow = Flow(name, inputs={"question": str})
    flow.add(fn, question=flow.input("question"))
    return flow


#: One event loop for the module: ChatOpenAI keeps a process-wide async HTTP client whose
#: connections belong to the loop that opened them (as in a server, which has one loop).
LOOP = asyncio.Runner()


def run(engine: Engine, flow: Flow, question: str) -> tuple[RunResult, list[Any]]:
    async def main() -> tuple[RunResult, list[Any]]:
        result = await engine.run(flow, {"question": question})
        return result, await engine.store.events(result.run_id)

    return LOOP.run(main())


def of_kind(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind]


# --- a LangChain chat model as an erpoz model ------------------------------------------------
def test_provider_langchain_in_the_project_file_is_metered_and_recorded(
    stub: OpenAIStubServer,
) -> None:
    hub = build_hub(parse_config(project(stub)))
    result, events = run(Engine(MemoryStore(), services={ModelHub: hub}), one_step(ask), "hi")
    assert result.ok and result.output == "echo: hi"
    [sent] = stub.requests_to("chat")
    assert sent.body["model"] == "stub-model"
    assert sent.body["messages"] == [{"role": "user", "content": "hi"}]
    [called] = of_kind(events, "model_called")
    assert called["model"] == "lc" and called["provider"] == "langchain"
    assert called["status"] == "ok" and called["input_tokens"] > 0
    assert called["cost_usd"] == pytest.approx(
        (called["input_tokens"] * 1.0 + called["output_tokens"] * 2.0) / 1e6
    )


def test_a_budget_refuses_a_langchain_model_before_it_is_called(stub: OpenAIStubServer) -> None:
    hub = build_hub(parse_config(project(stub, "budget: {per_run_usd: 0.0000001}\n")))
    result, events = run(Engine(MemoryStore(), services={ModelHub: hub}), one_step(ask), "hi")
    assert result.status == "failed" and "BudgetExceeded" in (result.error or "")
    assert stub.requests_to("chat") == []  # nothing was sent
    [refused] = of_kind(events, "model_called")
    assert refused["status"] == "refused" and refused["model"] == "lc"


def test_a_router_falls_back_from_a_failing_langchain_model(stub: OpenAIStubServer) -> None:
    extra = (
        f"  backup: {{provider: openai, params: {{base_url: '{stub.base_url}', api_key: '',"
        " model: backup, max_retries: 0}}\n"
        "routers:\n"
        "  default: {type: fallback, models: [lc, backup]}\n"
    )
    hub = build_hub(parse_config(project(stub, extra)))
    stub.script("chat", Behaviour.error(503, "upstream down"))
    result, events = run(
        Engine(MemoryStore(), services={ModelHub: hub}), one_step(ask_default), "hello there"
    )
    assert result.ok, result.error
    calls = of_kind(events, "model_called")
    assert [(c["model"], c["status"]) for c in calls] == [("lc", "error"), ("backup", "ok")]
    assert result.output == "echo: hello there"
    assert calls[0]["http_status"] == 503 and calls[0]["retryable"] is True
    assert of_kind(events, "route_decided")


def test_guards_redact_what_reaches_a_langchain_model(stub: OpenAIStubServer) -> None:
    hub = build_hub(parse_config(project(stub)))
    rails = Guardrails(
        [Check(PIIDetector(), frozenset({"model_input"}))],
        Policy((Rule("mask", "redact", data="pii.email", at=frozenset({"model_input"})),)),
    )
    engine = Engine(MemoryStore(), services={ModelHub: hub, Guardrails: rails})
    result, events = run(engine, one_step(ask), "write to ana.silva@example.com")
    assert result.ok
    [sent] = stub.requests_to("chat")
    assert sent.body["messages"][0]["content"] == "write to [EMAIL]"
    assert of_kind(events, "guard_decided")[0]["action"] == "redact"


def test_provider_errors_keep_status_and_say_what(stub: OpenAIStubServer) -> None:
    spec = ModelSpec("lc", "langchain", params={})
    model = LangChainChat(
        ChatOpenAI(base_url=stub.base_url, api_key="x", model="m", max_retries=0), "lc"
    )
    stub.script("chat", Behaviour.error(429, "slow down"))
    from erpoz.models import ChatRequest, Message

    with pytest.raises(ModelError) as err:
        LOOP.run(model.generate(ChatRequest((Message.user("hi"),))))
    assert err.value.status == 429 and err.value.retryable and err.value.model == "lc"
    del spec


def test_project_file_mistakes_name_the_line(stub: OpenAIStubServer) -> None:
    text = (
        "models:\n  lc:\n    provider: langchain\n    params: {factory: ChatOpenAI, kwargs: {}}\n"
    )
    with pytest.raises(ConfigError) as err:
        build_hub(parse_config(text, file="erpoz.yaml"))
    assert err.value.line == 2 and "params.factory" in err.value.message
    with pytest.raises(ConfigError) as typo:
        build_hub(parse_config(text.replace("kwargs", "kwarg"), file="erpoz.yaml"))
    assert "unknown params kwarg" in typo.value.message
    bad = text.replace("ChatOpenAI", "erpoz.errors:ErpozError")
    hub = build_hub(parse_config(bad, file="erpoz.yaml"))
    result, _ = run(Engine(MemoryStore(), services={ModelHub: hub}), one_step(ask), "x")
    assert "not a LangChain BaseChatModel" in (result.error or "")


def test_a_real_langchain_model_refuses_to_run_while_real_providers_are_blocked() -> None:
    model = LangChainChat(ChatOpenAI(api_key="sk-nothing", model="gpt-4o-mini"), "remote")
    assert not model.local
    from erpoz.models import ChatRequest, Message

    block_real_providers(True)
    try:
        with pytest.raises(ModelError, match="real provider blocked"):
            asyncio.run(model.generate(ChatRequest((Message.user("hi"),))))
    finally:
        block_real_providers(False)
    assert LangChainChat(GenericFakeChatModel(messages=iter(["x"])), "fake").local


def test_streamed_tokens_of_a_langchain_model_reach_token_listeners(
    stub: OpenAIStubServer,
) -> None:
    hub = build_hub(parse_config(project(stub)))

    @step
    async def tell(question: str, ctx: Context) -> str:
        return "".join(
            [c.text async for c in ctx.models.stream("lc", question) if c.result is None]
        )

    engine = Engine(MemoryStore(), services={ModelHub: hub})
    got: list[tuple[str, str]] = []
    engine.token_listeners.append(lambda run_id, step, attempt, text: got.append((step, text)))
    result, events = run(engine, one_step(tell, "tell"), "a long story")
    assert result.ok and result.output == "echo: a long story"
    assert len(got) > 2 and "".join(t for _, t in got) == result.output
    assert {s for s, _ in got} == {"tell"}
    assert [e.kind for e in events if "token" in e.kind] == []
    assert stub.requests_to("chat")[0].body["stream"] is True


def test_no_token_leaves_when_guards_check_answers(stub: OpenAIStubServer) -> None:
    hub = build_hub(parse_config(project(stub)))
    rails = Guardrails(
        [Check(PIIDetector(), frozenset({"model_output"}))],
        Policy((Rule("mask", "redact", data="pii.email", at=frozenset({"model_output"})),)),
    )

    @step
    async def tell(question: str, ctx: Context) -> str:
        return "".join(
            [c.text async for c in ctx.models.stream("lc", question) if c.result is None]
        )

    engine = Engine(MemoryStore(), services={ModelHub: hub, Guardrails: rails})
    got: list[str] = []
    engine.token_listeners.append(lambda run_id, step, attempt, text: got.append(text))
    result, _ = run(engine, one_step(tell, "tell"), "a long story")
    assert result.ok and got == []


# --- LangChain tools as erpoz tools ----------------------------------------------------------
SENT: list[str] = []


@lc_tool
def lookup_invoice(invoice: int, detail: bool = False) -> dict[str, Any]:
    """Look an invoice up by its number."""
    return {"invoice": invoice, "total": 49.0, "detail": detail}


@lc_tool
def refund(invoice: int, amount: float) -> str:
    """Refund an amount of an invoice."""
    SENT.append(f"{invoice}:{amount}")
    return f"refunded {amount}"


@step
async def handle(question: str, ctx: Context) -> str:
    found = await ctx.tools.call("lookup_invoice", invoice=int(question))
    done = await ctx.tools.call("refund", invoice=found["invoice"], amount=found["total"])
    return str(done)


def tool_engine(policy: ToolPolicy) -> Engine:
    registry = ToolRegistry(
        [tool_from_langchain(lookup_invoice), tool_from_langchain(refund, side_effects=True)],
        policy,
    )
    return Engine(MemoryStore(), services={ToolRegistry: registry})


def test_langchain_tools_are_denied_unless_granted() -> None:
    SENT.clear()
    engine = tool_engine(ToolPolicy((Rule("reads", "allow", "lookup_*"),)))
    result, events = run(engine, one_step(handle, "billing"), "1042")
    assert result.status == "failed" and "PolicyViolation" in (result.error or "")
    assert SENT == []
    decisions = [(d["resource"], d["action"]) for d in of_kind(events, "policy_decided")]
    assert decisions == [("tool:lookup_invoice", "allow"), ("tool:refund", "deny")]
    [called] = of_kind(events, "tool_called")
    assert called["tool"] == "lookup_invoice" and called["arguments"] == {"invoice": 1042}


def test_granted_langchain_tools_run_recorded_with_idempotency_keys() -> None:
    SENT.clear()
    engine = tool_engine(
        ToolPolicy((Rule("reads", "allow", "lookup_*"), Rule("refunds", "allow", "refund")))
    )
    result, events = run(engine, one_step(handle, "billing"), "1042")
    assert result.ok and result.output == "refunded 49.0" and SENT == ["1042:49.0"]
    called = of_kind(events, "tool_called")
    assert [c["tool"] for c in called] == ["lookup_invoice", "refund"]
    assert "idempotency_key" in called[1] and "idempotency_key" not in called[0]
    assert asyncio.run(verify(engine.store, result.run_id)).ok


def test_a_review_rule_pauses_before_a_langchain_tool_runs() -> None:
    SENT.clear()
    engine = tool_engine(
        ToolPolicy((Rule("reads", "allow", "lookup_*"), Rule("refunds", "review", "refund")))
    )
    result, _ = run(engine, one_step(handle, "billing"), "7")
    assert result.status == "waiting" and SENT == []


def test_arguments_are_checked_against_the_tools_schema() -> None:
    @step
    async def wrong(question: str, ctx: Context) -> str:
        return str(await ctx.tools.call("lookup_invoice", invoice=1, colour="red"))

    registry = ToolRegistry(
        [tool_from_langchain(lookup_invoice)], ToolPolicy((Rule("all", "allow", "*"),))
    )
    engine = Engine(MemoryStore(), services={ToolRegistry: registry})
    result, _ = run(engine, one_step(wrong, "wrong"), "x")
    assert result.status == "failed" and "argument colour" in (result.error or "")
    assert "ToolError" in (result.error or "")
    with pytest.raises(Exception, match="secret names unknown"):
        tool_from_langchain(lookup_invoice, secret=["password"])
    assert ToolError  # the error type a step sees


def test_a_langchain_model_drives_langchain_tools_through_erpoz(stub: OpenAIStubServer) -> None:
    """``ctx.tools.agent`` with a LangChain model (ChatOpenAI, tools bound by LangChain) that
    calls a LangChain tool: the call goes through erpoz's policy and audit."""
    hub = build_hub(parse_config(project(stub)))
    registry = ToolRegistry(
        [tool_from_langchain(lookup_invoice)], ToolPolicy((Rule("reads", "allow", "lookup_*"),))
    )
    stub.script(
        "chat",
        Behaviour.tool_calls(("lookup_invoice", {"invoice": 7})),
        Behaviour.reply("Invoice 7 totals 49.0."),
    )

    @step
    async def agent(question: str, ctx: Context) -> str:
        return (await ctx.tools.agent("lc", question, tools=["lookup_invoice"])).text

    engine = Engine(MemoryStore(), services={ModelHub: hub, ToolRegistry: registry})
    result, events = run(engine, one_step(agent, "agent"), "what is invoice 7?")
    assert result.ok and result.output == "Invoice 7 totals 49.0."
    assert [e.kind for e in events if e.kind in ("model_called", "tool_called")] == [
        "model_called",
        "tool_called",
        "model_called",
    ]
    assert of_kind(events, "model_called")[0]["tool_calls"] == 1
    first, second = stub.requests_to("chat")
    assert first.body["tools"][0]["function"]["name"] == "lookup_invoice"
    assert second.body["messages"][-1]["role"] == "tool"
    assert "49.0" in second.body["messages"][-1]["content"]


def test_a_model_without_tool_support_says_so() -> None:
    hub = ModelHub()
    fake = GenericFakeChatModel(messages=iter(["x"]))
    hub.add(LangChainChat(fake, "fake"), ModelSpec("fake", "langchain"))
    registry = ToolRegistry([tool_from_langchain(lookup_invoice)])

    @step
    async def agent(question: str, ctx: Context) -> str:
        return (await ctx.tools.agent("fake", question)).text

    engine = Engine(MemoryStore(), services={ModelHub: hub, ToolRegistry: registry})
    result, _ = run(engine, one_step(agent, "agent"), "q")
    assert "GenericFakeChatModel cannot call tools" in (result.error or "")


# --- an erpoz flow as a LangChain Runnable ---------------------------------------------------
@step
def shout(text: str) -> str:
    return text.upper()


shout_flow = Flow("shout", inputs={"text": str})
shout_flow.add(shout, text=shout_flow.input("text"))


@step(review=True)
def draft(name: str) -> str:
    return f"Dear {name}"


review_flow = Flow("review", inputs={"name": str})
review_flow.add(draft, name=review_flow.input("name"))


@step
def explode(text: str) -> str:
    raise ValueError("no")


fail_flow = Flow("fail", inputs={"text": str})
fail_flow.add(explode, text=fail_flow.input("text"))


@step
async def story(text: str, ctx: Context) -> str:
    return "".join([c.text async for c in ctx.models.stream("fake", text) if c.result is None])


def story_engine(store: Store, answers: list[str]) -> Engine:
    hub = ModelHub()
    model = GenericFakeChatModel(messages=iter(answers))
    hub.add(LangChainChat(model, "fake"), ModelSpec("fake", "langchain"))
    return Engine(store, services={ModelHub: hub})


def test_invoke_ainvoke_batch_and_composition(tmp_path: Path) -> None:
    store = MemoryStore()
    with as_runnable(shout_flow, engine=Engine(store)) as r:
        assert r.invoke({"text": "a"}) == "A"
        assert r.invoke("b") == "B"  # one input: the value itself
        assert asyncio.run(r.ainvoke("c")) == "C"
        assert r.batch(["d", "e", {"text": "f"}]) == ["D", "E", "F"]
        assert asyncio.run(r.abatch(["g", "h"])) == ["G", "H"]
        chain = ChatPromptTemplate.from_messages([("human", "hello {who}")]) | r
        assert chain.invoke({"who": "ann"}) == "HUMAN: HELLO ANN"
        after = r | RunnableLambda(lambda s: s + "!")
        assert after.invoke("x") == "X!"
        assert r.invoke(HumanMessage(content="msg")) == "MSG"
        full = as_runnable(shout_flow, engine=Engine(store), full_result=True).invoke("z")
        assert isinstance(full, RunResult) and full.output == "Z"

    async def check() -> None:
        runs = await store.list_runs(limit=100)
        assert len(runs) == 12
        tags = [(await store.events(r.run_id))[0].data["tags"] for r in runs]
        assert {t["via"] for t in tags} == {"langchain"}
        assert all(len(t["langchain_run_id"]) == 36 for t in tags)  # LangChain's run id
        assert (await verify(store)).ok

    asyncio.run(check())


def test_a_run_waiting_for_review_raises_a_typed_error_not_a_hang() -> None:
    store = MemoryStore()
    with as_runnable(review_flow, engine=Engine(store)) as r:
        with pytest.raises(WaitingForReview) as err:
            r.invoke("Ann")
        assert err.value.steps == ("draft",)
        with pytest.raises(WaitingForReview):
            asyncio.run(r.ainvoke("Bob"))
        outcomes = r.batch(["Cy", "Di"], return_exceptions=True)
        assert all(isinstance(o, WaitingForReview) for o in outcomes)
        info = asyncio.run(store.get_run(err.value.run_id))
        assert info is not None and info.status == "waiting"


def test_a_failed_run_raises_step_failed() -> None:
    with as_runnable(fail_flow, engine=Engine(MemoryStore())) as r:
        with pytest.raises(StepFailed) as err:
            r.invoke("x")
        assert err.value.step == "explode"
    two = Flow("two", inputs={"a": str, "b": str})
    two.add(shout, text=two.input("a"))
    with as_runnable(two, engine=Engine(MemoryStore())) as r, pytest.raises(FlowError) as bad:
        r.invoke(3)
    assert "takes its inputs as a mapping of a, b" in str(bad.value)


def test_stream_yields_the_delivery_steps_tokens() -> None:
    flow = Flow("story", inputs={"text": str})
    flow.add(story, text=flow.input("text"))
    store = MemoryStore()
    answers = ["once upon a time there was a kettle"] * 2
    with as_runnable(flow, engine=story_engine(store, answers)) as r:
        pieces = list(r.stream("go"))
        assert len(pieces) > 3 and "".join(pieces) == answers[0]

        async def collect() -> list[str]:
            return [p async for p in r.astream("go")]

        apieces = asyncio.run(collect())
        assert len(apieces) > 3 and "".join(apieces) == answers[0]

    async def logged() -> list[str]:
        runs = await store.list_runs(limit=10)
        out = []
        for info in runs:
            out += [e.kind for e in await store.events(info.run_id)]
        return out

    kinds = asyncio.run(logged())
    assert kinds.count("model_called") == 2 and not any("token" in k for k in kinds)


def test_stream_of_a_flow_without_text_output_yields_it_once() -> None:
    @step
    def count(text: str) -> int:
        return len(text)

    flow = Flow("count", inputs={"text": str})
    flow.add(count, text=flow.input("text"))
    with as_runnable(flow, engine=Engine(MemoryStore())) as r:
        assert list(r.stream("four")) == [4]


def test_a_runnable_without_an_engine_gets_the_projects_models(
    stub: OpenAIStubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as_runnable(flow) alone: the project's store and services, as `erpoz run` builds them
    (tmp_path / "erpoz.yaml").write_text(
        "models:\n"
        "  local:\n"
        "    provider: openai\n"
        f"    params: {{base_url: '{stub.base_url}', model: stub-model, api_key: ''}}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERPOZ_CONFIG", raising=False)
    monkeypatch.setenv("ERPOZ_STORE", str(tmp_path / "lc.db"))

    @step
    async def ask_local(question: str, ctx: Context) -> str:
        return (await ctx.models.chat("local", question)).text

    with as_runnable(one_step(ask_local, "ask-local")) as r:
        assert r.invoke("hi") == "echo: hi"
        assert r.batch(["a", "b"]) == ["echo: a", "echo: b"]
        runs = r._portal.call(r.engine.store.list_runs(limit=10))
        assert len(runs) == 3  # one engine, one store, every run on it
    assert (tmp_path / "lc.db").exists()
