"""Without a project file, ``erpoz run`` builds the project's services (the offline default
models) only when a step first asks for them: a flow that calls no model never builds the model
registry, and one that does gets the same models as before."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Flow, step
from erpoz.cli._console import DefaultServices, build_engine, has_project_file
from erpoz.guards import Guardrails
from erpoz.models import ModelHub
from erpoz.project import project_services
from erpoz.store import MemoryStore
from erpoz.tools import ToolRegistry


@pytest.fixture
def no_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERPOZ_CONFIG", raising=False)
    return tmp_path


def test_a_project_file_is_found_where_load_config_looks(
    no_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not has_project_file()
    assert has_project_file("elsewhere.yaml")  # named: reading it says whether it is there
    monkeypatch.setenv("ERPOZ_CONFIG", "other.yaml")
    assert has_project_file()
    monkeypatch.delenv("ERPOZ_CONFIG")
    (no_project / "erpoz.yaml").write_text("models: {}\n")
    assert has_project_file()


def test_without_a_project_file_the_only_service_is_the_models(no_project: Path) -> None:
    """What DefaultServices relies on to answer other keys without building anything."""
    services = asyncio.run(project_services(MemoryStore()))
    assert set(services) == {ModelHub}


def test_default_services_build_once_and_only_for_the_models() -> None:
    built: list[int] = []
    hub = ModelHub()

    def build() -> dict[type, object]:
        built.append(1)
        return {ModelHub: hub}

    services = DefaultServices(build)
    assert services.get(Guardrails) is None and ToolRegistry not in services
    assert built == []  # asking for another service builds nothing
    assert services.get(ModelHub) is hub and services[ModelHub] is hub
    assert built == [1]
    assert dict(services) == {ModelHub: hub} and len(services) == 1
    assert built == [1]


@step
def inc(x: int) -> int:
    return x + 1


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("default", q)).text


def _run(flow: Flow, inputs: dict[str, Any]) -> tuple[Any, DefaultServices]:
    st = MemoryStore()
    engine = build_engine(st)
    assert isinstance(engine.services, DefaultServices)

    async def go() -> Any:
        try:
            return await engine.run(flow, inputs)
        finally:
            await st.close()

    try:
        return asyncio.run(go()), engine.services
    finally:
        engine.executor.shutdown()


def test_a_flow_that_calls_no_model_does_not_build_the_models(no_project: Path) -> None:
    flow = Flow("one", inputs={"x": int})
    flow.add(inc, x=flow.input("x"))
    result, services = _run(flow, {"x": 1})
    assert result.status == "succeeded" and result.output == 2
    assert services._build is not None  # never asked for: never built


def test_a_flow_that_calls_a_model_gets_the_default_models(no_project: Path) -> None:
    flow = Flow("asks", inputs={"q": str})
    flow.add(ask, q=flow.input("q"))
    result, services = _run(flow, {"q": "what can you do?"})
    assert result.status == "succeeded", result.error
    assert isinstance(result.output, str) and result.output
    assert services._build is None and isinstance(services[ModelHub], ModelHub)
