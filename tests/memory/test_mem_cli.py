"""``erpoz ingest`` and ``erpoz search`` (the typer app of ``erpoz.cli.memory``), run in-process
with the offline embedder in place of MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpoz.cli import memory as cli_memory
from erpoz.cli.memory import memory_cli
from memory.helpers import HashEmbed, write

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli_memory, "make_embedder", HashEmbed)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("ERPOZ_MEMORY", raising=False)


def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    write(d / "refunds.md", "# Refunds\n\n## Timing\n\nRefunds arrive within five days.\n")
    write(d / "shipping.html", "<h1>Shipping</h1><p>Parcels travel for two days.</p>")
    return d


def test_ingest_then_search(tmp_path: Path) -> None:
    d = docs(tmp_path)
    result = runner.invoke(memory_cli, ["ingest", str(d)])
    assert result.exit_code == 0, result.output
    assert "✓ docs/refunds.md: 1 chunk" in result.output
    assert "2 ingested, 0 unchanged, 0 failed" in result.output
    assert (tmp_path / ".erpoz" / "memory.db").exists()

    again = runner.invoke(memory_cli, ["ingest", str(d), "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert (data["ingested"], data["unchanged"], data["memory"]) == (0, 2, ".erpoz/memory.db")

    found = runner.invoke(memory_cli, ["search", "when do refunds arrive", "-k", "1"])
    assert found.exit_code == 0, found.output
    assert "docs/refunds.md › Refunds › Timing" in found.output
    assert "Refunds arrive within five days." in found.output
    assert "1 passage, hybrid search" in found.output

    js = runner.invoke(
        memory_cli, ["search", "parcels", "--mode", "keyword", "--json", "--source", "*.html"]
    )
    assert js.exit_code == 0, js.output
    data = json.loads(js.stdout)
    assert data["mode"] == "keyword"
    (hit,) = data["hits"]
    assert (hit["source"], hit["heading"], hit["text"]) == (
        "docs/shipping.html",
        ["Shipping"],
        "Parcels travel for two days.",
    )
    assert set(hit) >= {"id", "span", "page", "score", "scores"}

    none = runner.invoke(memory_cli, ["search", "zebra", "--mode", "keyword"])
    assert none.exit_code == 0 and "no passage matches 'zebra'" in none.output


def test_a_failed_file_is_reported_and_exits_1_while_the_others_are_ingested(
    tmp_path: Path,
) -> None:
    d = docs(tmp_path)
    (d / "broken.pdf").write_bytes(b"no pdf here")
    (d / "big.txt").write_text("word " * 400_000)
    result = runner.invoke(memory_cli, ["ingest", str(d), "--max-mb", "1", "--memory", "m.db"])
    assert result.exit_code == 1, result.output
    assert "✗ docs/broken.pdf: not a PDF" in result.output
    assert "✗ docs/big.txt: too large: 2.0 MB, over the limit of 1.0 MB" in result.output
    assert "2 ingested, 0 unchanged, 2 failed" in result.output
    (d / "broken.pdf").unlink()
    (d / "big.txt").unlink()
    (d / "refunds.md").unlink()
    pruned = runner.invoke(memory_cli, ["ingest", str(d), "--memory", "m.db", "--prune"])
    assert pruned.exit_code == 0, pruned.output
    assert "docs/refunds.md: forgotten" in pruned.output


def test_usage_and_store_errors_have_their_exit_codes(tmp_path: Path) -> None:
    empty = runner.invoke(memory_cli, ["search", "anything", "--memory", "e.db"])
    assert empty.exit_code == 1
    assert "holds no documents; add some with `erpoz ingest PATH`" in empty.output
    unreachable = "postgresql://postgres:s3cret@127.0.0.1:1/db"  # nothing listens on port 1
    pg = runner.invoke(memory_cli, ["search", "x", "--memory", unreachable])
    assert pg.exit_code == 4 and "cannot reach PostgreSQL" in pg.output
    assert "postgres:***@127.0.0.1:1/db" in pg.output and "s3cret" not in pg.output
    bad_mode = runner.invoke(memory_cli, ["search", "x", "--mode", "fuzzy"])
    assert bad_mode.exit_code == 2
    nothing = runner.invoke(memory_cli, ["ingest", str(tmp_path / "missing.md")])
    assert nothing.exit_code == 1 and "no such file or folder" in nothing.output
    (tmp_path / "void").mkdir()
    void = runner.invoke(memory_cli, ["ingest", str(tmp_path / "void")])
    assert void.exit_code == 1 and "nothing to ingest" in void.output
    d = docs(tmp_path)
    assert runner.invoke(memory_cli, ["ingest", str(d)]).exit_code == 0
    blank = runner.invoke(memory_cli, ["search", "   "])
    assert blank.exit_code == 2 and "the query is empty" in blank.output
