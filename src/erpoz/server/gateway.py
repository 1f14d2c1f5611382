"""The OpenAI-compatible gateway: ``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``GET /v1/models`` (and ``GET /v1/models/{id}``), on the same app as the runs API.

Every chat or embedding request is an erpoz run, tagged with the caller's tenant and
``via: gateway``: a one-step internal flow (``gateway-chat`` / ``gateway-embed``) whose step calls
``ctx.models``, so the routers, the guards (``model_input``, ``model_output``, ``delivery``), the
model policy and the budgets apply exactly as inside any flow, and every model call, route
decision and guard finding lands in the run's event log. The run id comes back in the
``x-erpoz-run-id`` header (on errors too, once the run exists).

``POST /v1/chat/completions``, the hot path, is served by :func:`hot_routes`: a plain ASGI
route the app calls before FastAPI's routing and middleware (which cost more CPU than the rest
of the request); the FastAPI route stays for the OpenAPI document and answers alike. Both go
through :class:`_Gateway`, so nothing differs but the plumbing.

The ``model`` of a request is, in this order: a configured model or router of the project's
:class:`ModelHub`, or a flow the server exposes (``ServerState.flows``). A flow runs as its own
run; its inputs come from the last user message: a flow with a single ``str`` input gets the
message's text; any other flow takes the text as a JSON object of its inputs. Its output is the
answer (a ``str`` as it is, anything else as JSON).

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``:

==========================================  ======  =====================  ======================
what                                        status  type                   code
==========================================  ======  =====================  ======================
body not JSON / a field wrong or missing    422     invalid_request_error  invalid_json /
                                                                           invalid_value (param
                                                                           names the field)
a value erpoz cannot honour (n > 1, ...)    400     invalid_request_error  (param names it)
no such model, router or flow               404     invalid_request_error  model_not_found
missing / unknown API key                   401     invalid_request_error  missing_api_key /
                                                                           invalid_api_key
a guard blocked (rule, checkpoint given)    400     guard_blocked          guard_blocked
the policy denies the model                 403     policy_violation       policy_denied
a guard or policy wants a person's review   403     review_required        review_required
a budget would be exceeded                  429     insufficient_quota     budget_exceeded
the upstream model failed                   502     upstream_error         upstream_error
==========================================  ======  =====================  ======================

A 5xx body is neutral: what failed in general words and a ``request_id`` (the run id when the
request became a run); the upstream's address and error text, or the exception, go to the
server's log under that id (``erpoz.server`` logger), never to the tenant.

429 and non-retryable 502 carry ``x-should-retry: false`` (the OpenAI SDKs honour it: a
budget does not refill in a second).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from ..engine import RunResult, encode_output, new_run_id, top_step
from ..errors import FlowError, error_info
from ..flow import Context, Flow, Plan, step
from ..models import (
    ChatModel,
    ChatRequest,
    ChatResult,
    EmbedModel,
    EmbedResult,
    ModelHub,
    count_tokens,
)
from ..user_json import loads_json
from . import _openai_types as oa
from ._auth import TenantError, tenant_for, tenant_of
from ._incident import neutral_message, new_request_id
from ._state import ServerState, Token

__all__ = ["CHAT_FLOW", "EMBED_FLOW", "hot_routes", "router"]

RUN_HEADER = "x-erpoz-run-id"
JSON = "application/json"


# --- the runs a request becomes -------------------------------------------------------------
class _Call:
    """What the HTTP handler hands to the run's step (through a context variable, so nothing
    is parsed twice) and gets back: the request, where to put streamed text, the exception that
    failed the step, the embedding."""

    __slots__ = ("embedding", "error", "queue", "raw", "request", "texts")

    def __init__(
        self,
        raw: str,
        request: ChatRequest | None = None,
        texts: list[str] | None = None,
        queue: asyncio.Queue[str | None] | None = None,
    ) -> None:
        self.raw = raw
        self.request = request
        self.texts = texts
        self.queue = queue
        self.error: BaseException | None = None
        self.embedding: EmbedResult | None = None


_CALL: ContextVar[_Call | None] = ContextVar("erpoz_gateway_call", default=None)


def _call_for(request: str) -> _Call | None:
    """The handler's call when this run is the handler's; ``None`` when the step runs again
    elsewhere (resumed after a review): then it reads the request as recorded."""
    call = _CALL.get()
    return call if call is not None and call.raw is request else None


@step(name="complete")
async def complete(model: str, request: str, ctx: Context) -> dict[str, Any]:
    """Answer one chat completion request through ``ctx.models`` (the gateway's only step)."""
    call = _call_for(request)
    if call is None:
        call = _Call(request, oa.chat_request(oa.parse(oa.ChatCompletionRequest, request)))
    req = call.request
    assert req is not None
    try:
        if call.queue is not None:
            result = await _streamed(model, req, ctx, call.queue)
        else:
            result = await ctx.models.chat(
                model,
                req.messages,
                tools=req.tools,
                schema=req.response_schema,
                temperature=req.temperature,
                max_tokens=req.max_tokens,
            )
    except BaseException as exc:
        call.error = exc
        raise
    return _answer(result)


async def _streamed(
    model: str, req: ChatRequest, ctx: Context, queue: asyncio.Queue[str | None]
) -> ChatResult:
    parts: list[str] = []
    final: ChatResult | None = None
    async for chunk in ctx.models.stream(
        model, req.messages, max_tokens=req.max_tokens, temperature=req.temperature
    ):
        if chunk.result is not None:
            final = chunk.result
        elif chunk.text:
            parts.append(chunk.text)
            queue.put_nowait(chunk.text)
    return final if final is not None else ChatResult("".join(parts), model)


def _answer(result: ChatResult) -> dict[str, Any]:
    """What the step records as its output (and the response is made of)."""
    return {
        "text": result.text,
        "model": result.model,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in result.tool_calls
        ],
        "finish_reason": result.finish_reason,
        "usage": {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
        },
        "cost_usd": result.cost_usd,
        "route": list(result.route),
    }


