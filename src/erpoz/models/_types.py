"""What crosses the border to and from a model: messages, requests, results. Frozen and typed."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._limits import RateLimit

Role = Literal["system", "user", "assistant", "tool"]
Modality = Literal["text", "image"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image given inline (``data``, with its MIME type) or by URL."""

    data: bytes | None = None
    url: str | None = None
    mime: str = "image/png"

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("an ImagePart has either data or url")

    def data_url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.data is not None
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to call a tool; ``arguments`` is parsed JSON."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to a model: name, description and a JSON schema of its parameters."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", text)

    @classmethod
    def user(cls, *parts: str | Part) -> Message:
        """A user message of text and image parts: ``Message.user("what is this?", image)``."""
        if len(parts) == 1 and isinstance(parts[0], str):
            return cls("user", parts[0])
        return cls("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))

    @classmethod
    def assistant(cls, text: str, tool_calls: Sequence[ToolCall] = ()) -> Message:
        return cls("assistant", text, tuple(tool_calls))

    @classmethod
    def tool(cls, tool_call_id: str, text: str) -> Message:
        return cls("tool", text, tool_call_id=tool_call_id)

    @property
    def text(self) -> str:
        """The text of the message (image parts left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def modalities(self) -> frozenset[str]:
        if isinstance(self.content, str):
            return frozenset({"text"})
        return frozenset("image" if isinstance(p, ImagePart) else "text" for p in self.content)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat call. ``response_schema`` asks for JSON output that fits the schema."""

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    response_schema: Mapping[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    tags: frozenset[str] = frozenset()

    @property
    def modalities(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for m in self.messages:
            out |= m.modalities
        return out

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.text for m in self.messages)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A model's answer, with what it cost. ``model`` names the model that actually answered
    (behind a router); ``confidence`` is set by models that can estimate it."""

    text: str
    model: str
    usage: Usage = Usage()
    latency_s: float = 0.0
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    confidence: float | None = None
    cost_usd: float = 0.0
    route: tuple[str, ...] = ()
    citations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer; the last chunk carries ``result``."""

    text: str
    result: ChatResult | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: tuple[tuple[float, ...], ...]
    model: str
    usage: Usage = Usage()
    latency_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OCRLine:
    """A line of text found in an image, its box (four corner points) and the reader's score."""

    text: str
    box: tuple[tuple[float, float], ...]
    score: float


@dataclass(frozen=True, slots=True)
class OCRResult:
    lines: tuple[OCRLine, ...]
    model: str
    latency_s: float = 0.0

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    scores: Mapping[str, float]
    model: str
    latency_s: float = 0.0

    @property
    def label(self) -> str:
        return max(self.scores, key=lambda k: self.scores[k])


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A configured model: how to reach it and what it costs and can do."""

    name: str
    provider: str
    kind: Literal["chat", "embed", "ocr", "classify"] = "chat"
    params: Mapping[str, Any] = field(default_factory=dict)
    price_in: float = 0.0  # USD per million input tokens
    price_out: float = 0.0  # USD per million output tokens
    context_window: int = 8192
    modalities: frozenset[str] = frozenset({"text"})
    tags: frozenset[str] = frozenset()
    limits: RateLimit | None = None
    """Requests and tokens per window, shared by every process of the store (``limits:``)."""

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.price_in + usage.output_tokens * self.price_out) / 1e6
