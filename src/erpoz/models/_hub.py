"""The models a flow can reach, and ``ctx.models``: every call metered and recorded.

Chat calls from a step are journaled: each reply is recorded (``model_replied``, keyed by the
request and how many identical requests came before it in the step execution), so a step that
runs again — resumed after a crash, retried after a later failure, re-run after an approval —
gets the recorded reply (``model_reused``) instead of paying for the call again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import ModelError
from ..provenance import RunProvenance
from ._limits import RateGate
from ._meter import Budget, Metered, Recorder, bind, count_tokens, unbind
from ._protocol import ChatModel, Classifier, EmbedModel, OCRModel
from ._types import (
    ChatRequest,
    ChatResult,
    ClassifyResult,
    EmbedResult,
    Message,
    ModelSpec,
    OCRResult,
    StreamChunk,
    ToolCall,
    ToolSpec,
    Usage,
)
from .replay import request_json

if TYPE_CHECKING:
    from ..flow import Context, Journal
    from ..guards import Governed

T = TypeVar("T")
R = TypeVar("R")
AnyModel = ChatModel | EmbedModel | OCRModel | Classifier


class ModelHub:
    """Named models and routers, built once per process; steps reach them via ``ctx.models``.

    Plain chat models given with a :class:`ModelSpec` are wrapped in :class:`Metered` (budget
    checks, ``model_called`` events, cost); routers wrap those, so each underlying call is
    recorded once.
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.rates = RateGate()  # per-model rate limits; the CLI points it at the store
        self._models: dict[str, AnyModel] = {}
        self._kinds: dict[str, frozenset[type]] = {}
        self.specs: dict[str, ModelSpec] = {}

    def add(self, model: AnyModel, spec: ModelSpec | None = None) -> AnyModel:
        """Register a model (or router) under its name; chat models with a spec get metered."""
        name = spec.name if spec is not None else model.name
        if name in self._models:
            raise ModelError(f"a model named '{name}' is already registered")
        if spec is not None:
            self.specs[name] = spec
            if isinstance(model, ChatModel) and not isinstance(model, Metered):
                model = Metered(model, spec, tokenizer=count_tokens, rates=self.rates)
        self._models[name] = model
        # protocol checks are slow (runtime_checkable isinstance); do them once, here
        self._kinds[name] = frozenset(
            p for p in (ChatModel, EmbedModel, OCRModel, Classifier) if isinstance(model, p)
        )
        return model

    def is_kind(self, name: str, protocol: type) -> bool:
        """Whether model ``name`` implements ``protocol`` (checked once, when it was added)."""
        return protocol in self._kinds.get(name, frozenset())

    def get(self, name: str) -> AnyModel:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none configured"
            raise ModelError(f"unknown model '{name}' (models: {known})") from None

    def names(self) -> list[str]:
        return list(self._models)

    def bind(
        self,
        ctx: Context,
        governed: Governed | None = None,
        *,
        tokens: Callable[[str], None] | None = None,
    ) -> Models:
        """``ctx.models`` for one step; ``governed`` adds the guard checkpoints and model
        policy; ``tokens`` gets each piece of text :meth:`Models.stream` passes on."""
        return Models(
            self,
            Recorder(
                lambda k, d: ctx.emit(k, dict(d)),
                ctx.run_id,
                budget=self.budget,
                tenant=ctx.tags.get("tenant", "-"),
            ),
            governed,
            tokens,
            getattr(ctx, "journal", None),
            _Taint.of(ctx),
        )

    def unbound(self) -> Models:
        """Models for code outside a run (CLI ``models ping``, benchmarks): nothing recorded."""
        return Models(self, Recorder(lambda k, d: None, "", budget=self.budget))


class _Taint:
    """The run's untrusted content, for one step: an answer to a prompt that holds some is
    untrusted too (see :mod:`erpoz.provenance`)."""

    __slots__ = ("prov", "step")

    def __init__(self, prov: RunProvenance, step: str) -> None:
        self.prov = prov
        self.step = step

    @classmethod
    def of(cls, ctx: Any) -> _Taint | None:
        prov = getattr(ctx, "provenance", None)
        return cls(prov, ctx.step_id) if isinstance(prov, RunProvenance) else None

    def answer(self, model: str, messages: Sequence[Message], result: ChatResult) -> ChatResult:
        prov = self.prov
        if prov and result.text and any(prov.split(m.text)[1] for m in messages):
            prov.add(result.text, f"model:{model}", self.step)
        return result