@step(name="embed")
async def embed(model: str, request: str, ctx: Context) -> dict[str, Any]:
    """Embed the texts of one embeddings request (``ctx.models.embed`` passes each text through
    the ``model_input`` guards, naming the model)."""
    call = _call_for(request)
    if call is None:
        call = _Call(request, texts=oa.embedding_texts(oa.parse(oa.EmbeddingRequest, request)))
    texts = call.texts or []
    try:
        result = await ctx.models.embed(model, texts)
    except BaseException as exc:
        call.error = exc
        raise
    call.embedding = result
    return {
        "model": result.model,
        "texts": len(texts),
        "dimensions": len(result.vectors[0]) if result.vectors else 0,
        "input_tokens": result.usage.input_tokens,
    }


CHAT_FLOW = Flow(
    "gateway-chat",
    inputs={"model": str, "request": str},
    description="One chat completion through the OpenAI-compatible gateway.",
    source="erpoz.server.gateway:CHAT_FLOW",
)
CHAT_FLOW.add(complete, model=CHAT_FLOW.input("model"), request=CHAT_FLOW.input("request"))
EMBED_FLOW = Flow(
    "gateway-embed",
    inputs={"model": str, "request": str},
    description="One embeddings request through the OpenAI-compatible gateway.",
    source="erpoz.server.gateway:EMBED_FLOW",
)
EMBED_FLOW.add(embed, model=EMBED_FLOW.input("model"), request=EMBED_FLOW.input("request"))


# --- errors ---------------------------------------------------------------------------------
_REFUSED_CODES = frozenset({"unsupported_modality", "context_length_exceeded"})


def _classify(info: Mapping[str, Any]) -> oa.GatewayError:
    """The OpenAI error for an error recorded as :func:`~erpoz.errors.error_info` (read from
    its type and fields, never from its text)."""
    types = info.get("types") or [info.get("type")]
    message = str(info.get("message", ""))
    fields: Mapping[str, Any] = info.get("fields") or {}
    if "GuardBlocked" in types:
        return oa.GatewayError(
            400,
            message,  # names the checkpoint and the rule
            "guard_blocked",
            code="guard_blocked",
            extra={"rule": fields.get("rule"), "checkpoint": fields.get("checkpoint")},
        )
    if "PolicyViolation" in types:
        return oa.GatewayError(
            403,
            message,
            "policy_violation",
            code="policy_denied",
            extra={"rule": fields.get("rule")},
        )
    if "BudgetExceeded" in types:
        return oa.GatewayError(
            429,
            message,
            "insufficient_quota",
            code="budget_exceeded",
            headers={"x-should-retry": "false"},
        )
    if "ModelError" in types:
        if fields.get("code") in _REFUSED_CODES:
            return oa.GatewayError(400, message, param="messages", code=str(fields["code"]))
        retryable = bool(fields.get("retryable", info.get("retryable", True)))
        return oa.GatewayError(
            502,
            f"the upstream model failed: {message}",  # logged; _for_tenant answers neutrally
            "upstream_error",
            code="upstream_error",
            extra={"upstream_status": fields.get("status"), "retryable": retryable},
            headers={} if retryable else {"x-should-retry": "false"},
        )
    return oa.GatewayError(
        500, f"{info.get('type', 'Error')}: {message}", "server_error", code="server_error"
    )


