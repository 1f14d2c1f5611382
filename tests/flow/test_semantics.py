"""What a flow does when it runs: branches, skips, merges, fan-in, map, loop, sub-flows."""

import asyncio
import json
import threading

from flowsteps import (
    Doc,
    Draft,
    Report,
    add_one,
    async_double,
    classify,
    count,
    double,
    flag,
    inline_thread_is_main,
    label,
    make_doc,
    make_report,
    numbers,
    opt_or_zero,
    read_doc,
    report_name,
    revise,
    shout,
    thread_is_main,
    thread_name,
    total,
    with_default,
)

import erpoz
from erpoz import Flow, first_of


def run_with_events(flow: Flow, **inputs):
    """Run on the memory store and return (result, events of the run)."""

    async def go():
        store = erpoz.open_store("memory")
        try:
            result = await erpoz.Engine(store).run(flow, inputs)
            return result, await store.events(result.run_id)
        finally:
            await store.close()

    return asyncio.run(go())


def kinds_by_step(events) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        if e.step is not None:
            out.setdefault(e.step, []).append(e.kind)
    return out


# --- when ----------------------------------------------------------------------------------


def _branching() -> Flow:
    flow = Flow("branch", inputs={"text": str})
    kind = flow.add(classify, text=flow.input("text"))
    billing = flow.add(shout, id="billing", text=flow.input("text"), when=kind.eq("billing"))
    other = flow.add(label, id="other", text=flow.input("text"), when=kind.ne("billing"))
    flow.output(first_of(billing, other))
    return flow


def test_when_eq_and_ne_pick_one_branch():
    flow = _branching()
    result, events = run_with_events(flow, text="refund me")
    assert result.ok
    assert result.output == "REFUND ME"
    steps = kinds_by_step(events)
    assert steps["billing"] == ["step_started", "step_succeeded"]
    assert steps["other"] == ["step_skipped"]

    result, events = run_with_events(flow, text="hello")
    assert result.output == "label:hello"
    steps = kinds_by_step(events)
    assert steps["billing"] == ["step_skipped"]
    assert steps["other"] == ["step_started", "step_succeeded"]


def test_when_truthy_and_inverted_ref():
    flow = Flow("flags", inputs={"x": int})
    pos = flow.add(flag, x=flow.input("x"))
    yes = flow.add(add_one, id="yes", x=flow.input("x"), when=pos)
    no = flow.add(double, id="no", x=flow.input("x"), when=~pos)
    flow.output(first_of(yes, no))
    assert erpoz.run(flow, x=5).output == 6
    assert erpoz.run(flow, x=-5).output == -10


def test_when_on_a_flow_input():
    flow = Flow("gate", inputs={"x": int, "go": bool})
    flow.add(add_one, x=flow.input("x"), when=flow.input("go"))
    assert erpoz.run(flow, x=1, go=True).output == 2
    skipped = erpoz.run(flow, x=1, go=False)
    assert skipped.ok
    assert skipped.output is None


def test_inverted_condition_flips_eq():
    flow = Flow("flip", inputs={"text": str})
    kind = flow.add(classify, text=flow.input("text"))
    flow.add(shout, text=flow.input("text"), when=~kind.eq("billing"))
    assert erpoz.run(flow, text="hello").output == "HELLO"
    assert erpoz.run(flow, text="refund").output is None


def test_when_on_a_field():
    flow = Flow("field", inputs={"title": str})
    doc = flow.add(make_doc, title=flow.input("title"))
    flow.add(read_doc, doc=doc, when=doc["words"].eq(2))
    assert erpoz.run(flow, title="two words").output == "two words"
    assert erpoz.run(flow, title="three words here").output is None


# --- skipping ------------------------------------------------------------------------------


def test_a_step_after_a_skipped_step_is_skipped():
    flow = Flow("chain", inputs={"x": int, "go": bool})
    a = flow.add(add_one, id="a", x=flow.input("x"), when=flow.input("go"))
    b = flow.add(double, id="b", x=a)
    flow.add(add_one, id="c", x=b)
    result, events = run_with_events(flow, x=1, go=False)
    assert result.ok
    assert result.output is None
    steps = kinds_by_step(events)
    assert steps == {"a": ["step_skipped"], "b": ["step_skipped"], "c": ["step_skipped"]}
    assert erpoz.run(flow, x=1, go=True).output == 5


