"""The OpenAI wire format as the gateway reads and writes it: request bodies (pydantic, parsed
from the raw JSON in one pass), their mapping to erpoz's :class:`ChatRequest`, the response and
stream-chunk bodies, and errors in OpenAI's ``{"error": {message, type, param, code}}`` shape.

Unknown request parameters are ignored (OpenAI adds parameters often; clients send many by
default). What erpoz cannot honour and a client would rely on (``n`` > 1, token-id inputs,
audio or file parts, ``dimensions``) is refused with a 400 naming the parameter.
"""

from __future__ import annotations

import array
import base64
import binascii
import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..models import ChatRequest, ImagePart, Message, TextPart, ToolCall, ToolSpec
from ..user_json import loads_json

__all__ = [
    "ChatCompletionRequest",
    "EmbeddingRequest",
    "GatewayError",
    "chat_request",
    "completion_body",
    "embedding_body",
    "parse",
]


# --- errors -----------------------------------------------------------------------------------
class GatewayError(Exception):
    """An error answered in OpenAI's format. ``extra`` adds fields to the error object (a
    guard's ``rule``, ``checkpoint``); ``headers`` go on the response."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }
        error.update(self.extra)
        return {"error": error}


def _param_of(loc: Sequence[int | str]) -> str:
    """A pydantic error location as OpenAI names parameters: ``messages[0].content[1].type``.
    pydantic's names for the member of a union it tried (``str``, ``list[...]``, a model's
    class name) and a tagged union's tag are not fields: they are left out."""
    out = ""
    skip_tag = False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if skip_tag:
            skip_tag = False
            continue
        if _UNION_MEMBER.match(part):
            # list[tagged-union[...]], index, TAG: the tag comes right after the index
            if "tagged-union" in part and i + 1 < len(loc) and isinstance(loc[i + 1], int):
                skip_tag = True
            continue
        out += f".{part}" if out else part
    return out or "body"


_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|literal\[.*\]|[A-Z]\w*)$")


def _invalid(exc: ValidationError) -> GatewayError:
    errors = exc.errors(include_url=False, include_input=False)
    err = max(errors, key=lambda e: len(e["loc"]))  # the most specific
    if err["type"] == "json_invalid":
        return GatewayError(
            422, f"the request body is not valid JSON ({err['msg']})", code="invalid_json"
        )
    param = _param_of(err["loc"])
    if param == "body":
        return GatewayError(422, "the request body must be a JSON object", code="invalid_json")
    return GatewayError(422, f"{param}: {err['msg']}", param=param, code="invalid_value")


# --- requests ---------------------------------------------------------------------------------
class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TextContent(_In):
    type: Literal["text"]
    text: str


class ImageURL(_In):
    url: str
    detail: str | None = None


class ImageContent(_In):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextContent | ImageContent, Field(discriminator="type")]


class FunctionCallIn(_In):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(_In):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(_In):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDef(_In):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None


class ToolDef(_In):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_In):
    name: str


class NamedToolChoice(_In):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_In):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_In):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_In):
    include_usage: bool = False


class ChatCompletionRequest(_In):
    """``POST /v1/chat/completions``: the parameters the gateway reads."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)


class EmbeddingRequest(_In):
    """``POST /v1/embeddings``."""

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)


def parse(cls: type[_In], raw: bytes | str) -> Any:
    """Parse and validate a request body, or a 422 :class:`GatewayError` naming the field."""
    try:
        return cls.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


# --- to erpoz ---------------------------------------------------------------------------------
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


def image_part(url: str, where: str) -> ImagePart:
    """An ``image_url`` part: a ``data:`` URL (base64) becomes inline bytes, an ``http(s)`` URL
    stays a URL."""
    m = _DATA_URL.match(url)
    if m is not None:
        mime = (m.group("mime") or "image/png").lower()
        if not mime.startswith("image/"):
            raise GatewayError(400, f"{where}: a data URL of {mime}, not an image", param=where)
        try:
            data = base64.b64decode(url[m.end() :], validate=True)
        except (binascii.Error, ValueError):
            raise GatewayError(
                400, f"{where}: the data URL is not valid base64", param=where
            ) from None
        if not data:
            raise GatewayError(400, f"{where}: the image is empty", param=where)
        return ImagePart(data=data, mime=mime)
    if url.startswith(("http://", "https://")):
        return ImagePart(url=url)
    raise GatewayError(
        400,
        f"{where}: an image is a base64 data URL (data:image/png;base64,...) or an http(s) URL",
        param=where,
    )


def _text(content: str | list[Any] | None, where: str) -> str:
    """The text of a message that takes text only (system, assistant, tool)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, TextContent):
            raise GatewayError(
                400, f"{where}.content[{j}]: only text parts here", param=f"{where}.content[{j}]"
            )
        parts.append(part.text)
    return "".join(parts)