def _messages(prompt: str | Message | Sequence[Message]) -> tuple[Message, ...]:
    if isinstance(prompt, str):
        return (Message.user(prompt),)
    if isinstance(prompt, Message):
        return (prompt,)
    return tuple(prompt)


def _schema_of(output: Any) -> Mapping[str, Any]:
    if isinstance(output, type) and issubclass(output, BaseModel):
        return output.model_json_schema()
    return TypeAdapter(output).json_schema()


class Models:
    """What a step sees as ``ctx.models``."""

    __slots__ = ("_gov", "_hub", "_journal", "_rec", "_taint", "_tokens")

    def __init__(
        self,
        hub: ModelHub,
        recorder: Recorder,
        governed: Governed | None = None,
        tokens: Callable[[str], None] | None = None,
        journal: Journal | None = None,
        taint: _Taint | None = None,
    ) -> None:
        self._hub = hub
        self._rec = recorder
        self._gov = governed
        self._tokens = tokens
        self._journal = journal
        self._taint = taint

    def _chat_model(self, name: str) -> ChatModel:
        model = self._hub.get(name)
        if not self._hub.is_kind(name, ChatModel):
            raise ModelError(f"'{name}' is not a chat model", model=name)
        return model  # type: ignore[return-value]

    async def chat(
        self,
        model: str,
        prompt: str | Message | Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        schema: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        tags: Sequence[str] = (),
        truncate: bool = False,
    ) -> ChatResult:
        """Ask ``model`` (a model or a router); the call is budgeted and recorded.

        A prompt longer than the model's context window is an error, unless ``truncate=True``:
        then the oldest messages (never system messages or the last one) are dropped and, if
        still too long, the longest message is cut; a ``context_truncated`` event says what.
        """
        messages = _messages(prompt)
        gov = self._gov
        mapping: dict[str, str] = {}
        if gov is not None:
            messages, mapping = await gov.model_input(model, messages)
        if truncate:
            messages = self._fit(model, messages, max_tokens)
        request = ChatRequest(
            messages,
            tuple(tools),
            schema,
            temperature,
            max_tokens,
            timeout,
            frozenset(tags),
        )
        if self._taint is not None:
            return self._taint.answer(
                model, messages, await self._journaled(model, request, mapping)
            )
        return await self._journaled(model, request, mapping)

    async def _journaled(
        self, model: str, request: ChatRequest, mapping: Mapping[str, str]
    ) -> ChatResult:
        journal = self._journal
        if journal is None:
            return await self._answer(model, request, mapping)
        # the reply as the step gets it (after the output guards: what they redact is never
        # recorded) is journaled under the request as sent
        key = journal.key(_request_what(model, request))
        recorded = journal.result(key)
        if recorded is not None:
            self._rec.emit("model_reused", {"model": model, "idempotency_key": key})
            return _reply_from(recorded)
        await journal.settle()  # the request leaves the process: its causes are on record
        result = await self._answer(model, request, mapping)
        await _record_reply(journal, key, model, result)
        return result

    async def _answer(
        self, model: str, request: ChatRequest, mapping: Mapping[str, str]
    ) -> ChatResult:
        result = await self._generate(model, request)
        if self._gov is not None:
            result = await self._gov.model_output(model, request, result, mapping, self._generate)
        return result

    async def _generate(self, model: str, request: ChatRequest) -> ChatResult:
        chat = self._chat_model(model)
        token = bind(self._rec)
        try:
            return await chat.generate(request)
        finally:
            unbind(token)

    def _window(self, model: str) -> int | None:
        """The context window of a model, or the smallest among a router's members."""
        spec = self._hub.specs.get(model)
        if spec is not None:
            return spec.context_window
        windows = [
            w
            for m in getattr(self._hub.get(model), "models", ())
            if (w := self._window(m.name)) is not None
        ]
        return min(windows) if windows else None

    def _fit(
        self, model: str, messages: tuple[Message, ...], max_tokens: int | None
    ) -> tuple[Message, ...]:
        window = self._window(model)
        if window is None:
            return messages
        limit = max(1, window - (max_tokens if max_tokens is not None else 256))

        def size(ms: Sequence[Message]) -> int:
            return sum(count_tokens(m.text) for m in ms)

        before = size(messages)
        if before <= limit:
            return messages
        kept = list(messages)
        dropped = 0
        i = 0
        while size(kept) > limit and i < len(kept) - 1:
            if kept[i].role == "system":
                i += 1
                continue
            del kept[i]
            dropped += 1
        cut = 0
        excess = size(kept) - limit
        if excess > 0:
            # cut only plain-text messages, so image parts and tool calls are never lost
            plain = [j for j, m in enumerate(kept) if isinstance(m.content, str) and m.content]
            if not plain:
                raise ModelError(
                    f"the prompt (~{before} tokens) does not fit the context window ({window}) "
                    "and has no plain text message to cut",
                    model=model,
                    code="context_length_exceeded",
                )
            longest = max(plain, key=lambda j: len(kept[j].text))
            text = kept[longest].text
            keep_chars = max(0, len(text) - excess * 4 - 4)
            cut = len(text) - keep_chars
            kept[longest] = replace(kept[longest], content=text[:keep_chars])
        self._rec.emit(
            "context_truncated",
            {
                "model": model,
                "window": window,
                "tokens_before": before,
                "tokens_after": size(kept),
                "dropped_messages": dropped,
                "cut_chars": cut,
            },
        )
        return tuple(kept)

    async def structured(
        self,
        model: str,
        prompt: str | Message | Sequence[Message],
        output: type[T],
        *,
        max_tokens: int | None = None,
        retries: int = 1,
    ) -> T:
        """Ask for JSON that fits ``output`` (a pydantic model or any type) and parse it;
        re-asks up to ``retries`` times with the validation error when it does not fit."""
        messages = list(_messages(prompt))
        schema = _schema_of(output)
        adapter = TypeAdapter(output)
        for attempt in range(retries + 1):
            result = await self.chat(model, messages, schema=schema, max_tokens=max_tokens)
            try:
                return adapter.validate_json(result.text)
            except ValidationError as exc:
                if attempt == retries:
                    raise ModelError(
                        f"answer does not fit {getattr(output, '__name__', output)} after "
                        f"{retries + 1} tries: {exc.errors()[0]['msg']}",
                        model=result.model,
                    ) from None
                messages += [
                    Message.assistant(result.text),
                    Message.user(
                        "That JSON does not fit the schema: "
                        f"{json.dumps(exc.errors()[0]['msg'])}. Answer again with JSON only."
                    ),
                ]
        raise AssertionError("unreachable")

    async def stream(
        self,
        model: str,
        prompt: str | Message | Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream the answer; the last chunk carries the full ``ChatResult``. The model-input
        guards apply; the output guards do not (what was streamed cannot be taken back): guard
        the collected text yourself, or use :meth:`chat`. The reply is journaled as for
        :meth:`chat`; a recorded one comes back in one chunk.

        Each piece of text also goes to the run's token listeners (a caller following the run:
        ``POST /api/runs`` with ``stream``, the gateway, the LangChain runnable), unless guards
        check answers (``model_output`` or ``delivery``): then nothing leaves before the output
        has passed them."""
        messages = _messages(prompt)
        if self._gov is not None:
            messages, _ = await self._gov.model_input(model, messages)
        request = ChatRequest(messages, max_tokens=max_tokens, temperature=temperature)
        journal = self._journal
        key = None
        if journal is not None:
            key = journal.key(_request_what(model, request))
            recorded = journal.result(key)
            if recorded is not None:  # the whole recorded reply, in one piece
                self._rec.emit("model_reused", {"model": model, "idempotency_key": key})
                result = _reply_from(recorded)
                if self._tokens is not None and result.text:
                    self._tokens(result.text)
                yield StreamChunk(result.text)
                yield StreamChunk("", result)
                return
            await journal.settle()  # the request leaves the process: its causes are on record
        chat = self._chat_model(model)
        tokens = self._tokens
        token = bind(self._rec)
        final: ChatResult | None = None
        try:
            async for chunk in chat.stream(request):
                if chunk.result is not None:
                    final = chunk.result
                elif tokens is not None and chunk.text:
                    tokens(chunk.text)
                yield chunk
        finally:
            unbind(token)
        if journal is not None and key is not None and final is not None:
            await _record_reply(journal, key, model, final)

    async def embed(self, model: str, texts: Sequence[str] | str) -> EmbedResult:
        """Embed ``texts``; like a chat's messages, each passes the ``model_input`` guards and
        the model policy first (when guardrails are configured), the vectors are of the texts
        as they may be sent."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        m: EmbedModel = self._of_kind(model, EmbedModel, "an embedding model")
        if self._gov is not None:
            guarded, _ = await self._gov.model_input(model, tuple(Message.user(t) for t in batch))
            batch = [g.text for g in guarded]
        return await self._recorded(
            model,
            "embed",
            m.embed(batch),
            lambda r: {
                "texts": len(batch),
                "input_tokens": r.usage.input_tokens,
                "answered_by": r.model,
            },
        )

    async def ocr(self, model: str, image: bytes) -> OCRResult:
        """Text read from an image: untrusted content (the image came from outside)."""
        m: OCRModel = self._of_kind(model, OCRModel, "an OCR model")
        r: OCRResult = await self._recorded(
            model, "ocr", m.read(image), lambda r: {"lines": len(r.lines)}
        )
        if self._taint is not None:
            self._taint.prov.add(r.text, f"ocr:{model}", self._taint.step)
        return r

    async def classify(self, model: str, text: str) -> ClassifyResult:
        m: Classifier = self._of_kind(model, Classifier, "a classifier")
        return await self._recorded(
            model, "classify", m.classify(text), lambda r: {"label": r.label}
        )

    def _of_kind(self, model: str, protocol: type, what: str) -> Any:
        m = self._hub.get(model)
        if not self._hub.is_kind(model, protocol):
            raise ModelError(f"'{model}' is not {what}", model=model)
        return m

    async def _recorded(
        self,
        model: str,
        kind: str,
        call: Awaitable[R],
        detail: Callable[[R], Mapping[str, Any]],
    ) -> R:
        """Await a non-chat model call and record it as ``model_called`` (ok or error), with
        the provider of a configured model (traces name it: ``gen_ai.provider.name``)."""
        spec = self._hub.specs.get(model)
        provider = {"provider": spec.provider} if spec is not None else {}
        t0 = time.perf_counter()
        try:
            result = await call
        except Exception as exc:
            self._rec.emit(
                "model_called",
                {
                    "model": model,
                    **provider,
                    "kind": kind,
                    "status": "error",
                    "error": f"{type(exc).__name__}: {exc}",
                    "type": type(exc).__name__,
                    "retryable": bool(getattr(exc, "retryable", False)),
                    "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
                    "cost_usd": 0.0,
                },
            )
            raise
        self._rec.emit(
            "model_called",
            {
                "model": model,
                **provider,
                "kind": kind,
                "status": "ok",
                **detail(result),
                "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
                "cost_usd": 0.0,
            },
        )
        return result


