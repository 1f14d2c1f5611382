"""The four model protocols. A provider implements one; a router is itself a ChatModel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from ._types import ChatRequest, ChatResult, ClassifyResult, EmbedResult, OCRResult, StreamChunk


@runtime_checkable
class ChatModel(Protocol):
    """Generates (or streams) an answer to a chat request."""

    name: str

    async def generate(self, request: ChatRequest) -> ChatResult: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """Chunks of the answer; the last one carries the whole ``ChatResult``."""
        ...


@runtime_checkable
class EmbedModel(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> EmbedResult: ...


@runtime_checkable
class OCRModel(Protocol):
    name: str

    async def read(self, image: bytes) -> OCRResult: ...


@runtime_checkable
class Classifier(Protocol):
    name: str

    async def classify(self, text: str) -> ClassifyResult: ...
