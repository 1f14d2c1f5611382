"""docs/integrations/client.md runs as written against a real ``erpoz serve`` of
examples/service.py (its erpoz.yaml with the local OpenAI stub server in Ollama's place), and
prints what the page shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from erpoz.testing import OpenAIStubServer
from test_docs import fenced_blocks, run_printing

from .conftest import serve, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = ROOT / "docs" / "integrations" / "client.md"
OLLAMA = "http://127.0.0.1:11434/v1"
DOC_URL = "http://127.0.0.1:8000"


def test_client_page_runs_and_prints_what_it_shows(tmp_path: Path) -> None:
    blocks = fenced_blocks(PAGE.read_text(encoding="utf-8"))
    [config] = [body for lang, body in blocks if lang == "yaml"]
    [command] = [body for lang, body in blocks if lang == "console"]
    keys = re.search(r'ERPOZ_API_KEYS="([^"]+)"', command)
    flows = re.findall(r"examples/service\.py:\w+", command)
    assert keys and flows == ["examples/service.py:refund", "examples/service.py:story"]
    assert OLLAMA in config
    with OpenAIStubServer() as stub:
        url, proc = serve(
            tmp_path,
            [str(ROOT / f) for f in flows],
            config.replace(OLLAMA, stub.base_url),
            keys.group(1),
        )
        try:
            namespace: dict[str, object] = {"__name__": "docs_client"}
            checked = 0
            for i, (lang, body) in enumerate(blocks):
                if lang != "python":
                    continue
                assert DOC_URL in body or i > 0
                printed = run_printing(
                    body.replace(DOC_URL, url), f"{PAGE.name} (block {i})", namespace
                )
                if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
                    assert printed.strip() == blocks[i + 1][1].strip()
                    checked += 1
            assert checked == 3
        finally:
            stop(proc)
