"""The arithmetic of retrieval, apart from any store: the full-text query, reciprocal-rank
fusion, maximal marginal relevance and metadata filters."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import QueryError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "RRF_K",
    "STOP_WORDS",
    "check_search",
    "fts_all",
    "fts_any",
    "fts_query",
    "matches",
    "mmr",
    "query_terms",
    "rrf",
]

K = TypeVar("K", bound=Hashable)

RRF_K = 60
"""The constant of reciprocal-rank fusion: ``score = Σ 1 / (RRF_K + rank)``."""

MODES = ("vector", "keyword", "hybrid")

# fmt: off
STOP_WORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
    "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself",
    "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just",
    "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she",
    "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
    "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too",
    "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
    "yourselves",
})
# fmt: on
_TERM = re.compile(r"\w+", re.UNICODE)


def check_search(query: str, k: int, mode: str, mmr: float | None) -> None:
    """QueryError for arguments no search can take."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty: give some words to search for")
    if mode not in MODES:
        raise QueryError(f"unknown search mode {mode!r}: use vector, keyword or hybrid")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise QueryError(f"k must be a whole number of results ≥ 1, not {k!r}")
    if mmr is not None and not (isinstance(mmr, int | float) and 0.0 <= mmr <= 1.0):
        raise QueryError(
            f"mmr is the weight of relevance against diversity, between 0 and 1; not {mmr!r}"
        )


def query_terms(query: str) -> list[str]:
    """The words of a query worth searching for, lower-cased, each once: stop words and
    single letters dropped, unless the query has nothing else."""
    terms = [t.lower() for t in _TERM.findall(query)]
    kept = [t for t in terms if t not in STOP_WORDS and (len(t) > 1 or t.isdigit())] or terms
    return list(dict.fromkeys(kept))


def fts_any(terms: Sequence[str]) -> str:
    """An FTS5 expression matching any of ``terms``, each quoted so that none is read as an
    operator."""
    return " OR ".join(f'"{t}"' for t in terms)


def fts_all(terms: Sequence[str]) -> str:
    """An FTS5 expression matching all of ``terms``."""
    return " AND ".join(f'"{t}"' for t in terms)


def fts_query(query: str) -> str | None:
    """An FTS5 query matching any of the query's words (:func:`query_terms`); ``None`` when
    the query has no words at all."""
    terms = query_terms(query)
    return fts_any(terms) if terms else None


def rrf(rankings: Sequence[Sequence[K]], k: int = RRF_K) -> list[tuple[K, float]]:
    """Reciprocal-rank fusion of several rankings (best first): items by ``Σ 1/(k + rank)``,
    rank counted from 1, best first; ties keep the order of first appearance."""
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def mmr(
    relevance: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    k: int,
    lam: float,
) -> list[int]:
    """Maximal marginal relevance: ``k`` indices into the candidates, each chosen to maximise
    ``lam · relevance - (1 - lam) · (highest cosine similarity to one already chosen)``.
    ``relevance`` is scaled to [0, 1] first, so that any score (cosine, BM25, RRF) can be
    weighed against similarity. ``lam = 1`` is plain ranking; ``0`` is diversity alone."""
    import numpy as np

    n = len(relevance)
    if n == 0:
        return []
    rel = relevance.astype(np.float32)
    span = float(rel.max() - rel.min())
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    sims = vectors @ vectors.T
    chosen: list[int] = []
    closest = np.full(n, -np.inf, dtype=np.float32)  # highest similarity to anything chosen
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        score = lam * rel - (1.0 - lam) * penalty
        score[~available] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        closest = np.maximum(closest, sims[best])
    return chosen


def matches(value: Any, want: Any, *, glob: bool = False) -> bool:
    """Whether a stored value passes a filter: equal to ``want``, or to any item of it when it
    is a list / tuple / set; with ``glob``, ``want`` is one or more shell patterns."""
    wants = list(want) if isinstance(want, list | tuple | set | frozenset) else [want]
    if glob:
        return isinstance(value, str) and any(fnmatchcase(value, str(w)) for w in wants)
    return any(value == w for w in wants)


def check_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    if filters is None:
        return {}
    if not isinstance(filters, Mapping) or not all(isinstance(key, str) for key in filters):
        raise QueryError(
            "filters must map names to values, e.g. {'source': 'docs/*.md', 'kind': 'pdf'}"
        )
    return dict(filters)