def test_an_input_with_a_default_gets_the_default_when_its_source_is_skipped():
    flow = Flow("dflt", inputs={"x": int, "go": bool})
    a = flow.add(add_one, id="a", x=flow.input("x"), when=flow.input("go"))
    flow.add(with_default, id="b", x=a)
    assert erpoz.run(flow, x=1, go=False).output == 70
    assert erpoz.run(flow, x=1, go=True).output == 20


def test_an_optional_input_gets_none_when_its_source_is_skipped():
    flow = Flow("opt", inputs={"x": int, "go": bool})
    a = flow.add(add_one, id="a", x=flow.input("x"), when=flow.input("go"))
    flow.add(opt_or_zero, id="b", x=a)
    result, events = run_with_events(flow, x=4, go=False)
    assert result.output == 0
    assert kinds_by_step(events)["b"] == ["step_started", "step_succeeded"]
    assert erpoz.run(flow, x=4, go=True).output == 5


def test_fan_in_collects_the_branches_that_ran():
    def show(xs: list[int]) -> str:
        return repr(xs)

    flow = Flow("fanin", inputs={"x": int, "go": bool})
    a = flow.add(add_one, id="a", x=flow.input("x"))
    b = flow.add(double, id="b", x=flow.input("x"), when=flow.input("go"))
    c = flow.add(add_one, id="c", x=flow.input("x"), when=flow.input("go"))
    flow.add(show, id="all", xs=[b, a, c])
    result, events = run_with_events(flow, x=3, go=False)
    assert kinds_by_step(events)["all"] == ["step_started", "step_succeeded"]
    assert result.output == "[4]"  # the skipped branches are left out
    assert erpoz.run(flow, x=3, go=True).output == "[6, 4, 4]"


def test_a_when_condition_on_a_skipped_step_skips_the_step():
    flow = Flow("whenskip", inputs={"x": int, "go": bool})
    a = flow.add(add_one, id="a", x=flow.input("x"), when=flow.input("go"))
    flow.add(double, id="c", x=flow.input("x"), when=a)
    result, events = run_with_events(flow, x=1, go=False)
    assert kinds_by_step(events)["a"] == ["step_skipped"]
    assert kinds_by_step(events)["c"] == ["step_skipped"]  # `a` has no value to test
    assert result.output is None
    assert erpoz.run(flow, x=1, go=True).output == 2


def test_first_of_takes_the_first_branch_that_ran():
    flow = Flow("merge", inputs={"x": int})
    pos = flow.add(flag, x=flow.input("x"))
    a = flow.add(add_one, id="a", x=flow.input("x"), when=pos)
    b = flow.add(double, id="b", x=flow.input("x"))
    merged = flow.add(add_one, id="after", x=first_of(a, b))
    flow.output(merged)
    assert erpoz.run(flow, x=2).output == 4  # a ran: 3 + 1
    assert erpoz.run(flow, x=-2).output == -3  # a skipped: b = -4, + 1


def test_first_of_all_skipped_skips_the_dependent():
    flow = Flow("none", inputs={"x": int, "go": bool})
    a = flow.add(add_one, id="a", x=flow.input("x"), when=flow.input("go"))
    b = flow.add(double, id="b", x=flow.input("x"), when=flow.input("go"))
    flow.add(add_one, id="after", x=first_of(a, b))
    result, events = run_with_events(flow, x=1, go=False)
    assert kinds_by_step(events)["after"] == ["step_skipped"]
    assert result.output is None


# --- fan-out / fan-in ----------------------------------------------------------------------


def test_fan_out_and_fan_in_with_a_list_of_refs():
    flow = Flow("fan", inputs={"x": int})
    branches = [
        flow.add(add_one, id=f"b{i}", x=flow.input("x"))
        if i % 2
        else flow.add(double, id=f"b{i}", x=flow.input("x"))
        for i in range(6)
    ]
    flow.add(total, id="sum", xs=branches)
    plan = flow.compile()
    assert len(plan.node("sum").deps) == 6
    assert erpoz.run(flow, x=10).output == 3 * 11 + 3 * 20


def test_fan_in_keeps_the_order_of_the_list():
    def join(parts: list[str]) -> str:
        return ",".join(parts)

    flow = Flow("order", inputs={"text": str})
    a = flow.add(shout, text=flow.input("text"))
    b = flow.add(label, text=flow.input("text"))
    c = flow.add(classify, text=flow.input("text"))
    flow.add(join, parts=[c, a, b])
    assert erpoz.run(flow, text="x").output == "other,X,label:x"