def _run_error(result: RunResult, exc: BaseException | None) -> oa.GatewayError:
    """Why run ``result`` gave no answer, as an OpenAI error."""
    if result.status == "waiting":
        return oa.GatewayError(
            403,
            f"run {result.run_id} waits for a person's review (step "
            f"{', '.join(result.waiting_steps)}); once approved, its answer is the run's output "
            f"(GET /api/runs/{result.run_id})",
            "review_required",
            code="review_required",
            extra={"run_id": result.run_id},
        )
    if result.status == "cancelled":
        return oa.GatewayError(409, "the run was cancelled", "cancelled", code="cancelled")
    if exc is not None:
        return _classify(error_info(exc))
    info = result.error_info or {"type": "RunError", "message": result.error or "the run failed"}
    known = ("GuardBlocked", "PolicyViolation", "BudgetExceeded", "ModelError")
    if not any(t in known for t in info.get("types") or [info.get("type")]):
        return oa.GatewayError(
            500,
            f"flow step '{result.failed_step}' failed: {result.error or 'the run failed'}",
            "server_error",
            code="flow_failed",
        )
    return _classify(info)


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False).encode(),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type=JSON,
    )


def _for_tenant(error: oa.GatewayError, run_id: str | None) -> oa.GatewayError:
    """``error`` as the tenant sees it: an upstream's or the server's failure says what failed
    in general words and gives a request id (the run's, when there is one); its details go to
    the server's log. A flow that failed (``flow_failed``) says why, as its run records it."""
    if error.status < 500 or error.code == "flow_failed":
        return error
    rid = run_id or new_request_id()
    message = neutral_message(error.status, error.message, rid)
    return oa.GatewayError(
        error.status,
        message,
        error.kind,
        param=error.param,
        code=error.code,
        extra={**error.extra, "request_id": rid},
        headers=error.headers,
    )


def _error_response(error: oa.GatewayError, run_id: str | None = None) -> Response:
    error = _for_tenant(error, run_id)
    headers = dict(error.headers)
    if run_id is not None:
        headers[RUN_HEADER] = run_id
    return _json(error.status, error.body(), headers)


def _tenant_error(exc: TenantError) -> oa.GatewayError:
    """OpenAI's answers: 401 ``invalid_request_error`` (``missing_api_key`` /
    ``invalid_api_key``), which the SDKs raise as ``AuthenticationError``."""
    headers = {"www-authenticate": "Bearer"} if exc.status == 401 else {}
    kind = "invalid_request_error" if exc.status == 401 else exc.kind
    return oa.GatewayError(exc.status, exc.message, kind, code=exc.code, headers=headers)


# --- what a name is -------------------------------------------------------------------------
def _hub(state: ServerState) -> ModelHub:
    hub: ModelHub = state.hub()
    return hub


def _kind(hub: ModelHub, name: str) -> str | None:
    """``chat``, ``router`` or ``embed`` for what the gateway serves (OCR models and
    classifiers are not served); ``None`` otherwise."""
    spec = hub.specs.get(name)
    if hub.is_kind(name, ChatModel):
        if spec is None and getattr(hub.get(name), "models", None) is not None:
            return "router"
        return "chat"
    if hub.is_kind(name, EmbedModel):
        return "embed"
    return None


def _not_found(name: str) -> oa.GatewayError:
    return oa.GatewayError(
        404,
        f"the model {name!r} does not exist (GET /v1/models lists the models, routers and "
        "flows served here)",
        param="model",
        code="model_not_found",
    )