# --- the journal of replies --------------------------------------------------------------------
def _request_what(model: str, request: ChatRequest) -> str:
    """What identifies a chat call in a step's journal: the model (or router) asked and the
    request (messages, tools, schema, and the sampling settings that change the answer)."""
    doc = request_json(request)
    doc["temperature"] = request.temperature
    doc["max_tokens"] = request.max_tokens
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"model:{model}/{hashlib.sha256(text.encode()).hexdigest()}"


async def _record_reply(journal: Journal, key: str, model: str, result: ChatResult) -> None:
    data = {"model": model, "answered_by": result.model, "idempotency_key": key}
    await journal.finish("model_replied", key, data, _reply_json(result), commit=False)


def _reply_json(result: ChatResult) -> str:
    return json.dumps(
        {
            "text": result.text,
            "model": result.model,
            "usage": [result.usage.input_tokens, result.usage.output_tokens],
            "latency_s": result.latency_s,
            "tool_calls": [[c.id, c.name, dict(c.arguments)] for c in result.tool_calls],
            "finish_reason": result.finish_reason,
            "confidence": result.confidence,
            "cost_usd": result.cost_usd,
            "route": list(result.route),
            "citations": list(result.citations),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _reply_from(payload: str) -> ChatResult:
    """A recorded reply, as the step got it the first time."""
    d = json.loads(payload)
    return ChatResult(
        d["text"],
        d["model"],
        Usage(*d["usage"]),
        d["latency_s"],
        tuple(ToolCall(i, n, a) for i, n, a in d["tool_calls"]),
        d["finish_reason"],
        d["confidence"],
        d["cost_usd"],
        tuple(d["route"]),
        tuple(d["citations"]),
    )
