"""The effects journal: side-effecting tool calls, model replies and memory writes made from a
step survive a crash, a retry and an approval without being carried out (or paid for) twice.

A "crash" here is an exception that is not an ``Exception`` raised inside the step, which stops
the run where it is (what was recorded stays, the run stays resumable), like Ctrl-C. The real
thing, SIGKILL at random moments of hundreds of runs in several processes, is
``test_effects_crash.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from erpoz import Context, Decision, Engine, Flow, RetryPolicy, step
from erpoz.errors import (
    BudgetExceeded,
    GuardBlocked,
    ModelError,
    PolicyViolation,
)
from erpoz.memory import Memory, open_memory
from erpoz.models import ModelHub, ModelSpec
from erpoz.store import Event, MemoryStore, SQLiteStore, Store
from erpoz.testing import FunctionModel, ScriptedModel
from erpoz.tools import Rule, ToolError, ToolPolicy, ToolRegistry, tool


class Crash(BaseException):
    """Stops a run where it stands, as a killed process would (nothing more is recorded)."""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def of_kind(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


def committed(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """What another process would read from the store's file right now."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


@pytest.fixture(params=["sync", "batch", "effects"])
def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "runs.db", durability=request.param)
    yield s
    asyncio.run(s.close())


ALLOW_ALL = ToolPolicy((Rule("tests may call every tool", "allow", "*"),))