def _answers_guarded(state: ServerState) -> bool:
    """Whether guards check answers (``model_output`` or ``delivery``): then an answer is
    checked whole before any of it is sent, and streams arrive in one piece."""
    from ..guards import Guardrails

    rails = state.engine.services.get(Guardrails)
    return isinstance(rails, Guardrails) and (
        rails.active("model_output") or rails.active("delivery")
    )


def _flow_inputs(plan: Plan, body: oa.ChatCompletionRequest) -> dict[str, Any]:
    """The gateway's convention: the last user message is the flow's single ``str`` input, or a
    JSON object of its inputs."""
    if body.tools or body.response_format is not None:
        param = "tools" if body.tools else "response_format"
        raise oa.GatewayError(
            400, f"{param}: {plan.name!r} is a flow; flows take no {param}", param=param
        )
    users = [m for m in oa.messages_of(body) if m.role == "user"]
    if not users:
        raise oa.GatewayError(
            400, f"messages: flow {plan.name!r} needs a user message", param="messages"
        )
    text = users[-1].text
    if len(plan.inputs) == 1 and plan.inputs[0].type is str:
        given: Any = {plan.inputs[0].name: text}
    elif not plan.inputs:
        given = {}
    else:
        try:
            given = loads_json(text)  # bounded: a deep bomb is a 400 like any bad JSON
        except ValueError:
            given = None
        if not isinstance(given, dict):
            names = ", ".join(i.name for i in plan.inputs)
            raise oa.GatewayError(
                400,
                f"messages: flow {plan.name!r} takes its inputs ({names}) as a JSON object in "
                "the last user message",
                param="messages",
            )
    try:
        return plan.bind_inputs(given)
    except FlowError as exc:
        raise oa.GatewayError(400, f"messages: {exc}", param="messages") from None


# --- the router -----------------------------------------------------------------------------
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its definitions inlined (for ``openapi_extra``)."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref[len("#/$defs/") :]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)  # type: ignore[no-any-return]


#: the security schemes the runs API declares (``Authorization: Bearer`` or ``X-API-Key``)
_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "security": _SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _schema(model)}},
        },
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": what}
    for code, what in {
        400: "invalid value, guard blocked",
        401: "missing API key",
        403: "unknown API key, policy denied, review required",
        404: "unknown model",
        413: "body too large",
        422: "malformed body (param names the field)",
        429: "budget exceeded",
        502: "upstream model failed",
    }.items()
}


