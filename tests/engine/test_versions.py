"""Changing a flow while runs are in flight: a run goes on on the plan it started with when
the code keeps it (``Flow(previous=[…])``), on the new plan where the change is declared safe
(``compatible=``, and ``ctx.patched`` inside steps), and otherwise stops with an error that
says what to do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from erpoz import Context, Decision, Engine, Flow, step
from erpoz.errors import RunError
from erpoz.store import MemoryStore


@step(review=True)
def draft(text: str) -> str:
    return f"draft of {text}"


@step
def send_v1(d: str) -> str:
    return f"v1 sent {d}"


@step
def send_v2(d: str) -> str:
    return f"v2 sent {d}"


@step
def greet(d: str, ctx: Context) -> str:
    return f"hello, {d}" if ctx.patched("polite") else f"hi {d}"


def flow(version: str | None, send: Any, **kw: Any) -> Flow:
    f = Flow("mail", inputs={"text": str}, version=version, **kw)
    f.output(f.add(send, d=f.add(draft, text=f.input("text"))))
    return f


def paused_on(f: Flow) -> tuple[MemoryStore, str]:
    store = MemoryStore()
    result = asyncio.run(Engine(store).run(f, {"text": "x"}))
    assert result.status == "waiting"
    return store, result.run_id


def resume(store: MemoryStore, run_id: str, f: Flow) -> Any:
    async def go() -> Any:
        done = await Engine(store).resume(run_id, f, decision=Decision("approve"))
        events = await store.events(run_id)
        resumed = [e.data for e in events if e.kind == "run_resumed"]
        return done, resumed[-1] if resumed else None

    return asyncio.run(go())


def test_a_run_goes_on_on_the_version_it_started_with_when_the_code_keeps_it() -> None:
    v1 = flow("1", send_v1)
    store, run_id = paused_on(v1)
    v2 = flow("2", send_v2, previous=[flow("1", send_v1)])
    done, resumed = resume(store, run_id, v2)
    assert done.output == "v1 sent draft of x" and resumed["plan"] == "previous"
    fresh = asyncio.run(Engine(store).run(v2, {"text": "y"}))  # new runs: the new version
    assert fresh.status == "waiting"
    done, resumed = resume(store, fresh.run_id, v2)
    assert done.output == "v2 sent draft of y" and resumed["plan"] == "same"


def test_a_change_declared_compatible_goes_on_on_the_new_plan() -> None:
    store, run_id = paused_on(flow("1", send_v1))
    done, resumed = resume(store, run_id, flow("2", send_v2, compatible=["1"]))
    assert done.output == "v2 sent draft of x"
    assert resumed["plan"] == "compatible" and resumed["fingerprint_changed"] is True


def test_an_incompatible_change_stops_the_resume_saying_what_to_do() -> None:
    store, run_id = paused_on(flow("1", send_v1))
    with pytest.raises(RunError) as info:
        resume(store, run_id, flow("2", send_v2))
    message = str(info.value)
    assert "started on flow 'mail' version 1" in message and "this code has version 2" in message
    assert "compatible=['1']" in message and "previous=" in message
    assert asyncio.run(store.get_run(run_id)).status == "waiting"  # left as it was
    done, _ = resume(store, run_id, flow("1", send_v1))  # the right code resumes it
    assert done.output == "v1 sent draft of x"


def test_unversioned_flows_go_on_on_the_new_plan_as_before() -> None:
    store, run_id = paused_on(flow(None, send_v1))
    done, resumed = resume(store, run_id, flow(None, send_v2))
    assert done.output == "v2 sent draft of x" and resumed["plan"] == "changed"


def test_patched_tells_runs_from_before_a_patch_from_new_ones() -> None:
    old = flow("1", greet)
    store, before = paused_on(old)
    patched = flow("1", greet, patches=["polite"])  # same version: a declared-safe change
    done, resumed = resume(store, before, patched)
    assert done.output == "hi draft of x" and resumed["plan"] == "same"  # same graph
    fresh = asyncio.run(Engine(store).run(patched, {"text": "y"}))
    done, _ = resume(store, fresh.run_id, patched)
    assert done.output == "hello, draft of y"
    started = asyncio.run(store.events(fresh.run_id))[0].data
    assert started["version"] == "1" and started["patches"] == ["polite"]


def test_an_undeclared_patch_is_an_error_naming_it() -> None:
    store, run_id = paused_on(flow("1", greet))
    done, _ = resume(store, run_id, flow("1", greet, patches=["other"]))
    assert done.status == "failed" and "ctx.patched('polite')" in (done.error or "")
    assert "declares no such patch" in (done.error or "")


FILE = """
from erpoz import Flow, step


@step
def send(text: str) -> str:
    return "{word} " + text


flow = Flow("mail", inputs={{"text": str}}, version="{version}"{extra})
flow.add(send, text=flow.input("text"))
"""


def test_a_worker_whose_code_cannot_run_a_queued_run_fails_it_saying_why(tmp_path: Any) -> None:
    from erpoz.engine import Worker
    from erpoz.flow import load_flow
    from erpoz.store import SQLiteStore

    path = tmp_path / "mailflow.py"
    path.write_text(FILE.format(word="v1", version="1", extra=""))

    async def main() -> tuple[Any, Any]:
        store = SQLiteStore(tmp_path / "s.db")
        plan = load_flow(f"{path}:flow")
        bad = await Engine(store).submit(plan, {"text": "x"})
        path.write_text(FILE.format(word="v2", version="2", extra=""))  # deployed meanwhile
        await Worker(Engine(store), burst=True, poll_s=0.05).run()
        failed = await store.get_run(bad)
        good = await Engine(store).submit(plan, {"text": "y"})
        path.write_text(FILE.format(word="v3", version="3", extra=", compatible=['1', '2']"))
        await Worker(Engine(store), burst=True, poll_s=0.05).run()
        ok = await store.get_run(good)
        await store.close()
        return failed, ok

    failed, ok = asyncio.run(main())
    assert failed.status == "failed" and "started on flow 'mail' version 1" in failed.error
    assert ok.status == "succeeded" and ok.output == '"v3 y"'


def test_the_docs_examples_run_and_print_what_the_page_shows() -> None:
    import contextlib
    import io
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "versioning.md"
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", doc.read_text(encoding="utf-8"), re.S | re.M)
    namespace: dict[str, Any] = {"__name__": "doc"}
    python = [i for i, (lang, _) in enumerate(blocks) if lang == "python"]
    assert len(python) == 3  # the third (the HTTP API) runs in tests/server/test_limits_versions
    python = python[:2]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for i in python:
            exec(compile(blocks[i][1], str(doc), "exec", dont_inherit=True), namespace)
    assert blocks[python[0] + 1][0] == "text"
    assert printed.getvalue().strip() == blocks[python[0] + 1][1].strip()
    assert namespace["flow"].compile().patches == frozenset({"polite-reply"})
