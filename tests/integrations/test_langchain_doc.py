"""docs/integrations/langchain.md runs as written, in order, in one session (its erpoz.yaml
with erpoz's local OpenAI stub server in Ollama's place), and prints what it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("langchain_openai")

from erpoz.testing import OpenAIStubServer
from test_docs import fenced_blocks, run_printing

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = ROOT / "docs" / "integrations" / "langchain.md"
OLLAMA = "http://127.0.0.1:11434/v1"


def test_langchain_page_runs_and_prints_what_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = fenced_blocks(PAGE.read_text(encoding="utf-8"))
    [config] = [body for lang, body in blocks if lang == "yaml"]
    assert OLLAMA in config
    monkeypatch.chdir(tmp_path)
    with OpenAIStubServer() as stub:
        (tmp_path / "erpoz.yaml").write_text(config.replace(OLLAMA, stub.base_url))
        namespace: dict[str, object] = {"__name__": "docs_langchain"}
        checked = 0
        for i, (lang, body) in enumerate(blocks):
            if lang != "python":
                continue
            printed = run_printing(body, f"{PAGE.name} (block {i})", namespace)
            if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
                assert printed.strip() == blocks[i + 1][1].strip(), f"block {i}"
                checked += 1
        assert checked == 4
        assert len(stub.requests_to("chat")) == 1