class _Gateway:
    """What the gateway does with a request, over one :class:`ServerState`: shared by the
    FastAPI routes (which also give the OpenAPI document) and by :func:`hot_routes`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.engine = state.engine
        self.chat_plan = CHAT_FLOW.compile()
        self.embed_plan = EMBED_FLOW.compile()

    @staticmethod
    def tags_for(tenant: str, user: str | None) -> dict[str, str]:
        tags = {"tenant": tenant, "via": "gateway"}
        if user:
            tags["end_user"] = user
        return tags

    async def chat(self, raw: bytes, tenant: str) -> Response:
        """``POST /v1/chat/completions`` once the caller's tenant is known."""
        run_id: str | None = None
        try:
            body: oa.ChatCompletionRequest = oa.parse(oa.ChatCompletionRequest, raw)
            name = body.model
            hub = _hub(self.state)
            if not hub.is_kind(name, ChatModel):
                plan = self.state.flows.get(name)
                if plan is not None:
                    return await self.flow_completion(plan, body, tenant)
                if name in hub.names():
                    raise oa.GatewayError(
                        400,
                        f"model: {name!r} is not a chat model",
                        param="model",
                        code="model_not_supported",
                    )
                raise _not_found(name)
            chat = oa.chat_request(body)
            text = raw.decode()
            run_id = new_run_id()
            tags = self.tags_for(tenant, body.user)
            inputs = {"model": name, "request": text}
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                live = not (chat.tools or chat.response_schema or _answers_guarded(self.state))
                return await self.stream_completion(
                    _Call(text, chat), name, inputs, tags, run_id, live, include_usage
                )
            call = _Call(text, chat)
            token = _CALL.set(call)
            try:
                result = await self.engine.run(self.chat_plan, inputs, run_id=run_id, tags=tags)
            finally:
                _CALL.reset(token)
            if result.status != "succeeded":
                return _error_response(_run_error(result, call.error), run_id)
            answer = result.output
            created = int(time.time())
            return _json(
                200, oa.completion_body(f"chatcmpl-{run_id}", created, answer), {RUN_HEADER: run_id}
            )
        except oa.GatewayError as exc:
            return _error_response(exc, run_id)
        except Exception as exc:  # a bug or the store failing: still an OpenAI error
            return _error_response(
                oa.GatewayError(500, f"{type(exc).__name__}: {exc}", "server_error"), run_id
            )

    async def stream_completion(
        self,
        call: _Call,
        name: str,
        inputs: dict[str, str],
        tags: dict[str, str],
        run_id: str,
        live: bool,
        include_usage: bool,
    ) -> Response:
        ident = f"chatcmpl-{run_id}"
        created = int(time.time())
        headers = {RUN_HEADER: run_id, "cache-control": "no-cache"}
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        call.queue = queue if live else None
        token = _CALL.set(call)
        try:
            # a task of the server's: the run goes on (and is recorded) if the client goes away
            task = self.state.spawn(
                run_id, self.engine.run(self.chat_plan, inputs, run_id=run_id, tags=tags)
            )
        finally:
            _CALL.reset(token)
        task.add_done_callback(lambda t: queue.put_nowait(None))
        first = await queue.get()
        if first is None:  # the run ended before any text: an error, or an answer in one piece
            result = await task
            if result.status != "succeeded":
                return _error_response(_run_error(result, call.error), run_id)

        def chunk(delta: Mapping[str, Any] | None, finish: str | None = None) -> bytes:
            return oa.chunk_bytes(ident, created, name, delta, finish)

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            if first is not None:
                yield chunk({"content": first})
                while (text := await queue.get()) is not None:
                    yield chunk({"content": text})
            try:
                result = await task
            except Exception as exc:  # the store failed: the stream ends with an error event
                error = oa.GatewayError(500, f"{type(exc).__name__}: {exc}", "server_error")
                yield oa.error_event(_for_tenant(error, run_id))
                return
            if result.status != "succeeded":
                yield oa.error_event(_for_tenant(_run_error(result, call.error), run_id))
                return
            answer = result.output
            if first is None and answer.get("text"):
                yield chunk({"content": answer["text"]})
            for i, c in enumerate(oa.tool_calls_body(answer.get("tool_calls") or ())):
                yield chunk({"tool_calls": [{"index": i, **c}]})
            yield chunk({}, oa.finish_reason(answer))
            if include_usage:
                yield oa.chunk_bytes(ident, created, name, None, usage=answer.get("usage") or {})
            yield oa.DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def flow_completion(
        self, plan: Plan, body: oa.ChatCompletionRequest, tenant: str
    ) -> Response:
        inputs = _flow_inputs(plan, body)
        run_id = new_run_id()
        tags = self.tags_for(tenant, body.user)
        include_usage = bool(
            body.stream and body.stream_options and body.stream_options.include_usage
        )
        if body.stream and not _answers_guarded(self.state):
            return await self.flow_stream(plan, inputs, tags, run_id, include_usage)
        result = await self.engine.run(plan, inputs, run_id=run_id, tags=tags)
        if result.status != "succeeded":
            return _error_response(_run_error(result, None), run_id)
        text, usage = await self.flow_answer(plan, run_id, result.output)
        answer = {"text": text, "model": plan.name, "finish_reason": "stop", "usage": usage}
        ident = f"chatcmpl-{run_id}"
        created = int(time.time())
        headers = {RUN_HEADER: run_id}
        if not body.stream:
            return _json(200, oa.completion_body(ident, created, answer), headers)

        async def events() -> AsyncIterator[bytes]:
            yield oa.chunk_bytes(ident, created, plan.name, {"role": "assistant", "content": ""})
            if text:
                yield oa.chunk_bytes(ident, created, plan.name, {"content": text})
            yield oa.chunk_bytes(ident, created, plan.name, {}, "stop")
            if include_usage:
                yield oa.chunk_bytes(ident, created, plan.name, None, usage=usage)
            yield oa.DONE

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    async def flow_answer(self, plan: Plan, run_id: str, output: Any) -> tuple[str, dict[str, int]]:
        """A flow's output as the answer's text, and the tokens its model calls used."""
        text = output if isinstance(output, str) else encode_output(output, plan.output_type)
        usage = {"input_tokens": 0, "output_tokens": 0}
        for event in await self.state.store.events(run_id):
            if event.kind == "model_called" and event.data.get("status") == "ok":
                usage["input_tokens"] += int(event.data.get("input_tokens") or 0)
                usage["output_tokens"] += int(event.data.get("output_tokens") or 0)
        return text, usage

    async def flow_stream(
        self,
        plan: Plan,
        inputs: dict[str, Any],
        tags: dict[str, str],
        run_id: str,
        include_usage: bool,
    ) -> Response:
        """A flow's answer streamed as its delivery steps stream model tokens
        (``ctx.models.stream``): each token is passed on as it comes, the run records the
        output. What the output adds after the streamed text (all of it when nothing was
        streamed) follows in one chunk when the run has succeeded."""
        bus = self.state.bus
        queue = bus.follow(run_id, tokens=True)  # before the run starts: no token is missed
        try:
            task = self.state.spawn(run_id, self.engine.run(plan, inputs, run_id=run_id, tags=tags))
        except BaseException:
            bus.unfollow(queue, run_id)
            raise
        task.add_done_callback(lambda t: queue.put_nowait(()))
        delivery = plan.delivery

        async def next_text() -> str | None:
            while True:
                item = await queue.get()
                if not item:
                    return None
                if isinstance(item, Token) and top_step(item.step) in delivery:
                    return item.text

        first = await next_text()
        if first is None:  # the run ended before any token: an error, or one piece
            bus.unfollow(queue, run_id)
            result = await task
            if result.status != "succeeded":
                return _error_response(_run_error(result, None), run_id)
        ident = f"chatcmpl-{run_id}"
        created = int(time.time())
        name = plan.name

        def chunk(delta: Mapping[str, Any] | None, finish: str | None = None) -> bytes:
            return oa.chunk_bytes(ident, created, name, delta, finish)

        async def events() -> AsyncIterator[bytes]:
            sent: list[str] = []
            try:
                yield chunk({"role": "assistant", "content": ""})
                text = first
                while text is not None:
                    sent.append(text)
                    yield chunk({"content": text})
                    text = await next_text()
            finally:
                bus.unfollow(queue, run_id)
            try:
                result = await task
                if result.status != "succeeded":
                    yield oa.error_event(_run_error(result, None))
                    return
                answer, usage = await self.flow_answer(plan, run_id, result.output)
            except Exception as exc:  # the store failed: the stream ends with an error event
                yield oa.error_event(
                    oa.GatewayError(500, f"{type(exc).__name__}: {exc}", "server_error")
                )
                return
            streamed = "".join(sent)
            if answer.startswith(streamed) and len(answer) > len(streamed):
                yield chunk({"content": answer[len(streamed) :]})
            yield chunk({}, "stop")
            if include_usage:
                yield oa.chunk_bytes(ident, created, name, None, usage=usage)
            yield oa.DONE

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={RUN_HEADER: run_id, "cache-control": "no-cache"},
        )

    async def embeddings(self, raw: bytes, tenant: str) -> Response:
        """``POST /v1/embeddings`` once the caller's tenant is known."""
        run_id: str | None = None
        try:
            body: oa.EmbeddingRequest = oa.parse(oa.EmbeddingRequest, raw)
            name = body.model
            hub = _hub(self.state)
            if not hub.is_kind(name, EmbedModel):
                if name in hub.names() or name in self.state.flows:
                    raise oa.GatewayError(
                        400,
                        f"model: {name!r} is not an embedding model",
                        param="model",
                        code="model_not_supported",
                    )
                raise _not_found(name)
            text = raw.decode()
            call = _Call(text, texts=oa.embedding_texts(body))
            run_id = new_run_id()
            token = _CALL.set(call)
            try:
                result = await self.engine.run(
                    self.embed_plan,
                    {"model": name, "request": text},
                    run_id=run_id,
                    tags=self.tags_for(tenant, body.user),
                )
            finally:
                _CALL.reset(token)
            if result.status != "succeeded" or call.embedding is None:
                return _error_response(_run_error(result, call.error), run_id)
            got = call.embedding
            tokens = got.usage.input_tokens or sum(count_tokens(t) for t in call.texts or ())
            return _json(
                200,
                oa.embedding_body(got.model, got.vectors, tokens, body.encoding_format),
                {RUN_HEADER: run_id},
            )
        except oa.GatewayError as exc:
            return _error_response(exc, run_id)
        except Exception as exc:
            return _error_response(
                oa.GatewayError(500, f"{type(exc).__name__}: {exc}", "server_error"), run_id
            )

    def listing(self) -> list[dict[str, Any]]:
        hub = _hub(self.state)
        out = []
        for name in hub.names():
            kind = _kind(hub, name)
            if kind is not None:
                out.append(_model_entry(name, kind))
        for name in self.state.flows:
            if not hub.is_kind(name, ChatModel):
                out.append(_model_entry(name, "flow"))
        return out


