"""LangChain (langchain-core 1.x), both directions. ``pip install 'erpoz[langchain]'``.

- **A LangChain chat model as an erpoz model**: ``provider: langchain`` in ``erpoz.yaml``
  (params ``factory: module:attr`` and ``kwargs``), or :class:`LangChainChat` in Python. It is
  metered, routed, budgeted, guarded and recorded like every other model.
- **LangChain tools as erpoz tools**: :func:`tool_from_langchain` wraps a ``BaseTool`` in an
  erpoz :class:`~erpoz.tools.Tool`; registered in a ``ToolRegistry``, every call goes through
  the same deny-by-default policy, guards and ``tool_called`` audit as erpoz's own tools.
- **An erpoz flow as a LangChain Runnable**: :func:`as_runnable` (``invoke``, ``ainvoke``,
  ``batch``, ``stream`` …), run in this process on an engine, or on an ``erpoz serve`` through
  :mod:`erpoz.client`. A run that waits for review raises
  :class:`~erpoz.errors.WaitingForReview` (its ``run_id`` and ``steps``), never hangs.

See ``docs/integrations/langchain.md``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import queue
import sys
import threading
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from ..engine import Engine, RunResult, new_run_id, top_step
from ..errors import ConfigError, ErpozError, FlowError, ModelError, RunError, WaitingForReview
from ..flow import Flow, Plan
from ..models import (
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    ModelSpec,
    StreamChunk,
    TextPart,
    ToolCall,
    Usage,
    ensure_allowed,
)
from ..models.openai_compat import is_loopback
from ..tools import Tool


class LangChainMissing(ConfigError, ImportError):
    """The ``langchain`` extra is not installed."""


try:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.prompt_values import PromptValue
    from langchain_core.runnables import Runnable, RunnableConfig
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
except ImportError as exc:  # pragma: no cover - only without the extra
    raise LangChainMissing(
        "erpoz.integrations.langchain needs langchain-core 1.x: pip install 'erpoz[langchain]' "
        f"({exc})"
    ) from exc

__all__ = [
    "FlowRunnable",
    "LangChainChat",
    "LangChainMissing",
    "RemoteFlowRunnable",
    "as_runnable",
    "check_params",
    "create",
    "tool_from_langchain",
    "tools_from_langchain",
]

T = TypeVar("T")
_PARAMS = frozenset({"factory", "kwargs", "local"})
_RETRYABLE = frozenset({408, 409, 425, 429})
#: attributes through which LangChain chat models name the endpoint they call
_URL_ATTRS = (
    "openai_api_base",
    "base_url",
    "api_base",
    "anthropic_api_url",
    "azure_endpoint",
    "endpoint",
    "endpoint_url",
)


# --- a LangChain chat model as an erpoz chat model ------------------------------------------
def check_params(spec: ModelSpec) -> None:
    """``provider: langchain`` params, checked without importing the factory: ``factory``
    (``module:attr``, required), ``kwargs`` (a mapping), ``local`` (a bool)."""
    params = spec.params
    unknown = set(params) - _PARAMS
    if unknown:
        raise ConfigError(
            f"model '{spec.name}' (provider 'langchain'): unknown params "
            f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(_PARAMS))}"
        )
    factory = params.get("factory")
    if not isinstance(factory, str) or ":" not in factory:
        raise ConfigError(
            f"model '{spec.name}' (provider 'langchain'): params.factory is the import path "
            "of a LangChain chat model, a class or a function making one, like "
            "'langchain_openai:ChatOpenAI'"
        )
    if not isinstance(params.get("kwargs", {}), Mapping):
        raise ConfigError(f"model '{spec.name}': params.kwargs must be a mapping")
    if not isinstance(params.get("local", False), bool):
        raise ConfigError(f"model '{spec.name}': params.local must be true or false")


def _import(ref: str, what: str) -> Any:
    """``module:attr``, importable from ``sys.path`` or the current directory."""
    module_name, _, attr = ref.partition(":")
    here = str(Path.cwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {module_name!r}: {exc}") from None
    finally:
        if added:
            sys.path.remove(here)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: module {module_name!r} has no {attr!r}") from None
    return obj


def create(spec: ModelSpec) -> LangChainChat:
    """The ``langchain`` provider's factory (entry point ``erpoz.providers``)."""
    check_params(spec)
    what = f"model '{spec.name}' (provider 'langchain')"
    factory = _import(str(spec.params["factory"]), what)
    kwargs = dict(spec.params.get("kwargs") or {})
    if isinstance(factory, BaseChatModel):
        if kwargs:
            raise ConfigError(f"{what}: the factory is a model already; it takes no kwargs")
        model = factory
    elif callable(factory):
        try:
            model = factory(**kwargs)
        except Exception as exc:
            raise ConfigError(f"{what}: {spec.params['factory']}(...) failed: {exc}") from exc
    else:
        raise ConfigError(f"{what}: {spec.params['factory']} is neither a model nor callable")
    if not isinstance(model, BaseChatModel):
        raise ConfigError(
            f"{what}: {spec.params['factory']} made a {type(model).__name__}, not a LangChain "
            "BaseChatModel"
        )
    return LangChainChat(model, spec.name, local=spec.params.get("local"))