class Ledger:
    """An outside system that a side-effecting tool acts on: every call it receives, by key."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.fail_next: BaseException | None = None

    def charge(self, amount: int, idempotency_key: str) -> dict[str, Any]:
        self.keys.append(idempotency_key)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return {"charged": amount, "receipt": f"rc-{len(self.keys)}"}


def charge_tool(ledger: Ledger, **options: Any) -> Any:
    def charge(amount: int, idempotency_key: str) -> dict[str, Any]:
        """Charge the customer."""
        return ledger.charge(amount, idempotency_key)

    return tool(charge, side_effects=True, **options)


def engine(store: Store, *tools: Any, memory: Memory | None = None) -> Engine:
    svc: dict[type, object] = {ToolRegistry: ToolRegistry(list(tools), ALLOW_ALL)}
    if memory is not None:
        svc[Memory] = memory
    return Engine(store, services=svc)


def hub_of(model: Any) -> ModelHub:
    hub = ModelHub()
    hub.add(model, ModelSpec(name=model.name, provider="test", context_window=4096))
    return hub


# --- tools ---------------------------------------------------------------------------------------
def test_the_intent_is_committed_before_the_tool_runs_and_the_result_right_after(
    sqlite_store: SQLiteStore,
) -> None:
    db = sqlite_store.path
    seen: dict[str, Any] = {}

    @tool(side_effects=True)
    def pay(amount: int, idempotency_key: str) -> str:
        """Pay."""
        # the outside world is told only once the intent is on disk, under the same key
        rows = committed(db, "SELECT data FROM events WHERE kind='tool_intent'")
        seen["intent"] = rows
        seen["key"] = idempotency_key
        return f"paid {amount}"

    @step
    async def act(n: int, ctx: Context) -> str:
        out = str(await ctx.tools.call("pay", amount=n))
        # before the step goes on, the result is on disk too (whatever the durability)
        seen["result"] = committed(
            db,
            "SELECT payload FROM events WHERE kind='tool_called' AND json_extract(data, "
            "'$.status')='ok'",
        )
        return out

    flow = Flow("pay", inputs={"n": int})
    flow.add(act, n=flow.input("n"))
    result = run(engine(sqlite_store, pay).run(flow, {"n": 7}))
    assert result.output == "paid 7"
    assert len(seen["intent"]) == 1 and seen["key"] in seen["intent"][0][0]
    assert seen["result"] == [('"paid 7"',)]


def test_the_key_reaches_the_tool_but_not_its_schema() -> None:
    ledger = Ledger()
    charge = charge_tool(ledger)
    assert "idempotency_key" not in charge.parameters["properties"]
    assert charge.parameters["required"] == ["amount"]

    @step
    async def act(ctx: Context) -> Any:
        return await ctx.tools.call("charge", amount=5)

    flow = Flow("k")
    flow.add(act)
    store = MemoryStore()
    result = run(engine(store, charge).run(flow))
    events = run(store.events(result.run_id))
    (intent,) = of_kind(events, "tool_intent")
    (called,) = of_kind(events, "tool_called")
    assert ledger.keys == [intent.data["idempotency_key"]] == [called.data["idempotency_key"]]
    assert len(intent.data["arguments_sha256"]) == 64
    with pytest.raises(ToolError, match="only tools with side_effects=True"):

        @tool
        def pure(x: int, idempotency_key: str) -> int:
            return x


def test_a_recorded_result_is_reused_when_the_step_is_retried() -> None:
    ledger = Ledger()
    tries: list[int] = []

    @step(retry=RetryPolicy(attempts=3, backoff=0))
    async def act(ctx: Context) -> Any:
        receipt = await ctx.tools.call("charge", amount=5)
        tries.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("the mail server after the charge is down")
        return receipt

    flow = Flow("retry")
    flow.add(act)
    store = MemoryStore()
    result = run(engine(store, charge_tool(ledger)).run(flow))
    assert result.output == {"charged": 5, "receipt": "rc-1"} and tries == [1, 2]
    assert len(ledger.keys) == 1  # charged once, though the step ran twice
    events = run(store.events(result.run_id))
    assert [e.attempt for e in of_kind(events, "tool_reused")] == [2]


def test_a_call_cut_off_by_a_crash_is_made_again_with_the_same_key_and_says_so(
    sqlite_store: SQLiteStore,
) -> None:
    ledger = Ledger()
    ledger.fail_next = Crash()  # the process dies while the charge is under way

    @step
    async def act(ctx: Context) -> Any:
        first = await ctx.tools.call("charge", amount=5)
        second = await ctx.tools.call("charge", amount=5)  # the same call again: its own key
        return [first["receipt"], second["receipt"]]

    flow = Flow("crash")
    flow.add(act)
    eng = engine(sqlite_store, charge_tool(ledger))

    async def main() -> tuple[Any, list[Event]]:
        with pytest.raises(Crash):
            await eng.run(flow, run_id="r-crash")
        resumed = await eng.resume("r-crash", flow)
        return resumed, await sqlite_store.events("r-crash")

    result, events = run(main())
    assert result.ok
    first_key, second_key = ledger.keys[0], ledger.keys[2]
    assert ledger.keys == [first_key, first_key, second_key] and first_key != second_key
    intents = of_kind(events, "tool_intent")
    assert [i.data["idempotency_key"] for i in intents] == [first_key, first_key, second_key]
    assert [i.data.get("repeat") for i in intents] == [None, 1, None]
    calls = of_kind(events, "tool_called")
    assert [(c.data["idempotency_key"], c.data.get("repeat")) for c in calls] == [
        (first_key, 1),
        (second_key, None),
    ]


def test_a_call_whose_result_was_recorded_is_not_made_again_after_a_crash() -> None:
    ledger = Ledger()
    crash = {"armed": True}

    @step
    async def act(ctx: Context) -> Any:
        receipt = await ctx.tools.call("charge", amount=5)
        if crash.pop("armed", False):
            raise Crash
        return receipt

    flow = Flow("after")
    flow.add(act)
    store = MemoryStore()
    eng = engine(store, charge_tool(ledger))

    async def main() -> Any:
        with pytest.raises(Crash):
            await eng.run(flow, run_id="r-after")
        return await eng.resume("r-after", flow)

    assert run(main()).output == {"charged": 5, "receipt": "rc-1"}
    assert len(ledger.keys) == 1


def test_the_key_is_the_same_after_an_approval() -> None:
    ledger = Ledger()
    policy = ToolPolicy((Rule("charges need a person", "review", "charge"),))

    @step
    async def act(ctx: Context) -> Any:
        return await ctx.tools.call("charge", amount=500)

    flow = Flow("approve")
    flow.add(act)
    store = MemoryStore()
    eng = Engine(store, services={ToolRegistry: ToolRegistry([charge_tool(ledger)], policy)})

    async def main() -> tuple[Any, Any]:
        first = await eng.run(flow)
        assert first.status == "waiting" and ledger.keys == []
        done = await eng.resume(first.run_id, flow, decision=Decision("approve"))
        return done, await store.events(first.run_id)

    done, events = run(main())
    assert done.ok and len(ledger.keys) == 1
    (intent,) = of_kind(events, "tool_intent")
    assert intent.data["idempotency_key"] == ledger.keys[0]


class Receipt(BaseModel):
    id: str
    amount: int


def test_a_pydantic_result_comes_back_typed_from_the_journal() -> None:
    made: list[str] = []

    @tool(side_effects=True)
    def book(amount: int, idempotency_key: str) -> Receipt:
        """Book it."""
        made.append(idempotency_key)
        return Receipt(id=idempotency_key[:6], amount=amount)

    crash = {"armed": True}

    @step
    async def act(ctx: Context) -> int:
        receipt = await ctx.tools.call("book", amount=3)
        if crash.pop("armed", False):
            raise Crash
        assert isinstance(receipt, Receipt)
        return receipt.amount

    flow = Flow("typed")
    flow.add(act)
    store = MemoryStore()
    eng = engine(store, book)

    async def main() -> Any:
        with pytest.raises(Crash):
            await eng.run(flow, run_id="r-typed")
        return await eng.resume("r-typed", flow)

    assert run(main()).output == 3 and len(made) == 1


def test_a_sync_step_on_a_thread_of_its_own_journals_its_calls_too(
    sqlite_store: SQLiteStore,
) -> None:
    ledger = Ledger()

    @step
    def act(ctx: Context) -> Any:  # runs in a worker thread, with an event loop of its own
        return asyncio.run(ctx.tools.call("charge", amount=2))

    flow = Flow("threaded")
    flow.add(act)
    result = run(engine(sqlite_store, charge_tool(ledger)).run(flow))
    assert result.output == {"charged": 2, "receipt": "rc-1"}
    kinds = [e.kind for e in run(sqlite_store.events(result.run_id))]
    assert kinds[2:5] == ["policy_decided", "tool_intent", "tool_called"]


# --- model replies -------------------------------------------------------------------------------
def test_a_retry_of_a_later_failure_gets_the_recorded_reply() -> None:
    model = ScriptedModel(["first draft", "second draft"], name="m")

    @step(retry=RetryPolicy(attempts=2, backoff=0))
    async def draft(ctx: Context) -> str:
        reply = await ctx.models.chat("m", "Draft the reminder.")
        if ctx.attempt == 1:
            raise ConnectionError("the step fails after the model answered")
        return reply.text

    flow = Flow("draft")
    flow.add(draft)
    store = MemoryStore()
    result = run(Engine(store, services={ModelHub: hub_of(model)}).run(flow))
    assert result.output == "first draft"
    assert len(model.calls) == 1  # paid once
    events = run(store.events(result.run_id))
    assert len(of_kind(events, "model_called")) == 1
    assert [e.attempt for e in of_kind(events, "model_reused")] == [2]


def test_a_resumed_step_does_not_ask_again_and_the_reply_is_durable_before_it_goes_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteStore(db)  # sync durability
    asked: list[str] = []
    model = FunctionModel(lambda req: asked.append(req.messages[-1].text) or "Dear Ada", name="m")
    crash = {"armed": True}
    durable: list[Any] = []

    @step
    async def write(name: str, ctx: Context) -> str:
        first = await ctx.models.chat("m", f"Greet {name}.")
        again = await ctx.models.chat("m", f"Greet {name}.")  # the same request, 2nd position
        durable.append(committed(db, "SELECT count(*) FROM events WHERE kind='model_replied'"))
        if crash.pop("armed", False):
            raise Crash
        return first.text + " / " + again.text

    flow = Flow("greet", inputs={"name": str})
    flow.add(write, name=flow.input("name"))
    eng = Engine(store, services={ModelHub: hub_of(model)})

    async def main() -> Any:
        with pytest.raises(Crash):
            await eng.run(flow, {"name": "Ada"}, run_id="r-greet")
        result = await eng.resume("r-greet", flow)
        await store.close()
        return result

    assert run(main()).output == "Dear Ada / Dear Ada"
    assert asked == ["Greet Ada.", "Greet Ada."]  # each position asked once, none after resume
    assert durable[0] == [(2,)]


@pytest.mark.parametrize("durability", ["sync", "batch", "effects"])
def test_what_a_model_call_follows_from_is_on_record_before_the_request_leaves(
    tmp_path: Path, durability: str
) -> None:
    # with ``effects`` durability pure steps do not wait for their commit; a model request is
    # something leaving the process, so the steps it follows from are committed before it
    db = tmp_path / "runs.db"
    store = SQLiteStore(db, durability=durability)
    on_record: list[Any] = []

    def answer(req: Any) -> str:
        on_record.append(
            committed(db, "SELECT step FROM events WHERE kind='step_succeeded' ORDER BY seq")
        )
        return "ok"

    @step
    async def double(x: int) -> int:
        return x * 2

    @step
    async def ask(x: int, ctx: Context) -> str:
        return (await ctx.models.chat("m", f"x is {x}")).text

    flow = Flow("ask", inputs={"x": int})
    flow.add(ask, x=flow.add(double, id="d2", x=flow.add(double, id="d1", x=flow.input("x"))))
    eng = Engine(store, services={ModelHub: hub_of(FunctionModel(answer, name="m"))})

    async def main() -> Any:
        try:
            return await eng.run(flow, {"x": 3})
        finally:
            await store.close()

    result = run(main())
    assert result.output == "ok"
    if durability != "batch":  # batch groups by time: it does not promise this
        assert on_record == [[("d1",), ("d2",)]]


def test_effects_durability_commits_pure_steps_only_with_the_runs_end(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteStore(db, durability="effects")
    seen: list[Any] = []

    @step
    async def inc(x: int) -> int:
        seen.append(committed(db, "SELECT kind FROM events ORDER BY seq"))
        return x + 1

    flow = Flow("chain", inputs={"x": int})
    ref: Any = flow.input("x")
    for i in range(4):
        ref = flow.add(inc, id=f"s{i}", x=ref)
    flow.output(ref)

    async def main() -> Any:
        try:
            return await Engine(store).run(flow, {"x": 0})
        finally:
            await store.close()

    result = run(main())
    assert result.output == 4
    # the run is on record from its start (resumable if the process dies) ...
    assert seen == [[("run_started",)]] * 4
    # ... and everything else is, once the run has ended
    kinds = [k for (k,) in committed(db, "SELECT kind FROM events ORDER BY seq")]
    assert kinds[0] == "run_started" and kinds[-1] == "run_succeeded"
    assert kinds.count("step_succeeded") == 4


# --- retries that respect errors -----------------------------------------------------------------
class Point(BaseModel):
    x: int


def _validation_error() -> Exception:
    try:
        Point(x="not a number")  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "calls"),
    [
        (ModelError("bad request", model="m", retryable=False, status=400), 1),
        (BudgetExceeded("over the budget", model="m"), 1),
        (GuardBlocked("blocked", checkpoint="model_input", rule="no pii"), 1),
        (PolicyViolation("denied", rule="nobody mails"), 1),
        (ToolError("tool 'x': argument a: not an int", tool="x"), 1),
        (_validation_error(), 1),
        (ModelError("overloaded", model="m", retryable=True, status=503), 3),
        (ConnectionError("reset"), 3),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_only_errors_that_may_pass_are_retried(error: BaseException, calls: int) -> None:
    tries: list[int] = []

    @step(retry=RetryPolicy(attempts=3, backoff=0))
    def flaky() -> str:
        tries.append(1)
        raise error

    flow = Flow("flaky")
    flow.add(flaky)
    store = MemoryStore()
    result = run(Engine(store).run(flow))
    assert result.status == "failed" and len(tries) == calls
    failed = of_kind(run(store.events(result.run_id)), "step_failed")[-1].data
    assert failed["type"] == type(error).__name__
    assert failed["retryable"] is (calls > 1)


def test_a_retry_policy_can_name_what_to_retry_anyway() -> None:
    tries: list[int] = []

    @step(retry=RetryPolicy(attempts=3, backoff=0, retry_on=(ModelError,)))
    def picky() -> str:
        tries.append(1)
        raise ModelError("says it is not retryable", model="m", retryable=False)

    flow = Flow("picky")
    flow.add(picky)
    assert run(Engine(MemoryStore()).run(flow)).status == "failed"
    assert len(tries) == 3


# --- structured errors in the log ----------------------------------------------------------------
def test_step_failed_and_run_failed_carry_the_errors_fields() -> None:
    @step
    def guarded() -> str:
        raise GuardBlocked("no", checkpoint="tool_result", rule="no secrets")

    flow = Flow("fields")
    flow.add(guarded)
    store = MemoryStore()
    result = run(Engine(store).run(flow))
    events = run(store.events(result.run_id))
    (failed,) = of_kind(events, "step_failed")
    (ended,) = of_kind(events, "run_failed")
    for data in (failed.data, ended.data):
        assert data["type"] == "GuardBlocked" and data["message"] == "no"
        assert data["types"] == ["GuardBlocked", "ErpozError"]
        assert data["fields"] == {"checkpoint": "tool_result", "rule": "no secrets"}
        assert data["retryable"] is False
    assert ended.data["step"] == "guarded"
    assert result.error_info is not None and result.error_info["fields"]["rule"] == "no secrets"


# --- memory writes -------------------------------------------------------------------------------
@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    m = open_memory(tmp_path / "memory.db")
    yield m
    m.close()


def test_a_retried_step_writes_its_turn_once_and_the_log_says_so(memory: Memory) -> None:
    @step(retry=RetryPolicy(attempts=2, backoff=0))
    async def remember(question: str, ctx: Context) -> int:
        chat = ctx.memory.conversation("s-1")
        await chat.append("user", question)
        turn = await chat.append("assistant", "We will refund it.")
        if ctx.attempt == 1:
            raise ConnectionError("failed after writing")
        return turn.seq

    flow = Flow("mem", inputs={"question": str})
    flow.add(remember, question=flow.input("question"))
    store = MemoryStore()
    result = run(Engine(store, services={Memory: memory}).run(flow, {"question": "Refund?"}))
    assert result.output == 2
    turns = memory.conversation("s-1").sync.turns()
    assert [(t.seq, t.role, t.text) for t in turns] == [
        (1, "user", "Refund?"),
        (2, "assistant", "We will refund it."),
    ]
    written = of_kind(run(store.events(result.run_id)), "memory_written")
    assert [(w.data["op"], w.data["seq"], w.attempt) for w in written] == [
        ("turn", 1, 1),
        ("turn", 2, 1),
    ]
    assert "Refund?" not in str([w.data for w in written])  # names and numbers, not the text


def test_a_write_made_just_before_a_crash_is_not_made_twice(memory: Memory) -> None:
    crash = {"armed": True}

    @step
    async def remember(ctx: Context) -> int:
        turn = await ctx.memory.conversation("s-2").append("user", "hello")
        if crash.pop("armed", False):
            raise Crash
        return turn.seq

    flow = Flow("mem2")
    flow.add(remember)
    store = MemoryStore()
    eng = Engine(store, services={Memory: memory})

    async def main() -> Any:
        with pytest.raises(Crash):
            await eng.run(flow, run_id="r-mem")
        return await eng.resume("r-mem", flow)

    assert run(main()).output == 1
    assert [t.text for t in memory.conversation("s-2").sync.turns()] == ["hello"]


def test_lineage_shows_memory_writes_and_repeated_tool_calls(memory: Memory) -> None:
    from erpoz.audit import lineage

    ledger = Ledger()
    ledger.fail_next = Crash()

    @step
    async def act(ctx: Context) -> str:
        await ctx.memory.conversation("s-3").append("user", "charge me")
        receipt = await ctx.tools.call("charge", amount=1)
        return str(receipt["receipt"])

    flow = Flow("lin")
    flow.add(act)
    store = MemoryStore()
    eng = engine(store, charge_tool(ledger), memory=memory)

    async def main() -> Any:
        with pytest.raises(Crash):
            await eng.run(flow, run_id="r-lin")
        await eng.resume("r-lin", flow)
        return await lineage(store, "r-lin", "act", flow=flow)

    lin = run(main()).to_json()["step"]
    assert [(m["op"], m["session"], m["seq"]) for m in lin["memory"]] == [("turn", "s-3", 1)]
    assert [(t["tool"], t.get("repeat")) for t in lin["tools"]] == [("charge", 1)]
    assert Counter(ledger.keys).most_common(1)[0][1] == 2


def test_a_step_forgets_a_document_and_the_log_says_whether_there_was_one(
    memory: Memory,
) -> None:
    @step
    async def tidy(ctx: Context) -> bool:
        return await ctx.memory.forget("gone.md")

    flow = Flow("forget")
    flow.add(tidy)
    store = MemoryStore()
    result = run(Engine(store, services={Memory: memory}).run(flow))
    assert result.output is False
    (written,) = of_kind(run(store.events(result.run_id)), "memory_written")
    assert (written.data["op"], written.data["source"], written.data["found"]) == (
        "forget",
        "gone.md",
        False,
    )


def test_with_effects_durability_a_memory_write_follows_its_causes_to_disk(
    memory: Memory, tmp_path: Path
) -> None:
    # another process may read the memory database: what a turn was written from is on
    # record before the turn is
    db = tmp_path / "runs.db"
    store = SQLiteStore(db, durability="effects")

    @step
    async def ask(question: str) -> str:
        return question.upper()

    @step
    async def remember(question: str, ctx: Context) -> int:
        before = committed(db, "SELECT step FROM events WHERE kind='step_succeeded'")
        turn = await ctx.memory.conversation("s-2").append("user", question)
        after = committed(db, "SELECT step FROM events WHERE kind='step_succeeded'")
        assert (before, after) == ([], [("ask",)])
        return turn.seq

    flow = Flow("mem", inputs={"question": str})
    flow.add(remember, question=flow.add(ask, question=flow.input("question")))

    async def main() -> Any:
        try:
            return await Engine(store, services={Memory: memory}).run(flow, {"question": "hi"})
        finally:
            await store.close()

    result = run(main())
    assert result.status == "succeeded", result.error
    assert result.output == 1