def router(state: ServerState) -> APIRouter:
    """The gateway's routes over ``state`` (its engine, hub, guards and flows)."""
    r = APIRouter(tags=["gateway"])
    gw = _Gateway(state)

    @r.post(
        "/v1/chat/completions",
        openapi_extra=_body_doc(oa.ChatCompletionRequest),
        responses=_ERRORS,
        summary="Create a chat completion (OpenAI-compatible)",
    )
    async def chat_completions(request: Request) -> Response:
        try:
            tenant = tenant_of(request)
        except TenantError as exc:
            return _error_response(_tenant_error(exc))
        return await gw.chat(await request.body(), tenant)

    @r.post(
        "/v1/embeddings",
        openapi_extra=_body_doc(oa.EmbeddingRequest),
        responses=_ERRORS,
        summary="Create embeddings (OpenAI-compatible)",
    )
    async def embeddings(request: Request) -> Response:
        try:
            tenant = tenant_of(request)
        except TenantError as exc:
            return _error_response(_tenant_error(exc))
        return await gw.embeddings(await request.body(), tenant)

    @r.get(
        "/v1/models",
        summary="List the models, routers and flows served (OpenAI-compatible)",
        openapi_extra={"security": _SECURITY},
    )
    async def models(request: Request) -> Response:
        try:
            tenant_of(request)
            return _json(200, {"object": "list", "data": gw.listing()})
        except TenantError as exc:
            return _error_response(_tenant_error(exc))
        except Exception as exc:
            return _error_response(
                oa.GatewayError(500, f"{type(exc).__name__}: {exc}", "server_error")
            )

    @r.get(
        "/v1/models/{model_id:path}",
        summary="One model, router or flow (OpenAI-compatible)",
        openapi_extra={"security": _SECURITY},
    )
    async def model(model_id: str, request: Request) -> Response:
        try:
            tenant_of(request)
            for entry in gw.listing():
                if entry["id"] == model_id:
                    return _json(200, entry)
            return _error_response(_not_found(model_id))
        except TenantError as exc:
            return _error_response(_tenant_error(exc))
        except Exception as exc:
            return _error_response(
                oa.GatewayError(500, f"{type(exc).__name__}: {exc}", "server_error")
            )

    return r


#: a plain ASGI route: the request's headers (as in the ASGI scope) and its whole body in,
#: the response out
HotRoute = Callable[[Sequence[tuple[bytes, bytes]], bytes], Awaitable[Response]]


def hot_routes(state: ServerState) -> dict[tuple[str, str], HotRoute]:
    """The gateway's hot path, ``POST /v1/chat/completions``, as a plain ASGI route (the app
    calls it before FastAPI's routing, middleware and request objects, which cost more CPU than
    the rest of a request): the same handling as the FastAPI route above, tenants, guards,
    policy, routing, budgets and recording included."""
    gw = _Gateway(state)

    async def chat_completions(headers: Sequence[tuple[bytes, bytes]], raw: bytes) -> Response:
        authorization = api_key = ""
        for name, value in headers:
            if name == b"authorization":
                authorization = authorization or value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = api_key or value.decode("latin-1")
        try:
            tenant = tenant_for(state, authorization, api_key)
        except TenantError as exc:
            return _error_response(_tenant_error(exc))
        return await gw.chat(raw, tenant)

    return {("POST", "/v1/chat/completions"): chat_completions}


def _model_entry(name: str, kind: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "erpoz", "erpoz_kind": kind}