def test_async_steps_run_concurrently():
    gate: dict[str, asyncio.Event] = {}

    async def wait_for(name: str, other: str) -> str:
        gate.setdefault(name, asyncio.Event()).set()
        ev = gate.setdefault(other, asyncio.Event())
        await asyncio.wait_for(ev.wait(), 2)  # deadlocks unless both run at once
        return name

    def pair(items: list[str]) -> str:
        return "+".join(items)

    flow = Flow("conc")
    a = flow.add(wait_for, id="a", name="a", other="b")
    b = flow.add(wait_for, id="b", name="b", other="a")
    flow.add(pair, items=[a, b])
    assert erpoz.run(flow).output == "a+b"


# --- map -----------------------------------------------------------------------------------


def test_map_preserves_order():
    async def slow_square(x: int) -> int:
        await asyncio.sleep(0.001 * (10 - x))  # later items finish first
        return x * x

    flow = Flow("map", inputs={"n": int})
    ns = flow.add(numbers, n=flow.input("n"))
    flow.map(slow_square, over=ns, item="x", concurrency=10)
    assert erpoz.run(flow, n=10).output == [x * x for x in range(10)]


def test_map_respects_the_concurrency_bound():
    state = {"now": 0, "max": 0}

    async def tracked(x: int) -> int:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.002)
        state["now"] -= 1
        return x

    flow = Flow("bounded", inputs={"n": int})
    ns = flow.add(numbers, n=flow.input("n"))
    flow.map(tracked, over=ns, item="x", concurrency=3)
    assert erpoz.run(flow, n=12).output == list(range(12))
    assert state["max"] == 3
    assert state["now"] == 0


def test_map_with_concurrency_one_is_sequential():
    state = {"now": 0, "max": 0}

    async def tracked(x: int) -> int:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0)
        state["now"] -= 1
        return x

    flow = Flow("seq", inputs={"xs": list[int]})
    flow.map(tracked, over=flow.input("xs"), item="x", concurrency=1)
    assert erpoz.run(flow, xs=[3, 1, 2]).output == [3, 1, 2]
    assert state["max"] == 1


def test_map_over_an_empty_list_gives_an_empty_list():
    flow = Flow("empty", inputs={"xs": list[int]})
    each = flow.map(add_one, over=flow.input("xs"), item="x")
    flow.add(total, xs=each)
    result, events = run_with_events(flow, xs=[])
    assert result.ok
    assert result.output == 0
    assert (
        json.loads(
            next(e.payload for e in events if e.kind == "step_succeeded" and e.step == "add_one")
        )
        == []
    )


def test_map_output_is_the_list_itself():
    flow = Flow("plain", inputs={"xs": list[int]})
    flow.map(double, over=flow.input("xs"), item="x")
    assert erpoz.run(flow, xs=[]).output == []
    assert erpoz.run(flow, xs=[1, 2, 3]).output == [2, 4, 6]


def test_map_binds_other_inputs_to_every_item():
    def scale(x: int, factor: int) -> int:
        return x * factor

    flow = Flow("scale", inputs={"xs": list[int], "k": int})
    flow.map(scale, over=flow.input("xs"), item="x", factor=flow.input("k"))
    assert erpoz.run(flow, xs=[1, 2, 3], k=5).output == [5, 10, 15]


def test_map_records_each_item():
    flow = Flow("items", inputs={"xs": list[int]})
    flow.map(async_double, id="dbl", over=flow.input("xs"), item="x")
    result, events = run_with_events(flow, xs=[4, 5])
    assert result.output == [8, 10]
    items = {
        e.step: json.loads(e.payload)
        for e in events
        if e.kind == "step_succeeded" and e.step.startswith("dbl[")
    }
    assert items == {"dbl[0]": 8, "dbl[1]": 10}


def test_map_over_a_skipped_list_is_skipped():
    flow = Flow("skipmap", inputs={"n": int, "go": bool})
    ns = flow.add(numbers, n=flow.input("n"), when=flow.input("go"))
    flow.map(add_one, id="each", over=ns, item="x")
    result, events = run_with_events(flow, n=3, go=False)
    assert kinds_by_step(events)["each"] == ["step_skipped"]
    assert result.output is None


# --- loop ----------------------------------------------------------------------------------


