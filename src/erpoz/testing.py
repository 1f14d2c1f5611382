"""Test doubles for users' own tests: models that answer from a script or a function, offline.

>>> from erpoz.testing import FunctionModel, ScriptedModel
>>> echo = FunctionModel(lambda req: req.messages[-1].text.upper(), name="echo")
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from .errors import ModelError
from .models import ChatRequest, ChatResult, StreamChunk, Usage, block_real_providers, count_tokens
from .models.stub_server import Behaviour, OpenAIStubServer

__all__ = [
    "Behaviour",
    "FunctionModel",
    "OpenAIStubServer",
    "ScriptedModel",
    "block_real_providers",
]

Reply = str | ChatResult | BaseException


def _as_result(reply: Reply, name: str, request: ChatRequest, t0: float) -> ChatResult:
    if isinstance(reply, BaseException):
        raise reply
    if isinstance(reply, ChatResult):
        return reply
    usage = Usage(count_tokens(request.prompt_text), count_tokens(reply))
    return ChatResult(reply, name, usage, time.perf_counter() - t0, finish_reason="stop")


class _Double:
    name: str
    calls: list[ChatRequest]

    async def _reply(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    async def generate(self, request: ChatRequest) -> ChatResult:
        self.calls.append(request)
        return await self._reply(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        result = await self.generate(request)
        for word in result.text.split(" "):
            yield StreamChunk(word + " ")
        yield StreamChunk("", result)


class ScriptedModel(_Double):
    """Answers with the given replies in order; an exception in the script is raised instead.

    ``ScriptedModel(["first", ModelError("down", retryable=True), "third"])``. Running out of
    replies is an error that says so. ``calls`` keeps every request.
    """

    def __init__(self, replies: Iterable[Reply], *, name: str = "scripted") -> None:
        self.name = name
        self._replies = list(replies)
        self.calls: list[ChatRequest] = []

    async def _reply(self, request: ChatRequest) -> ChatResult:
        t0 = time.perf_counter()
        if not self._replies:
            raise ModelError(
                f"script exhausted after {len(self.calls) - 1} replies", model=self.name
            )
        return _as_result(self._replies.pop(0), self.name, request, t0)


class FunctionModel(_Double):
    """Answers with ``fn(request)`` (sync or async; returns text, a ChatResult, or raises)."""

    def __init__(
        self,
        fn: Callable[[ChatRequest], Reply | Awaitable[Reply]],
        *,
        name: str = "function",
    ) -> None:
        self.name = name
        self._fn = fn
        self.calls: list[ChatRequest] = []

    async def _reply(self, request: ChatRequest) -> ChatResult:
        t0 = time.perf_counter()
        out: Any = self._fn(request)
        if isinstance(out, Awaitable):
            out = await out
        return _as_result(out, self.name, request, t0)
