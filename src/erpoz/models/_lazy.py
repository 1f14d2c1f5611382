"""Configured models made by their provider: at once, or on first use (so that configuring
local models (weights) or remote ones (clients) costs nothing until a step calls them)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..errors import ConfigError, ModelError
from ._plugins import check, create
from ._protocol import ChatModel, Classifier, EmbedModel, OCRModel
from ._types import (
    ChatRequest,
    ChatResult,
    ClassifyResult,
    EmbedResult,
    ModelSpec,
    OCRResult,
    StreamChunk,
)

__all__ = ["Factory", "configured_model"]

Factory = Callable[[ModelSpec], Any]


def configured_model(spec: ModelSpec, factory: Factory | None = None, *, lazy: bool = True) -> Any:
    """The model ``spec`` describes, made by ``factory`` (default: its installed provider,
    whose params are checked now: a typo in them is a ``ConfigError``), at once or, with
    ``lazy`` (the default), on first use. A lazy model that cannot be made is a ``ModelError``
    at that call (a router may fall back), tried again on the next call."""
    if factory is None:
        check(spec)
        factory = create
    return _Lazy.of(spec, factory) if lazy else _made(spec, factory)


def _made(spec: ModelSpec, factory: Factory) -> Any:
    try:
        model = factory(spec)
    except (ModelError, ConfigError):
        raise
    except Exception as exc:
        raise ModelError(
            f"provider '{spec.provider}' could not make it: {type(exc).__name__}: {exc}",
            model=spec.name,
        ) from exc
    wanted = _KINDS[spec.kind]
    if not isinstance(model, wanted):
        raise ModelError(
            f"provider '{spec.provider}' made a {type(model).__name__}, not a {spec.kind} model",
            model=spec.name,
        )
    return model


class _Lazy:
    """A configured model that its provider makes on first use, so that configuring local
    models (weights) or remote ones (clients) costs nothing until a step calls them. A failure
    to make it is a ``ModelError`` (a router may fall back), tried again on the next call."""

    def __init__(self, spec: ModelSpec, factory: Factory) -> None:
        self.name = spec.name
        self.spec = spec
        self._factory = factory
        self._model: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def of(spec: ModelSpec, factory: Factory) -> Any:
        return _LAZY_KINDS[spec.kind](spec, factory)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> Any:
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    try:
                        self._model = _made(self.spec, self._factory)
                    except ConfigError as exc:
                        raise ModelError(exc.message, model=self.name) from exc
                model = self._model
        return model


class _LazyChat(_Lazy):
    async def generate(self, request: ChatRequest) -> ChatResult:
        result: ChatResult = await self.get().generate(request)
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        async for chunk in self.get().stream(request):
            yield chunk


class _LazyEmbed(_Lazy):
    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        result: EmbedResult = await self.get().embed(texts)
        return result


class _LazyOCR(_Lazy):
    async def read(self, image: bytes) -> OCRResult:
        result: OCRResult = await self.get().read(image)
        return result


class _LazyClassify(_Lazy):
    async def classify(self, text: str) -> ClassifyResult:
        result: ClassifyResult = await self.get().classify(text)
        return result


_LAZY_KINDS: dict[str, type[_Lazy]] = {
    "chat": _LazyChat,
    "embed": _LazyEmbed,
    "ocr": _LazyOCR,
    "classify": _LazyClassify,
}
_KINDS: dict[str, type] = {
    "chat": ChatModel,
    "embed": EmbedModel,
    "ocr": OCRModel,
    "classify": Classifier,
}