def _reviser(max_iterations: int) -> Flow:
    flow = Flow("revise", inputs={"target": int})
    flow.loop(
        revise,
        id="fix",
        state="draft",
        init=Draft(text="d", version=0, valid=False),
        until="valid",
        max_iterations=max_iterations,
        target=flow.input("target"),
    )
    return flow


def test_loop_stops_when_until_is_true():
    result, events = run_with_events(_reviser(10), target=3)
    assert result.output == Draft(text="d+++", version=3, valid=True)
    iterations = [e.step for e in events if e.kind == "step_succeeded" and "#" in e.step]
    assert iterations == ["fix#1", "fix#2", "fix#3"]
    final = next(e for e in events if e.kind == "step_succeeded" and e.step == "fix")
    assert final.data["iterations"] == 3
    assert final.data["converged"] is True


def test_loop_stops_at_max_iterations_with_the_last_output():
    result, events = run_with_events(_reviser(4), target=100)
    assert result.ok
    assert result.output == Draft(text="d++++", version=4, valid=False)
    iterations = [e.step for e in events if e.kind == "step_succeeded" and "#" in e.step]
    assert iterations == ["fix#1", "fix#2", "fix#3", "fix#4"]
    final = next(e for e in events if e.kind == "step_succeeded" and e.step == "fix")
    assert final.data["converged"] is False


def test_loop_that_is_valid_at_once_runs_one_iteration():
    result = erpoz.run(_reviser(5), target=1)
    assert result.output.version == 1


def test_loop_without_until_stops_on_a_truthy_output():
    calls: list[bool] = []

    def toggle(on: bool) -> bool:
        calls.append(on)
        return not on

    flow = Flow("toggle")
    flow.loop(toggle, state="on", init=True, max_iterations=10)
    assert erpoz.run(flow).output is True  # False (go on), then True (stop)
    assert calls == [True, False]

    zeros: list[int] = []

    def stay(n: int) -> int:
        zeros.append(n)
        return 0

    flow2 = Flow("never")
    flow2.loop(stay, state="n", init=5, max_iterations=3)
    assert erpoz.run(flow2).output == 0
    assert zeros == [5, 0, 0]


def test_loop_init_and_inputs_from_other_steps():
    def start(title: str) -> Draft:
        return Draft(text=title, version=0, valid=False)

    flow = Flow("grow", inputs={"title": str, "x": int})
    first = flow.add(start, title=flow.input("title"))
    target = flow.add(add_one, x=flow.input("x"))
    flow.loop(revise, state="draft", init=first, until="valid", max_iterations=5, target=target)
    assert erpoz.run(flow, title="t", x=1).output == Draft(text="t++", version=2, valid=True)


# --- sub-flows -----------------------------------------------------------------------------


def _sub() -> Flow:
    sub = Flow("inner", inputs={"n": int, "k": int}, defaults={"k": 10})
    a = sub.add(add_one, x=sub.input("n"))
    b = sub.add(double, x=sub.input("k"))
    sub.add(total, xs=[a, b])
    return sub


def test_sub_flow_output_feeds_the_outer_flow():
    flow = Flow("outer", inputs={"x": int})
    inner = flow.add(_sub(), id="inner", n=flow.input("x"))
    flow.add(double, x=inner)
    result, events = run_with_events(flow, x=4)
    assert result.output == 2 * ((4 + 1) + 2 * 10)
    done = {e.step for e in events if e.kind == "step_succeeded"}
    assert {"inner/add_one", "inner/double", "inner/total", "inner", "double"} <= done


def test_sub_flow_defaults_can_be_overridden():
    flow = Flow("outer", inputs={"x": int})
    flow.add(_sub(), id="inner", n=flow.input("x"), k=1)
    assert erpoz.run(flow, x=0).output == 1 + 2


def test_sub_flow_with_explicit_output():
    sub = Flow("pick", inputs={"text": str})
    up = sub.add(shout, text=sub.input("text"))
    sub.add(count, text=sub.input("text"))
    sub.output(up)
    flow = Flow("outer", inputs={"text": str})
    flow.add(sub, id="p", text=flow.input("text"))
    plan = flow.compile()
    assert plan.output_type is str
    assert erpoz.run(flow, text="hey").output == "HEY"


