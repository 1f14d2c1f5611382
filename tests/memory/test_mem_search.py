"""What searching needs apart from any store: where a memory is opened from, and the
arithmetic of retrieval (RRF, MMR, the full-text query). The search itself is checked for every
store by ``memory.vector_contract``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erpoz.memory import MemoryStoreError, demo_corpus, open_memory, project_memory
from erpoz.memory._search import fts_query, mmr, rrf


def test_an_unknown_url_is_refused_with_its_password_hidden() -> None:
    with pytest.raises(MemoryStoreError, match=r"unknown memory URL 'redis://x'.*postgresql://"):
        open_memory("redis://x")
    with pytest.raises(MemoryStoreError, match=r"'redis://me:\*\*\*@x:6379/0'") as info:
        open_memory("redis://me:s3cret@x:6379/0")
    assert "s3cret" not in str(info.value)


def test_default_location_is_the_project_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERPOZ_MEMORY", raising=False)
    with open_memory() as memory:
        assert memory.path == str(Path(".erpoz") / "memory.db")
    assert (tmp_path / ".erpoz" / "memory.db").exists()
    monkeypatch.setenv("ERPOZ_MEMORY", str(tmp_path / "env.db"))
    with open_memory() as memory:
        assert memory.path == str(tmp_path / "env.db")
    shared = project_memory()  # what ctx.memory falls back to: one per process and path
    assert project_memory() is shared and shared.path == str(tmp_path / "env.db")


def test_demo_corpus_ships_with_the_package() -> None:
    names = sorted(p.name for p in demo_corpus().iterdir())
    assert "refund-policy.md" in names and "shipping-faq.html" in names
    assert len(names) >= 5


# --- the arithmetic -----------------------------------------------------------------------------
def test_reciprocal_rank_fusion() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_mmr_picks_relevant_then_different() -> None:
    vectors = np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = np.array([1.0, 0.95, 0.5], dtype=np.float32)
    assert mmr(relevance, vectors, 2, 1.0) == [0, 1]
    assert mmr(relevance, vectors, 2, 0.5) == [0, 2]
    assert mmr(relevance, vectors, 5, 0.5) == [0, 2, 1]


def test_query_words_are_quoted_and_stop_words_dropped() -> None:
    assert fts_query('How do I get "a refund" OR NEAR(x)?') == '"get" OR "refund" OR "near"'
    assert fts_query("the and of") == '"the" OR "and" OR "of"'
    assert fts_query("Janet's ducks") == '"janet" OR "ducks"'
    assert fts_query("?!") is None
