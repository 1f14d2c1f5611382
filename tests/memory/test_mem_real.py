"""Memory with the real local MiniLM (loaded once per session; skipped without erpoz[local]):
retrieval quality on the demo corpus, and chunks sized with MiniLM's own tokenizer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bench.retrieval_bench import evaluate_quality

from erpoz.memory import demo_corpus, open_memory, token_counter
from erpoz.models.local_embed import MiniLMEmbed
from models.local_fixtures import minilm


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbed:
    return minilm()


def test_demo_question_set_is_answered_by_every_mode(embedder: MiniLMEmbed) -> None:
    """The figures `python -m bench.retrieval_bench --quality` reports (30 questions), held
    to a floor a little under what they are."""
    result = evaluate_quality(embedder)
    assert result["questions"] >= 25
    assert result["vector"]["hit@1"] >= 0.8 and result["vector"]["hit@5"] >= 0.9
    assert result["hybrid"]["hit@1"] >= 0.8 and result["hybrid"]["hit@5"] >= 0.9
    assert result["keyword"]["hit@5"] >= 0.8


def test_chunks_are_sized_with_minilms_tokenizer(embedder: MiniLMEmbed, tmp_path: Path) -> None:
    count = token_counter(embedder)
    assert count("descaling") > 1  # word pieces, not words
    long = tmp_path / "long.md"
    long.write_text(
        "# Long\n\n" + " ".join(f"Limescale note {i} about kettles." for i in range(120)),
        encoding="utf-8",
    )

    async def main() -> None:
        async with open_memory(tmp_path / "m.db", embedder=embedder) as memory:
            manual = demo_corpus() / "kettle-manual.md"
            report = await memory.ingest([long, manual], root=tmp_path)
            assert report.ok and report.chunks > 8
            rows = memory.db.conn.execute("SELECT text, tokens FROM mem_chunks").fetchall()
            assert all(tokens <= 200 and tokens == count(text) for text, tokens in rows)
            hits = await memory.search("how do I remove limescale from the kettle", k=3)
            assert any(h.source.endswith("kettle-manual.md") for h in hits)

    asyncio.run(main())
