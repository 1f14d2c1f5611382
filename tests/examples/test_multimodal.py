"""The multimodal example end to end with the real local models, offline and routed to a
chat endpoint (the OpenAI-compatible stub server) when OPENAI_BASE_URL is set."""

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from erpoz import Engine
from erpoz.models import ModelHub
from erpoz.project import load_hub
from erpoz.store import MemoryStore
from erpoz.testing import Behaviour, OpenAIStubServer

EXAMPLE = Path(__file__).parents[2] / "examples" / "multimodal.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("multimodal_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["multimodal_example"] = module
    spec.loader.exec_module(module)
    return module


def run_example(example: ModuleType, tmp_path: Path, question: str) -> tuple[object, list]:
    image = example.render_notice(tmp_path / "notice.png")

    async def main() -> tuple[object, list]:
        store = MemoryStore()
        engine = Engine(store, services={ModelHub: load_hub()})
        result = await engine.run(example.flow, {"image": str(image), "question": question})
        return result.unwrap(), await store.events(result.run_id)

    return asyncio.run(main())


def test_offline_answer_cites_the_notice_and_the_fee_policy(
    example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    answer, events = run_example(example, tmp_path, "Why is there a fee on my invoice?")
    assert "late fee" in answer.text.lower()
    assert "late-fees" in answer.citations
    assert answer.model == "reader" and answer.route == ["default"]
    called = [e.data["model"] for e in events if e.kind == "model_called"]
    assert called == ["ocr", "minilm", "reader"]


def test_with_a_chat_endpoint_the_answer_step_goes_there(
    example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIStubServer() as server:
        server.script("chat", Behaviour.reply("A 15.00 EUR late fee applies [late-fees]."))
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        answer, events = run_example(example, tmp_path, "Why is there a fee on my invoice?")
        sent = server.requests_to("chat")[0].body
    assert answer.text == "A 15.00 EUR late fee applies [late-fees]."
    assert answer.route == ["default"]
    assert "late-fees" in str(sent["messages"])  # the retrieved passage went to the model
    decided = [e.data for e in events if e.kind == "route_decided"]
    assert decided and decided[0]["winner"] == "openai"
