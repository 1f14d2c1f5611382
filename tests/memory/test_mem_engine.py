"""Where a step's ``ctx.memory`` comes from: the engine's ``Memory`` service, and only that. The
assembly (``erpoz run``, ``erpoz serve``, ``erpoz.run``: :func:`erpoz.project.project_services`)
gives the project's memory ($ERPOZ_MEMORY, else .erpoz/memory.db), opened when a step first
uses it; an engine built directly reads no project files: it uses the memory it was given, or
says that it has none."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.cli._helpers import Cli

from erpoz import Context, Engine, Flow, step
from erpoz.memory import Memory, open_memory
from erpoz.project import project_services
from erpoz.store import MemoryStore

FLOW = """
from erpoz import Context, Flow, step


@step
async def remember(text: str, ctx: Context) -> int:
    turn = await ctx.memory.conversation("s").append("user", text)
    return turn.seq


flow = Flow("remember", inputs={"text": str})
flow.output(flow.add(remember, text=flow.input("text")))
"""


@step
async def remember(text: str, ctx: Context) -> int:
    turn = await ctx.memory.conversation("s").append("user", text)
    return turn.seq


def remembering() -> Flow:
    flow = Flow("remember", inputs={"text": str})
    flow.output(flow.add(remember, text=flow.input("text")))
    return flow


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose project memory is $ERPOZ_MEMORY (neither may be touched by an
    engine given its own memory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ERPOZ_MEMORY", str(tmp_path / "project-memory.db"))
    return tmp_path


def test_an_engine_uses_the_memory_it_is_given_and_no_project_file(project: Path) -> None:
    with open_memory(project / "given" / "memory.db") as memory:
        engine = Engine(MemoryStore(), services={Memory: memory})
        result = asyncio.run(engine.run(remembering(), {"text": "hello"}))
        assert result.output == 1
        assert [t.text for t in memory.conversation("s").sync.turns()] == ["hello"]
    assert not (project / "project-memory.db").exists()
    assert not (project / ".erpoz").exists()


def test_an_engine_given_no_memory_says_what_to_give_it(project: Path) -> None:
    result = asyncio.run(Engine(MemoryStore()).run(remembering(), {"text": "hello"}))
    assert result.status == "failed"
    assert "this engine has no memory" in result.error
    assert "Engine(store, services={Memory: open_memory(path)})" in result.error
    assert not (project / "project-memory.db").exists()
    assert not (project / ".erpoz").exists()


def test_the_project_services_give_the_project_memory_when_a_step_asks(project: Path) -> None:
    services = asyncio.run(project_services(MemoryStore()))
    assert Memory not in set(services)  # nothing opened until a step asks
    assert not (project / "project-memory.db").exists()
    result = asyncio.run(
        Engine(MemoryStore(), services=services).run(remembering(), {"text": "hi"})
    )
    assert result.output is not None
    with open_memory(project / "project-memory.db") as memory:
        assert "hi" in [t.text for t in memory.conversation("s").sync.turns()]


def test_project_services_added_to_keep_the_project_memory(project: Path) -> None:
    class Extra:
        pass

    services = asyncio.run(project_services(MemoryStore()))
    for more in (services | {Extra: Extra()}, services.copy()):
        result = asyncio.run(Engine(MemoryStore(), services=more).run(remembering(), {"text": "x"}))
        assert result.status == "succeeded", result.error
    assert (project / "project-memory.db").exists()


@pytest.mark.parametrize("with_project_file", [False, True])
def test_erpoz_run_gives_a_step_the_project_memory(tmp_path: Path, with_project_file: bool) -> None:
    flow = tmp_path / "remember_flow.py"
    flow.write_text(FLOW, encoding="utf-8")
    cli = Cli(tmp_path)
    cli.env["ERPOZ_MEMORY"] = str(tmp_path / "project-memory.db")
    config: list[str | Path] = []
    if with_project_file:
        (tmp_path / "erpoz.yaml").write_text("models: {}\n", encoding="utf-8")
        config = ["--config", tmp_path / "erpoz.yaml"]
    cli.ok("run", f"{flow}:flow", "-i", "text=from the cli", *config)
    with open_memory(tmp_path / "project-memory.db") as memory:
        assert [t.text for t in memory.conversation("s").sync.turns()] == ["from the cli"]