def test_sub_flow_as_a_map_step():
    flow = Flow("outer", inputs={"xs": list[int]})
    flow.map(_sub(), id="each", over=flow.input("xs"), item="n", k=0)
    assert erpoz.run(flow, xs=[1, 2]).output == [2, 3]


# --- threads -------------------------------------------------------------------------------


def test_sync_steps_run_in_worker_threads():
    flow = Flow("threads", inputs={"x": int})
    flow.add(thread_is_main, x=flow.input("x"))
    assert erpoz.run(flow, x=1).output is False

    named = Flow("named", inputs={"x": int})
    named.add(thread_name, x=named.input("x"))
    assert erpoz.run(named, x=1).output != threading.main_thread().name


def test_inline_steps_run_on_the_event_loop_thread():
    flow = Flow("inline", inputs={"x": int})
    flow.add(inline_thread_is_main, x=flow.input("x"))
    assert erpoz.run(flow, x=1).output is True


def test_async_steps_run_on_the_event_loop_thread():
    async def where(x: int) -> bool:
        return threading.current_thread() is threading.main_thread()

    flow = Flow("async", inputs={"x": int})
    flow.add(where, x=flow.input("x"))
    assert erpoz.run(flow, x=1).output is True


# --- typed values ---------------------------------------------------------------------------


def test_a_lax_constant_is_refused_or_converted():
    # "3" validates as an int (lax, like run inputs); the step must not get the str
    flow = Flow("lax")
    flow.add(add_one, x="3")
    try:
        flow.compile()
    except erpoz.FlowError:
        return
    assert erpoz.run(flow).output == 4


def test_a_mapping_constant_reaches_a_dataclass_input_as_the_dataclass():
    flow = Flow("doc")
    flow.add(read_doc, doc={"title": "a", "words": 1})
    result = erpoz.run(flow)
    assert result.error is None
    assert result.output == "a"


def test_a_mapping_loop_init_reaches_the_step_as_the_state_type():
    flow = Flow("loopinit")
    flow.loop(
        revise,
        state="draft",
        init={"text": "d", "version": 0, "valid": False},
        until="valid",
        max_iterations=3,
        target=2,
    )
    result = erpoz.run(flow)
    assert result.error is None
    assert result.output == Draft(text="d++", version=2, valid=True)


def test_pydantic_model_output_round_trips(tmp_path):
    flow = Flow("report", inputs={"name": str, "scores": list[int]})
    rep = flow.add(make_report, name=flow.input("name"), scores=flow.input("scores"))
    flow.output(rep)
    expected = Report(name="r", scores=[1, 2], doc=Doc(title="r", words=2))

    async def go():
        store = erpoz.open_store(tmp_path / "runs.db")
        try:
            result = await erpoz.Engine(store).run(flow, {"name": "r", "scores": [1, 2]})
            info = await store.get_run(result.run_id)
            return result, info
        finally:
            await store.close()

    result, info = asyncio.run(go())
    assert result.output == expected
    assert isinstance(result.output, Report)
    assert Report.model_validate_json(info.output) == expected


def test_dataclass_output_round_trips_and_feeds_a_step(tmp_path):
    flow = Flow("doc", inputs={"title": str})
    doc = flow.add(make_doc, title=flow.input("title"))
    flow.add(read_doc, doc=doc)

    async def go():
        store = erpoz.open_store(tmp_path / "runs.db")
        try:
            result = await erpoz.Engine(store).run(flow, {"title": "a b c"})
            return result, await store.events(result.run_id)
        finally:
            await store.close()

    result, events = asyncio.run(go())
    assert result.output == "a b c"
    payload = next(e.payload for e in events if e.kind == "step_succeeded" and e.step == "make_doc")
    assert json.loads(payload) == {"title": "a b c", "words": 3}


def test_model_output_passes_between_steps_as_the_model():
    flow = Flow("chain", inputs={"name": str})
    rep = flow.add(make_report, name=flow.input("name"), scores=[3, 4])
    flow.add(report_name, report=rep)
    assert erpoz.run(flow, name="zed").output == "zed"


def test_a_step_returning_the_wrong_type_fails_the_run():
    def liar(x: int) -> int:
        return "not an int"  # type: ignore[return-value]

    flow = Flow("liar", inputs={"x": int})
    flow.add(liar, x=flow.input("x"))
    result = erpoz.run(flow, x=1)
    assert result.status == "failed"
    assert result.failed_step == "liar"
    assert "declared output type is int" in result.error
