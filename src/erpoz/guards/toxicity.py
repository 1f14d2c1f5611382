"""Toxic language (insults, obscenity, profanity aimed at someone), sentence by sentence, with
the offline classifier of ``alt-profanity-check`` (a linear SVM on TF-IDF word features,
trained on insult and toxic-comment data; ``pip install 'erpoz[local]'``).

Each sentence gets a probability; a sentence at or over ``threshold`` is a :class:`Finding`
of kind ``toxic``. Every sentence of a text is scored in one batch.

The model reads words, not meaning: it misses toxicity spelled without its vocabulary
(sarcasm, threats in polite words, ``f*ck``-style masking, languages other than English), and
a rude word inside a harmless idiom can score high. See ``docs/guards.md`` for its measured
precision and recall.

The classifier's own ``predict_prob`` spends most of its time in scikit-learn's input checks;
on first use this module reads the same weights into a few NumPy arrays and checks, on probe
sentences, that it computes the same probabilities (else it keeps ``predict_prob``).

:func:`sentence_spans` (also used by the groundedness guard) splits a text into sentences
and keeps where each one is.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._findings import Finding

__all__ = ["ToxicityGuard", "sentence_spans"]

INSTALL_HINT = "pip install 'erpoz[local]'"
TOXIC = "toxic"
_log = logging.getLogger("erpoz.guards")

# -- sentences ----------------------------------------------------------------------------

#: A sentence ends at ., !, ? or … (with closing quotes or brackets) before white space, and
#: at every line break.
_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)|\n")
#: Words whose full stop does not end a sentence.
_ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "nr", "fig", "inc", "ltd",
    "co", "corp", "approx", "cf", "dept", "est", "vol", "ca", "al", "resp", "incl", "excl",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sept", "oct", "nov", "dec",
))  # fmt: skip
_LAST_WORD = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]+$")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, in order, without surrounding white space.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by white space, and at a line
    break. A full stop after a known abbreviation (``Dr.``, ``etc.``), an initial (``J.``) or
    dotted letters (``e.g.``, ``U.S.``) does not end one; decimals and URLs never did.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _END.finditer(text):
        mark = m.group()
        if mark == ".":
            word = _LAST_WORD.search(text, max(0, m.start() - 20), m.start())
            if word is not None and word.end() == m.start():
                w = word.group()
                if len(w) == 1 or "." in w or w.lower() in _ABBREVIATIONS:
                    continue
        end = m.start() if mark == "\n" else m.end()
        _add(text, start, end, spans)
        start = m.end()
    _add(text, start, len(text), spans)
    return spans


def _add(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


# -- the model ----------------------------------------------------------------------------

Scorer = Callable[[Sequence[str]], list[float]]
_scorer: Scorer | None = None
_scorer_lock = threading.Lock()
_PROBES = (
    "You are a complete idiot and everyone hates you.",
    "Thanks for the quick reply, see you on Monday.",
    "This bug is killing me.",
    "",
    "the the the",
    "What the hell is this shit? Shut up, moron.",
)


def _require() -> None:
    if importlib.util.find_spec("profanity_check") is None:
        raise ImportError(
            f"the toxicity guard needs the alt-profanity-check package: {INSTALL_HINT}"
        )


def _load() -> Scorer:
    """The process-wide scorer, loaded on first call (thread-safe)."""
    global _scorer
    with _scorer_lock:
        if _scorer is None:
            _require()
            import profanity_check  # type: ignore[import-untyped]

            def library(texts: Sequence[str]) -> list[float]:
                return [float(p) for p in profanity_check.predict_prob(list(texts))]

            fast = _fast_scorer()
            if fast is not None:
                want = library(_PROBES)
                got = fast(_PROBES)
                if any(abs(a - b) > 1e-9 for a, b in zip(got, want, strict=True)):
                    _log.debug("toxicity: the NumPy path disagrees with predict_prob; not used")
                    fast = None
            _scorer = fast or library
        return _scorer


def _fast_scorer() -> Scorer | None:
    """``predict_prob`` without scikit-learn's per-call overhead: the same TF-IDF features
    (the vectorizer's own analyzer and idf weights) and the same calibrated linear models
    (mean of the sigmoid-calibrated folds), as NumPy arrays. ``None`` if the model is not
    the shape this expects."""
    import numpy as np
    from profanity_check import profanity_check as pc

    try:
        vectorizer: Any = pc.vectorizer
        model: Any = pc.model
        folds = model.calibrated_classifiers_
        if list(model.classes_) != [0, 1] or vectorizer.norm != "l2" or vectorizer.sublinear_tf:
            return None
        if vectorizer.binary or any(f.method != "sigmoid" for f in folds):
            return None
        analyze: Callable[[str], list[str]] = vectorizer.build_analyzer()
        vocabulary: dict[str, int] = vectorizer.vocabulary_
        idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        weights = np.stack([f.estimator.coef_[0] for f in folds], axis=1)  # (vocab, folds)
        bias = np.array([float(f.estimator.intercept_[0]) for f in folds])
        slope = np.array([float(f.calibrators[0].a_) for f in folds])
        offset = np.array([float(f.calibrators[0].b_) for f in folds])
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        _log.debug("toxicity: model not as expected (%s); using predict_prob", exc)
        return None
    vocab_size = len(idf)

    def score(texts: Sequence[str]) -> list[float]:
        n = len(texts)
        rows: list[int] = []
        cols: list[int] = []
        for i, text in enumerate(texts):
            for token in analyze(text):
                j = vocabulary.get(token)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        dots = np.zeros((n, weights.shape[1]))
        if rows:
            keys, counts = np.unique(
                np.asarray(rows, dtype=np.int64) * vocab_size + np.asarray(cols), return_counts=True
            )
            row, col = np.divmod(keys, vocab_size)
            value = counts * idf[col]  # tf * idf
            norm = np.sqrt(np.bincount(row, value * value, minlength=n))
            np.add.at(dots, row, value[:, None] * weights[col])
            dots /= np.maximum(norm, 1e-300)[:, None]
        decision = dots + bias
        prob = (1.0 / (1.0 + np.exp(slope * decision + offset))).mean(axis=1)
        return [float(p) for p in prob]

    return score


class ToxicityGuard:
    """Find toxic sentences; implements :class:`~erpoz.guards.Guard`.

    ``threshold`` (0..1): a sentence whose probability reaches it is reported, with the
    probability as the finding's score. Raises ``ImportError`` naming
    ``pip install 'erpoz[local]'`` when alt-profanity-check is not installed; the model
    itself loads on the first :meth:`check` (about a second), or on :meth:`load`.
    """

    __slots__ = ("name", "threshold")

    def __init__(self, *, threshold: float = 0.8, name: str = "toxicity") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        _require()
        self.name = name
        self.threshold = threshold

    def load(self) -> None:
        """Load the model now (at start-up, say) instead of on the first check."""
        _load()

    def scores(self, text: str) -> list[tuple[int, int, float]]:
        """``(start, end, probability)`` of every sentence of ``text``."""
        spans = sentence_spans(text)
        if not spans:
            return []
        probs = _load()([text[s:e] for s, e in spans])
        return [(s, e, p) for (s, e), p in zip(spans, probs, strict=True)]

    def check(self, text: str) -> tuple[Finding, ...]:
        """Return a ``toxic`` finding for each sentence at or over the threshold."""
        return tuple(
            Finding(self.name, TOXIC, s, e, text[s:e], p, f"toxic language (p={p:.2f})")
            for s, e, p in self.scores(text)
            if p >= self.threshold
        )
