"""An extractive reader: answers a question by quoting the passage sentences that best support
it, each followed by the id of its source. It generates no text of its own, so it cannot make
anything up; it runs locally (MiniLM embeddings) and costs nothing.

Passages travel in the chat messages, one per line, as ``[source-id] text``::

    system: Answer from these passages only and cite them by id.
            [invoices/1042] Invoice 1042 was paid on 3 May. The amount was 49 EUR.
            [faq/refunds] Refunds take five working days.
    user:   When was invoice 1042 paid?

The question is the last user message (its lines that are not passages); passages may sit
in any system or user message. :func:`passages_prompt` builds such messages. A source id has
no brackets or line breaks; a passage is one line.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, ModelError
from ._meter import count_tokens
from ._protocol import EmbedModel
from ._types import ChatRequest, ChatResult, Message, ModelSpec, StreamChunk, Usage
from .local_embed import MiniLMEmbed

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["ABOUT", "ExtractiveReader", "create", "passages_prompt"]

NO_ANSWER = "I cannot answer that from the given passages."
INSTRUCTION = "Answer the question from these passages only, citing each by its [id]:"
#: What a reader set to ``without_passages: explain`` (the offline ``default``) answers to a
#: request that brings no passages: what it can do, and how to get a generative model.
ABOUT = (
    "I am erpoz's offline reader, the model 'default' stands for while no chat model is "
    "configured. I do not write text of my own: I answer a question from passages sent with "
    "it, one per line as '[source-id] text', by quoting the sentences that answer it "
    "(erpoz.models.extractive.passages_prompt builds such messages). This request had no "
    "passages, so I have nothing to quote. To talk to a generative model, set OPENAI_BASE_URL "
    "(and OPENAI_API_KEY) to any OpenAI-compatible endpoint, or name a chat model in "
    "erpoz.yaml (docs/models.md)."
)
WITHOUT_PASSAGES = ("error", "explain")

_PASSAGE = re.compile(r"^\s*\[([^\[\]\n]+)\]\s+(\S.*?)\s*$")
# A sentence ends at . ! or ? followed by space and what looks like the next sentence's start
# (so "49.00" and "e.g. this" stay whole).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True, slots=True)
class _Sentence:
    text: str
    source: str


def passages_prompt(question: str, passages: Sequence[tuple[str, str]]) -> list[Message]:
    """The messages that ask ``question`` of ``passages`` (``(source_id, text)`` pairs): a
    system message listing them as ``[source-id] text`` lines, then the question."""
    lines = [INSTRUCTION]
    for source, text in passages:
        if not source or any(c in source for c in "[]\n"):
            raise ValueError(f"a source id has no brackets or line breaks: {source!r}")
        lines.append(f"[{source}] {' '.join(text.split())}")
    return [Message.system("\n".join(lines)), Message.user(question)]


def _parse(request: ChatRequest, model: str) -> tuple[str, list[_Sentence]]:
    """The question and the passages' sentences (with their sources) in a request."""
    last_user = max(
        (i for i, m in enumerate(request.messages) if m.role == "user"),
        default=None,
    )
    if last_user is None:
        raise ModelError("no question: the request has no user message", model=model)
    question: list[str] = []
    sentences: list[_Sentence] = []
    seen: set[tuple[str, str]] = set()
    for i, message in enumerate(request.messages):
        if message.role not in ("system", "user"):
            continue
        for line in message.text.splitlines():
            match = _PASSAGE.match(line)
            if match is None:
                if i == last_user and line.strip():
                    question.append(line.strip())
                continue
            source, text = match.group(1).strip(), match.group(2)
            for part in _SENTENCE_END.split(text):
                part = part.strip()
                if sum(c.isalnum() for c in part) >= 2 and (source, part) not in seen:
                    seen.add((source, part))
                    sentences.append(_Sentence(part, source))
    return " ".join(question), sentences