def _arguments(call: ToolCallIn, where: str) -> dict[str, Any]:
    args = call.function.arguments
    if isinstance(args, dict):
        return args
    try:
        value = loads_json(args or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise GatewayError(
            400,
            f"{where}.function.arguments: must be a JSON object (as text)",
            param=f"{where}.function.arguments",
        )
    return value


def messages_of(body: ChatCompletionRequest) -> tuple[Message, ...]:
    """The request's messages as erpoz messages (``developer`` is a system message)."""
    out: list[Message] = []
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        role = m.role
        if role in ("system", "developer"):
            out.append(Message("system", _text(m.content, where)))
        elif role == "user":
            content = m.content
            if content is None:
                raise GatewayError(
                    400, f"{where}.content: a user message needs content", param=f"{where}.content"
                )
            if isinstance(content, str):
                out.append(Message("user", content))
                continue
            parts: list[TextPart | ImagePart] = []
            for j, part in enumerate(content):
                if isinstance(part, TextContent):
                    parts.append(TextPart(part.text))
                else:
                    parts.append(image_part(part.image_url.url, f"{where}.content[{j}].image_url"))
            out.append(Message("user", tuple(parts)))
        elif role == "assistant":
            calls = tuple(
                ToolCall(c.id, c.function.name, _arguments(c, f"{where}.tool_calls[{k}]"))
                for k, c in enumerate(m.tool_calls or ())
            )
            out.append(Message("assistant", _text(m.content, where), calls))
        else:  # tool
            if not m.tool_call_id:
                raise GatewayError(
                    400,
                    f"{where}.tool_call_id: a tool message answers a tool call; name it",
                    param=f"{where}.tool_call_id",
                )
            out.append(Message("tool", _text(m.content, where), tool_call_id=m.tool_call_id))
    return tuple(out)


def tools_of(body: ChatCompletionRequest) -> tuple[ToolSpec, ...]:
    """The tools offered, narrowed by ``tool_choice``: ``none`` offers none; a named function
    offers only that one. (erpoz's ``ChatRequest`` has no tool choice of its own, so
    ``required`` and a named function cannot force the model to call; they narrow the offer.)"""
    tools = body.tools or ()
    choice = body.tool_choice
    if choice == "none":
        return ()
    specs = tuple(
        ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in tools
    )
    if isinstance(choice, NamedToolChoice):
        named = tuple(s for s in specs if s.name == choice.function.name)
        if not named:
            raise GatewayError(
                400,
                f"tool_choice: no tool named {choice.function.name!r} in tools",
                param="tool_choice",
            )
        return named
    if choice == "required" and not specs:
        raise GatewayError(400, "tool_choice: 'required' needs tools", param="tool_choice")
    return specs


def schema_of(body: ChatCompletionRequest) -> dict[str, Any] | None:
    """``response_format`` as erpoz's schema request: ``json_schema`` gives its schema (titled
    with its name, which the ``openai`` provider sends on), ``json_object`` any object."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object", "title": "json_object"}
    if fmt.json_schema is None:
        raise GatewayError(
            400,
            "response_format.json_schema: required when type is json_schema",
            param="response_format.json_schema",
        )
    schema = dict(fmt.json_schema.schema_)
    schema.setdefault("title", fmt.json_schema.name)
    return schema


def chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """The erpoz request for an OpenAI chat completion body (400 for what cannot be honoured)."""
    if body.n is not None and body.n != 1:
        raise GatewayError(400, "n: only n=1 is supported", param="n", code="unsupported_value")
    max_tokens = body.max_completion_tokens or body.max_tokens
    return ChatRequest(
        messages_of(body),
        tools_of(body),
        schema_of(body),
        body.temperature,
        max_tokens,
    )


def embedding_texts(body: EmbeddingRequest) -> list[str]:
    value = body.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise GatewayError(400, "input: give at least one text", param="input")
    if not all(isinstance(v, str) for v in value):
        raise GatewayError(
            400,
            "input: token ids are not supported; send text",
            param="input",
            code="unsupported_value",
        )
    if body.dimensions is not None:
        raise GatewayError(
            400,
            "dimensions: not supported (the model's own size is returned)",
            param="dimensions",
            code="unsupported_value",
        )
    return [str(v) for v in value]


# --- responses --------------------------------------------------------------------------------
def tool_calls_body(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for c in calls
    ]


def usage_body(usage: Mapping[str, Any]) -> dict[str, int]:
    pin, pout = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return {"prompt_tokens": pin, "completion_tokens": pout, "total_tokens": pin + pout}


def finish_reason(answer: Mapping[str, Any]) -> str:
    reason = answer.get("finish_reason")
    if answer.get("tool_calls"):
        return "tool_calls"
    return str(reason) if reason else "stop"


def completion_body(ident: str, created: int, answer: Mapping[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` from a gateway answer (``text``, ``model``, ``tool_calls``,
    ``finish_reason``, ``usage``)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.get("text") or None,
        "refusal": None,
    }
    calls = answer.get("tool_calls") or ()
    if calls:
        message["tool_calls"] = tool_calls_body(calls)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": answer.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(answer),
            }
        ],
        "usage": usage_body(answer.get("usage") or {}),
        "system_fingerprint": None,
    }


def chunk_bytes(
    ident: str,
    created: int,
    model: str,
    delta: Mapping[str, Any] | None,
    finish: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> bytes:
    """One SSE event of a ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk."""
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    return b"data: " + json.dumps(error.body(), ensure_ascii=False).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def embedding_body(
    model: str,
    vectors: Sequence[Sequence[float]],
    input_tokens: int,
    encoding: str,
) -> dict[str, Any]:
    """A ``list`` of ``embedding`` objects; ``base64`` packs each vector as little-endian
    float32, as OpenAI does."""
    data = []
    for i, v in enumerate(vectors):
        if encoding == "base64":
            packed = array.array("f", v)  # C float: 32-bit IEEE 754 on every CPython platform
            if sys.byteorder != "little":  # pragma: no cover
                packed.byteswap()
            emb: Any = base64.b64encode(packed.tobytes()).decode()
        else:
            emb = list(v)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
    }
