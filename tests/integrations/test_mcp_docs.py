"""docs/integrations/mcp.md: its example runs and prints what the page shows; its project
files are the ones in examples/mcp_calc and parse."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the MCP integration needs the mcp extra")

from erpoz.integrations.mcp import servers_from_config
from erpoz.models._config import parse_config
from test_docs import fenced_blocks, run_printing

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "integrations" / "mcp.md"
EXAMPLE = ROOT / "examples" / "mcp_calc"


def blocks(lang: str) -> list[str]:
    return [body for kind, body in fenced_blocks(PAGE.read_text(encoding="utf-8")) if kind == lang]


def test_the_python_example_runs_as_written_and_prints_what_the_page_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in a copy of examples/mcp_calc whose erpoz.yaml starts the server with this Python (the
    page's `command: python` means a Python that has mcp; here that is sys.executable)."""
    for name in ("calc_server.py", "erpoz.yaml"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    project = tmp_path / "erpoz.yaml"
    text = project.read_text(encoding="utf-8")
    assert "command: python " in text
    project.write_text(text.replace("command: python ", f"command: {sys.executable} "))
    monkeypatch.chdir(tmp_path)
    (code,) = blocks("python")
    texts = [b for b in blocks("text") if b.startswith("waiting")]
    printed = run_printing(code, "docs/integrations/mcp.md (python block)")
    assert printed.strip() == texts[0].strip()


def test_the_project_file_shown_is_the_examples(tmp_path: Path) -> None:
    shown = blocks("yaml")[0]
    assert shown.strip() in (EXAMPLE / "erpoz.yaml").read_text(encoding="utf-8")


def test_the_full_mcp_section_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALC_KEY", "k")
    monkeypatch.setenv("SEARCH_TOKEN", "t")
    (tmp_path / "servers").mkdir()
    section = next(b for b in blocks("yaml") if "connect_timeout_s" in b)
    calc, search = servers_from_config(parse_config(section, file="erpoz.yaml", base=tmp_path))
    assert calc.env == {"CALC_KEY": "k"} and calc.cwd == str(tmp_path / "servers")
    assert search.headers == {"Authorization": "Bearer t"} and search.prefix == "web_"
    assert search.tools == ("search",) and search.timeout_s == 30.0


def test_the_client_configuration_is_json() -> None:
    (shown,) = blocks("json")
    assert json.loads(shown)["mcpServers"]["erpoz"]["args"][:2] == ["mcp", "serve"]