def _is_local(model: BaseChatModel) -> bool:
    """Whether a model reaches nothing outside this machine: its endpoint is loopback, or it
    is one of langchain-core's own offline models. Anything else counts as real (it is
    refused while ``block_real_providers`` is on)."""
    for attr in _URL_ATTRS:
        url = getattr(model, attr, None)
        if isinstance(url, str) and url:
            return is_loopback(url)
    return type(model).__module__.startswith("langchain_core.")


class LangChainChat:
    """A LangChain chat model (``BaseChatModel``) as an erpoz :class:`~erpoz.models.ChatModel`.

    Add it to a ``ModelHub`` with a ``ModelSpec`` (prices, context window) and it is metered,
    budgeted, routed, guarded and recorded like any model. Tools are bound with
    ``bind_tools``, a response schema with ``with_structured_output``; every failure is a
    :class:`~erpoz.errors.ModelError` with ``status`` and ``retryable``. ``local``: whether the
    model reaches no network (default: guessed from its endpoint; a model that is not local
    refuses to run under ``block_real_providers``)."""

    def __init__(self, model: BaseChatModel, name: str, *, local: bool | None = None) -> None:
        self.model = model
        self.name = name
        self.local = _is_local(model) if local is None else local

    def _allowed(self) -> None:
        if not self.local:
            ensure_allowed(self.name, f"LangChain model {type(self.model).__name__}")

    def _runnable(self, request: ChatRequest) -> Runnable[Any, Any]:
        model: Runnable[Any, Any] = self.model
        if request.tools:
            tools = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]
            try:
                model = self.model.bind_tools(tools)
            except NotImplementedError:
                raise ModelError(
                    f"{type(self.model).__name__} cannot call tools (no bind_tools)",
                    model=self.name,
                ) from None
        if request.response_schema is not None:
            schema = {"title": "answer", **dict(request.response_schema)}
            try:
                model = self.model.with_structured_output(schema, include_raw=True)
            except NotImplementedError:
                raise ModelError(
                    f"{type(self.model).__name__} cannot answer to a schema "
                    "(no with_structured_output)",
                    model=self.name,
                ) from None
        return model

    @staticmethod
    def _kwargs(request: ChatRequest) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if request.max_tokens is not None:
            kw["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kw["temperature"] = request.temperature
        return kw

    async def generate(self, request: ChatRequest) -> ChatResult:
        self._allowed()
        model = self._runnable(request)
        messages = to_langchain(request.messages)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(request.timeout):
                answer = await model.ainvoke(messages, **self._kwargs(request))
        except TimeoutError:
            raise ModelError(
                f"no answer within {request.timeout} s", model=self.name, retryable=True
            ) from None
        except ErpozError:
            raise
        except Exception as exc:
            raise _model_error(self.name, exc) from exc
        return self._result(answer, time.perf_counter() - t0)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        self._allowed()
        messages = to_langchain(request.messages)
        t0 = time.perf_counter()
        total: AIMessageChunk | None = None
        try:
            async with asyncio.timeout(request.timeout):
                async for piece in self.model.astream(messages, **self._kwargs(request)):
                    if not isinstance(piece, AIMessageChunk):
                        continue
                    total = piece if total is None else total + piece
                    text = str(piece.text)
                    if text:
                        yield StreamChunk(text)
        except TimeoutError:
            raise ModelError(
                f"no answer within {request.timeout} s", model=self.name, retryable=True
            ) from None
        except ErpozError:
            raise
        except Exception as exc:
            raise _model_error(self.name, exc) from exc
        yield StreamChunk(
            "", self._result(total or AIMessageChunk(content=""), time.perf_counter() - t0)
        )

    def _result(self, answer: Any, seconds: float) -> ChatResult:
        parsed: Any = None
        if isinstance(answer, dict) and "raw" in answer:  # with_structured_output(include_raw)
            if answer.get("parsing_error") is not None:
                raise ModelError(
                    f"the answer does not fit the schema: {answer['parsing_error']}",
                    model=self.name,
                )
            parsed = answer.get("parsed")
            answer = answer["raw"]
        if not isinstance(answer, AIMessage):
            raise ModelError(
                f"{type(self.model).__name__} answered a {type(answer).__name__}, not a message",
                model=self.name,
            )
        calls = tuple(
            ToolCall(c.get("id") or f"call_{i}", c["name"], dict(c.get("args") or {}))
            for i, c in enumerate(answer.tool_calls)
        )
        text = str(answer.text)
        if parsed is not None:
            text = parsed.model_dump_json() if isinstance(parsed, BaseModel) else json.dumps(parsed)
        meta = answer.usage_metadata
        usage = Usage(meta["input_tokens"], meta["output_tokens"]) if meta else Usage()
        finish = answer.response_metadata.get("finish_reason")
        return ChatResult(
            text,
            self.name,
            usage,
            seconds,
            tool_calls=calls,
            finish_reason=str(finish) if finish else ("tool_calls" if calls else "stop"),
        )


def _model_error(name: str, exc: Exception) -> ModelError:
    """A LangChain (or provider SDK) error as a ModelError, its HTTP status kept."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if not isinstance(status, int):
        status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        status = None
    kind = " ".join(type(e).__name__ for e in (exc, exc.__cause__) if e is not None)
    transient = isinstance(exc, TimeoutError | ConnectionError) or any(
        w in kind for w in ("Timeout", "Connection", "Connect")
    )
    retryable = (status in _RETRYABLE or status >= 500) if status is not None else transient
    return ModelError(
        f"{type(exc).__name__}: {exc}", model=name, retryable=retryable, status=status
    )


def to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    """erpoz messages as LangChain messages (images as ``image_url`` content blocks)."""
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(content=m.text))
        elif m.role == "user":
            if isinstance(m.content, str):
                out.append(HumanMessage(content=m.content))
            else:
                blocks: list[str | dict[str, Any]] = [
                    {"type": "text", "text": p.text}
                    if isinstance(p, TextPart)
                    else {"type": "image_url", "image_url": {"url": p.data_url()}}
                    for p in m.content
                    if isinstance(p, TextPart | ImagePart)
                ]
                out.append(HumanMessage(content=blocks))
        elif m.role == "assistant":
            out.append(
                AIMessage(
                    content=m.text,
                    tool_calls=[
                        {"name": c.name, "args": dict(c.arguments), "id": c.id, "type": "tool_call"}
                        for c in m.tool_calls
                    ],
                )
            )
        else:
            out.append(ToolMessage(content=m.text, tool_call_id=m.tool_call_id or ""))
    return out


# --- LangChain tools as erpoz tools ---------------------------------------------------------
class _Checked:
    """Arguments that passed a tool's schema; only those the caller gave (so the tool's own
    defaults stay in charge)."""

    __slots__ = ("_args",)

    def __init__(self, args: dict[str, Any]) -> None:
        self._args = args

    def model_dump(self) -> dict[str, Any]:
        return self._args


def _validator(t: BaseTool, parameters: Mapping[str, Any]) -> Callable[..., _Checked]:
    """Checks a call's arguments against the tool's schema; unknown arguments are refused
    (pydantic's ``ValidationError``, which the tool call reports naming the argument)."""
    schema = t.tool_call_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        strict: type[BaseModel] = type(
            f"{schema.__name__}Strict", (schema,), {"model_config": ConfigDict(extra="forbid")}
        )
    else:
        props = dict(parameters.get("properties") or {})
        required = set(parameters.get("required") or ())
        fields: dict[str, Any] = {p: (Any, ... if p in required else None) for p in props}
        strict = create_model(f"{t.name}_args", __config__=ConfigDict(extra="forbid"), **fields)

    def validate(**arguments: Any) -> _Checked:
        given = strict.model_validate(arguments)
        return _Checked(given.model_dump(exclude_unset=True))

    return validate


def tool_from_langchain(
    t: BaseTool,
    *,
    name: str | None = None,
    side_effects: bool = False,
    secret: Sequence[str] = (),
) -> Tool:
    """A LangChain tool as an erpoz :class:`~erpoz.tools.Tool`: register it in a
    ``ToolRegistry`` and steps (and models, through ``ctx.tools.agent``) call it under the
    registry's policy (denied unless a rule grants it), guards and audit. ``side_effects``
    gives each call an idempotency key and journals its result (a resumed run does not call
    it again); ``secret`` names arguments redacted in the log."""
    parameters = dict(convert_to_openai_tool(t)["function"].get("parameters") or {})
    parameters.pop("title", None)
    unknown = set(secret) - set(parameters.get("properties") or {})
    if unknown:
        raise ErpozError(f"tool {t.name}: secret names unknown arguments {sorted(unknown)}")

    async def call(**arguments: Any) -> Any:
        return await t.ainvoke(arguments)

    call.__name__ = name or t.name
    call.__doc__ = t.description
    return Tool(
        name=name or t.name,
        description=t.description,
        fn=call,
        parameters=parameters,
        side_effects=side_effects,
        secret_params=frozenset(secret),
        validator=_validator(t, parameters),
    )


def tools_from_langchain(tools: Sequence[BaseTool], *, side_effects: bool = False) -> list[Tool]:
    """Several LangChain tools as erpoz tools (see :func:`tool_from_langchain`)."""
    return [tool_from_langchain(t, side_effects=side_effects) for t in tools]


# --- an erpoz flow as a LangChain Runnable --------------------------------------------------
class _Portal:
    """An event loop in a thread of its own, where a runnable drives its engine: the store's
    connections and the engine's tasks stay on one loop, whether the runnable is called from
    synchronous code, from another event loop, or from several threads at once (``batch``)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="erpoz-runnable", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RunError(
                "a flow runnable was called synchronously from one of its own steps; "
                "use ainvoke there"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = self.submit(coro).result()
        return result

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = await asyncio.wrap_future(self.submit(coro))
        return result

    def close(self, last: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if last is not None:
            asyncio.run_coroutine_threadsafe(last(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _outcome(result: RunResult, full: bool) -> Any:
    """What ``invoke`` returns for a run: the output, or the whole ``RunResult``; a run that
    waits for review raises ``WaitingForReview``, a failed one ``StepFailed`` / ``RunError``."""
    if result.status == "waiting":
        raise WaitingForReview(
            f"run {result.run_id} waits for review of {', '.join(result.waiting_steps)}; a "
            f"reviewer approves it (erpoz review approve {result.run_id}) and it goes on",
            run_id=result.run_id,
            steps=result.waiting_steps,
        )
    if full:
        return result
    return result.unwrap()


def _bind_input(value: Any, names: Sequence[str], single_str: bool, flow: str) -> dict[str, Any]:
    """A runnable's input as the flow's inputs: a mapping of them; for a flow with one input,
    the value itself (a prompt value or a message as its text when that input is a str)."""
    if isinstance(value, Mapping) and set(value) <= set(names) and (value or not names):
        return dict(value)
    if len(names) == 1:
        if single_str:
            if isinstance(value, PromptValue):
                value = value.to_string()
            elif isinstance(value, BaseMessage):
                value = str(value.text)
            elif isinstance(value, list) and value and isinstance(value[-1], BaseMessage):
                value = str(value[-1].text)
        return {names[0]: value}
    raise FlowError(
        f"flow {flow!r} takes its inputs as a mapping of {', '.join(names) or 'nothing'}, "
        f"not a {type(value).__name__}"
    )


class _FlowRunnableBase(Runnable[Any, Any]):
    """What the local and remote runnables share: LangChain's callbacks around each call,
    tags, and how tokens become a stream of the output."""

    def __init__(
        self, flow: str, tags: Mapping[str, str] | None, full_result: bool, name: str | None
    ) -> None:
        self.flow = flow
        self.tags = {"via": "langchain", **dict(tags or {})}
        self.full_result = full_result
        self.name = name or f"erpoz:{flow}"

    def _tags(self, run_manager: Any) -> dict[str, str]:
        tags = dict(self.tags)
        run_id = getattr(run_manager, "run_id", None)
        if run_id is not None:
            tags["langchain_run_id"] = str(run_id)
        return tags

    # subclasses: the run, tokens handed to ``on_token(step, text)``
    def _run_sync(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        raise NotImplementedError

    async def _run_async(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        raise NotImplementedError

    def _delivers(self, step: str) -> bool:
        raise NotImplementedError

    def _streams_text(self) -> bool:
        raise NotImplementedError

    def _ready(self) -> None:
        """Learn what streaming needs (the flow's delivery steps, output type)."""

    async def _aready(self) -> None:
        """:meth:`_ready`, awaited."""

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        def go(value: Any, run_manager: Any) -> Any:
            return self._run_sync(value, self._tags(run_manager), None)

        return self._call_with_config(go, input, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        async def go(value: Any, run_manager: Any) -> Any:
            return await self._run_async(value, self._tags(run_manager), None)

        return await self._acall_with_config(go, input, config, run_type="chain")

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """The output as it is made: for a flow whose output is text, the tokens its
        delivery steps stream, then whatever of the output they did not stream; for any
        other flow, the output once. The run records the whole output."""
        yield from self._transform_stream_with_config(iter([input]), self._pieces, config)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async def one() -> AsyncIterator[Any]:
            yield input

        async for piece in self._atransform_stream_with_config(one(), self._apieces, config):
            yield piece

    def _pieces(self, inputs: Iterator[Any], run_manager: Any) -> Iterator[Any]:
        value = next(inputs)
        self._ready()
        texts: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()
        box: dict[str, Any] = {}

        def on_token(step: str, text: str) -> None:
            if self._delivers(step):
                texts.put(text)

        def drive() -> None:
            try:
                box["result"] = self._run_sync(value, self._tags(run_manager), on_token)
            except BaseException as exc:  # handed to the consumer below
                box["error"] = exc
            finally:
                texts.put(done)

        thread = threading.Thread(target=drive, name="erpoz-runnable-stream", daemon=True)
        thread.start()
        sent: list[str] = []
        stream_text = self._streams_text() and not self.full_result
        while (item := texts.get()) is not done:
            if stream_text:
                sent.append(item)
                yield item
        thread.join()
        if "error" in box:
            raise box["error"]
        yield from self._rest(box["result"], "".join(sent), stream_text)

    async def _apieces(self, inputs: AsyncIterator[Any], run_manager: Any) -> AsyncIterator[Any]:
        value = await anext(inputs)
        await self._aready()
        loop = asyncio.get_running_loop()
        texts: asyncio.Queue[str] = asyncio.Queue()

        def on_token(step: str, text: str) -> None:
            if self._delivers(step):
                loop.call_soon_threadsafe(texts.put_nowait, text)

        task = asyncio.ensure_future(self._run_async(value, self._tags(run_manager), on_token))
        sent: list[str] = []
        stream_text = self._streams_text() and not self.full_result
        try:
            while True:
                getter = asyncio.ensure_future(texts.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    if stream_text:
                        sent.append(getter.result())
                        yield getter.result()
                    continue
                getter.cancel()
                while not texts.empty():  # tokens that came with the end
                    text = texts.get_nowait()
                    if stream_text:
                        sent.append(text)
                        yield text
                break
            result = await task
        finally:
            if not task.done():
                task.cancel()
        for piece in self._rest(result, "".join(sent), stream_text):
            yield piece

    @staticmethod
    def _rest(result: Any, streamed: str, stream_text: bool) -> Iterator[Any]:
        if not stream_text:
            yield result
            return
        output = result if isinstance(result, str) else json.dumps(result)
        if output.startswith(streamed) and len(output) > len(streamed):
            yield output[len(streamed) :]
        # else: the step returned something other than the text it streamed; the run
        # recorded its output, which invoke returns


class FlowRunnable(_FlowRunnableBase):
    """An erpoz flow as a LangChain ``Runnable``, run in this process (see
    :func:`as_runnable`). ``engine``: the engine to run on (default: one over the project's
    store, ``$ERPOZ_STORE`` else ``.erpoz/erpoz.db``, with the project's models, guards and
    policy); the runnable drives it on an event loop of its own, so do not drive the same
    engine from another loop at the same time. :meth:`close` stops that loop (and closes the
    store it opened)."""

    def __init__(
        self,
        flow: Flow | Plan,
        *,
        engine: Engine | None = None,
        tags: Mapping[str, str] | None = None,
        full_result: bool = False,
        name: str | None = None,
    ) -> None:
        self.plan = flow.compile() if isinstance(flow, Flow) else flow
        super().__init__(self.plan.name, tags, full_result, name)
        self._engine = engine
        self._owns_engine = engine is None
        self._portal = _Portal()
        self._routes: dict[str, Callable[[str, str], None]] = {}
        self._names = [i.name for i in self.plan.inputs]
        self._single_str = len(self.plan.inputs) == 1 and self.plan.inputs[0].type is str
        self._making = asyncio.Lock()  # one engine, however many runs start at once
        if engine is not None:
            engine.token_listeners.append(self._on_token)

    @property
    def engine(self) -> Engine:
        """The engine runs go on: the one given, else the project's (made on first use)."""
        return self._engine or self._portal.call(self._engine_ready())

    async def _engine_ready(self) -> Engine:
        """The engine: the one given, else one over the project's store with the project's
        services (models, guards, policy, tools, memory), as ``erpoz run`` builds them; made
        once (runs of a batch that start together wait for it), its store closed again when
        the project's services cannot be built."""
        async with self._making:
            if self._engine is None:
                from ..project import project_services
                from ..store import open_store

                st = open_store()
                try:
                    services = await project_services(st)
                except BaseException:
                    await st.close()
                    raise
                engine = Engine(st, services=services)
                engine.token_listeners.append(self._on_token)
                self._engine = engine
            return self._engine

    @property
    def InputType(self) -> Any:
        return dict[str, Any]

    @property
    def OutputType(self) -> Any:
        return RunResult if self.full_result else self.plan.output_type

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return super().get_name(suffix, name=name or self.name)

    def _on_token(self, run_id: str, step: str, attempt: int, text: str) -> None:
        route = self._routes.get(run_id)
        if route is not None:
            route(step, text)

    def _delivers(self, step: str) -> bool:
        return top_step(step) in self.plan.delivery

    def _streams_text(self) -> bool:
        return self.plan.output_type is str

    async def _run(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        inputs = _bind_input(value, self._names, self._single_str, self.plan.name)
        run_id = new_run_id()
        if on_token is not None:
            self._routes[run_id] = on_token
        try:
            engine = await self._engine_ready()
            result = await engine.run(self.plan, inputs, run_id=run_id, tags=tags)
        finally:
            self._routes.pop(run_id, None)
        return _outcome(result, self.full_result)

    def _run_sync(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        return self._portal.call(self._run(value, tags, on_token))

    async def _run_async(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        return await self._portal.acall(self._run(value, tags, on_token))

    def close(self) -> None:
        """Stop the runnable's event loop; close the store of the engine it made."""
        engine = self._engine
        if self._owns_engine and engine is not None:

            async def close_store() -> None:
                await engine.store.close()

            self._portal.close(close_store)
            self._engine = None
        else:
            self._portal.close()

    def __enter__(self) -> FlowRunnable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteFlowRunnable(_FlowRunnableBase):
    """A flow of an ``erpoz serve`` as a LangChain ``Runnable``, through :mod:`erpoz.client`
    (see :func:`as_runnable`). With a ``Client``: every method (async ones in a worker
    thread); with an ``AsyncClient``: ``ainvoke``, ``abatch`` and ``astream`` (the sync ones
    say so)."""

    def __init__(
        self,
        flow: str,
        client: Any,
        *,
        tags: Mapping[str, str] | None = None,
        full_result: bool = False,
        name: str | None = None,
    ) -> None:
        from ..client import AsyncClient, Client

        if not isinstance(client, Client | AsyncClient):
            raise ErpozError("as_runnable(NAME, client=...) takes an erpoz.client Client")
        super().__init__(flow, tags, full_result, name)
        self.client = client
        self._info: Any = None

    def _flow_info(self, infos: Sequence[Any]) -> Any:
        for info in infos:
            if info.name == self.flow:
                self._info = info
                return info
        raise FlowError(
            f"the server exposes no flow {self.flow!r} "
            f"(flows: {', '.join(i.name for i in infos) or 'none'})"
        )

    def _ready(self) -> None:
        if self._info is None:
            self._flow_info(self._sync_client().flows())

    async def _aready(self) -> None:
        from ..client import AsyncClient

        if self._info is None:
            c = self.client
            if isinstance(c, AsyncClient):
                self._flow_info(await c.flows())
            else:
                await asyncio.to_thread(self._ready)

    def _inputs(self, value: Any) -> dict[str, Any]:
        info = self._info
        names = [i.name for i in info.inputs]
        single_str = len(info.inputs) == 1 and info.inputs[0].type == "str"
        return _bind_input(value, names, single_str, self.flow)

    def _delivers(self, step: str) -> bool:
        return self._info is None or top_step(step) in self._info.delivery

    def _streams_text(self) -> bool:
        return self._info is not None and self._info.output_type == "str"

    def _finish(self, outcome: Any) -> Any:
        result = RunResult(
            outcome.run_id,
            outcome.status,
            outcome.output,
            outcome.error,
            outcome.failed_step,
            tuple(outcome.waiting_steps),
        )
        return _outcome(result, self.full_result)

    def _sync_client(self) -> Any:
        from ..client import Client

        if not isinstance(self.client, Client):
            raise ErpozError(
                f"runnable {self.name!r} was made with an AsyncClient: call ainvoke, abatch "
                "or astream, or make it with a Client"
            )
        return self.client

    def _run_sync(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        from ..client import EndOfTurn, TokenChunk

        c = self._sync_client()
        self._ready()
        inputs = self._inputs(value)
        if on_token is None:
            return self._finish(c.run(self.flow, inputs, tags=tags))
        end = None
        for item in c.stream(self.flow, inputs, tags=tags):
            if isinstance(item, TokenChunk):
                on_token(item.step, item.text)
            elif isinstance(item, EndOfTurn):
                end = item
        if end is None:
            raise RunError(f"the stream of flow {self.flow!r} ended without its run's end")
        return self._finish(c.outcome(end.run_id))

    async def _run_async(self, value: Any, tags: dict[str, str], on_token: Any) -> Any:
        from ..client import AsyncClient, EndOfTurn, TokenChunk

        c = self.client
        if not isinstance(c, AsyncClient):
            return await asyncio.to_thread(self._run_sync, value, tags, on_token)
        await self._aready()
        inputs = self._inputs(value)
        if on_token is None:
            return self._finish(await c.run(self.flow, inputs, tags=tags))
        end = None
        async for item in c.stream(self.flow, inputs, tags=tags):
            if isinstance(item, TokenChunk):
                on_token(item.step, item.text)
            elif isinstance(item, EndOfTurn):
                end = item
        if end is None:
            raise RunError(f"the stream of flow {self.flow!r} ended without its run's end")
        return self._finish(await c.outcome(end.run_id))


def as_runnable(
    flow: Flow | Plan | str,
    *,
    engine: Engine | None = None,
    client: Any = None,
    tags: Mapping[str, str] | None = None,
    full_result: bool = False,
    name: str | None = None,
) -> FlowRunnable | RemoteFlowRunnable:
    """An erpoz flow as a LangChain ``Runnable``: ``invoke`` / ``ainvoke`` / ``batch`` /
    ``stream`` … run the flow, governed and recorded like any run (tagged ``via: langchain``
    and with LangChain's run id as ``langchain_run_id``).

    ``flow``: a ``Flow`` or ``Plan`` (run in this process, on ``engine``), or the name of a
    flow that ``client`` (an :class:`erpoz.client.Client` or ``AsyncClient``) reaches on an
    ``erpoz serve``. The input is a mapping of the flow's inputs, or, for a flow with one
    input, the value itself (a prompt value or messages become text for a ``str`` input).
    ``invoke`` returns the flow's output (``full_result``: the whole ``RunResult``, with its
    ``run_id``); a failed run raises ``StepFailed`` (naming the step) or ``RunError``; a run
    waiting for review raises :class:`~erpoz.errors.WaitingForReview`, with ``run_id`` and
    ``steps``: it goes on in the store once a reviewer decides."""
    if isinstance(flow, str):
        if client is None:
            raise ErpozError(
                f"as_runnable({flow!r}) names a flow of a server: pass client=Client(URL)"
            )
        return RemoteFlowRunnable(flow, client, tags=tags, full_result=full_result, name=name)
    if client is not None:
        raise ErpozError("as_runnable(flow, client=...): a client runs flows by name (a str)")
    return FlowRunnable(flow, engine=engine, tags=tags, full_result=full_result, name=name)