class ExtractiveReader:
    """A :class:`~erpoz.models.ChatModel` that answers from the request's passages by
    selecting sentences, not by generating text.

    It ranks every passage sentence by cosine similarity to the question (embeddings from
    ``embedder``, MiniLM by default) and answers with the best ``top_k`` that score at least
    ``min_score``, best first, each followed by ``[source-id]``. ``citations`` lists those
    sources; ``confidence`` is the best similarity. When no sentence reaches ``min_score`` it
    says it cannot answer from the passages (``confidence`` then shows how far off it was).

    A request without passages is a :class:`ModelError` (a router then tries its next model);
    with ``without_passages="explain"`` (the offline ``default`` hub's reader) the answer says
    instead what the reader does and how to configure a generative model (:data:`ABOUT`), with
    ``confidence`` 0, at once: no weights are loaded for it.
    """

    def __init__(
        self,
        name: str = "extractive",
        *,
        embedder: EmbedModel | None = None,
        top_k: int = 2,
        min_score: float = 0.35,
        without_passages: str = "error",
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if without_passages not in WITHOUT_PASSAGES:
            raise ValueError(f"without_passages: error or explain, not {without_passages!r}")
        self.name = name
        self.embedder: EmbedModel = embedder if embedder is not None else MiniLMEmbed()
        self.top_k = top_k
        self.min_score = min_score
        self.without_passages = without_passages

    async def _answer(self, request: ChatRequest) -> tuple[list[str], ChatResult]:
        t0 = time.perf_counter()
        if request.response_schema is not None:
            raise ModelError(
                "an extractive reader quotes passages; it cannot answer in JSON for a schema "
                "(route structured requests to a generative model)",
                model=self.name,
            )
        question, sentences = _parse(request, self.name)
        if not question:
            raise ModelError(
                "no question: the last user message has only passages", model=self.name
            )
        if not sentences:
            if self.without_passages == "explain":
                return [ABOUT], self._about(request, t0)
            raise ModelError(
                "no passages: give them as lines '[source-id] text' in a system or user "
                "message (erpoz.models.extractive.passages_prompt builds them)",
                model=self.name,
            )
        embedded = await self.embedder.embed([question, *(s.text for s in sentences)])
        scores = _cosines(embedded.vectors)
        ranked = sorted(range(len(sentences)), key=lambda i: -scores[i])
        best = float(scores[ranked[0]])
        chosen = [i for i in ranked[: self.top_k] if scores[i] >= self.min_score]
        pieces = [f"{sentences[i].text} [{sentences[i].source}]" for i in chosen]
        citations = tuple(dict.fromkeys(sentences[i].source for i in chosen))
        text = " ".join(pieces) if pieces else NO_ANSWER
        result = ChatResult(
            text,
            self.name,
            Usage(
                embedded.usage.input_tokens or count_tokens(request.prompt_text), count_tokens(text)
            ),
            time.perf_counter() - t0,
            finish_reason="stop",
            confidence=max(0.0, min(1.0, best)),
            citations=citations,
        )
        return (pieces or [NO_ANSWER]), result

    def _about(self, request: ChatRequest, t0: float) -> ChatResult:
        return ChatResult(
            ABOUT,
            self.name,
            Usage(count_tokens(request.prompt_text), count_tokens(ABOUT)),
            time.perf_counter() - t0,
            finish_reason="stop",
            confidence=0.0,
        )

    async def generate(self, request: ChatRequest) -> ChatResult:
        return (await self._answer(request))[1]

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        pieces, result = await self._answer(request)
        for n, piece in enumerate(pieces):
            yield StreamChunk(piece if n == 0 else " " + piece)
        yield StreamChunk("", result)


def _cosines(vectors: Sequence[Sequence[float]]) -> npt.NDArray[np.float32]:
    """Cosine similarity of the first vector with each of the others."""
    import numpy as np

    m = np.asarray(vectors, dtype=np.float32)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    out: npt.NDArray[np.float32] = m[1:] @ m[0]
    return out


def create(spec: ModelSpec) -> ExtractiveReader:
    """Provider ``extractive``: ``params`` may set ``top_k``, ``min_score`` and
    ``without_passages`` (``error``, the default, or ``explain``); embeddings always come from
    MiniLM (a ``params.embed`` model name is ignored)."""
    check_params(spec)
    params = spec.params
    return ExtractiveReader(
        spec.name,
        top_k=int(params.get("top_k", 2)),
        min_score=float(params.get("min_score", 0.35)),
        without_passages=str(params.get("without_passages", "error")),
    )


_PARAMS = frozenset({"top_k", "min_score", "without_passages", "embed"})


def check_params(spec: ModelSpec) -> None:
    """``ConfigError`` when a param is unknown or out of range (nothing is built)."""
    params = spec.params
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ConfigError(
            f"model '{spec.name}': unknown params {', '.join(unknown)} for the extractive "
            f"provider (params: {', '.join(sorted(_PARAMS - {'embed'}))})"
        )
    try:
        top_k = int(params.get("top_k", 2))
        float(params.get("min_score", 0.35))
    except (TypeError, ValueError):
        raise ConfigError(
            f"model '{spec.name}': top_k is a whole number and min_score a number"
        ) from None
    if top_k < 1:
        raise ConfigError(f"model '{spec.name}': top_k must be at least 1, not {top_k}")
    mode = params.get("without_passages", "error")
    if mode not in WITHOUT_PASSAGES:
        raise ConfigError(
            f"model '{spec.name}': without_passages is error or explain, not {mode!r}"
        )
