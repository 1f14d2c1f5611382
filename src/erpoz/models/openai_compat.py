"""The ``openai`` provider: chat and embeddings over any OpenAI-compatible REST API.

OpenAI itself, and the many servers that speak its protocol (vLLM, llama.cpp, Ollama, LM Studio,
gateways). Configured by a :class:`ModelSpec`'s ``params``:

- ``base_url``: the API root (default: env ``OPENAI_BASE_URL``, else
  ``https://api.openai.com/v1``);
- ``api_key``: the secret (default: the env variable named by ``api_key_env``, itself
  ``OPENAI_API_KEY`` by default); may be empty for local servers;
- ``model``: the upstream model id (default: the spec's name);
- ``timeout``: seconds per HTTP attempt (default 60; a request's own ``timeout`` wins);
- ``max_retries``: extra attempts after a 408/409/425/429/5xx, a timeout or a connection error
  (default 2);
- ``backoff``: the first delay in seconds, doubling each retry (default 0.5); a
  ``Retry-After`` header wins; ``max_backoff`` caps every delay (default 30);
- ``headers``: extra HTTP headers (a mapping).

Unknown params are a :class:`ConfigError` (a typo must not pass silently).

Every failure is a :class:`ModelError` carrying ``retryable`` and the HTTP ``status``; httpx
errors never leak. Calls to loopback addresses (``localhost``, ``127.0.0.0/8``, ``::1``) are
local, so ``block_real_providers`` does not stop them; any other host is refused while blocked.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError, ModelError
from ._guard import ensure_allowed
from ._types import (
    ChatRequest,
    ChatResult,
    EmbedResult,
    Message,
    ModelSpec,
    StreamChunk,
    TextPart,
    ToolCall,
    Usage,
)

__all__ = ["OpenAICompatChat", "OpenAICompatEmbed", "create", "is_loopback"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_PARAMS = frozenset(
    {
        "base_url",
        "api_key",
        "api_key_env",
        "model",
        "timeout",
        "max_retries",
        "backoff",
        "max_backoff",
        "headers",
    }
)
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_HINTS = {
    401: "check the API key",
    403: "check the API key's permissions",
    404: "check base_url and the model id",
}


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (a local server is not a real provider)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Endpoint:
    """What chat and embeddings share: config, one lazily-made pooled client, and a POST with
    retries whose every failure becomes a :class:`ModelError`.

    ``client`` shares a caller's ``httpx.AsyncClient`` (its pool, proxies, transport) instead of
    making one; the caller then owns it, and ``aclose`` leaves it open.
    """

    def __init__(self, spec: ModelSpec, *, client: httpx.AsyncClient | None = None) -> None:
        params = spec.params
        unknown = set(params) - _PARAMS
        if unknown:
            raise ConfigError(
                f"model '{spec.name}' (provider '{spec.provider}'): unknown params "
                f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(_PARAMS))}"
            )
        self.spec = spec
        self.name = spec.name
        self.model: str = _param(spec, "model", str, spec.name)
        base = _param(spec, "base_url", str, os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.base_url = base.rstrip("/")
        key_env = _param(spec, "api_key_env", str, "OPENAI_API_KEY")
        api_key: str = _param(spec, "api_key", str, os.environ.get(key_env, ""))
        self.timeout = float(_param(spec, "timeout", (int, float), 60.0))
        self.max_retries = _param(spec, "max_retries", int, 2)
        self.backoff = float(_param(spec, "backoff", (int, float), 0.5))
        self.max_backoff = float(_param(spec, "max_backoff", (int, float), 30.0))
        extra_headers = dict(_param(spec, "headers", Mapping, {}))
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError(
                f"model '{spec.name}': params need timeout > 0 and max_retries, backoff, "
                "max_backoff >= 0"
            )
        self.local = is_loopback(self.base_url)
        self._headers = {"Content-Type": "application/json", **extra_headers}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._client = client
        self._owns_client = client is None
        # A client given by the caller does not know our headers: send them with each request.
        self._request_headers = None if client is None else self._headers
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled client, made on first use in the running event loop (a client's
        connections belong to one loop, so a new loop gets a new client)."""
        loop = asyncio.get_running_loop()
        if self._client is None or (self._owns_client and loop is not self._loop):
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the pooled client's connections (a later call opens a new client). A client
        made in another, finished event loop is only dropped: its sockets died with that loop."""
        if not self._owns_client or self._client is None:
            return
        client, self._client = self._client, None
        if self._loop is asyncio.get_running_loop():
            await client.aclose()

    async def _send(
        self, path: str, body: Mapping[str, Any], timeout: float | None, *, stream: bool = False
    ) -> httpx.Response:
        """POST ``body``; retry what may pass on a second try; return a 2xx response (still
        open when ``stream``: the caller closes it)."""
        url = self.base_url + path
        if not self.local:
            ensure_allowed(self.name, f"HTTP to {self.base_url}")
        client = self.client
        request = client.build_request(
            "POST",
            url,
            content=json.dumps(body).encode(),
            headers=self._request_headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout),
        )
        attempt = 0
        while True:
            cause: BaseException | None = None
            retry_after: float | None = None
            try:
                response = await client.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                error = self._error(
                    f"timed out after {timeout or self.timeout:g} s waiting for {url}",
                    retryable=True,
                )
                cause = exc
            except httpx.TransportError as exc:
                error = self._error(
                    f"could not reach {url} ({type(exc).__name__}: {exc or 'connection failed'})",
                    retryable=True,
                )
                cause = exc
            else:
                if response.status_code < 300:
                    return response
                payload = b""
                try:
                    payload = await response.aread()
                except httpx.HTTPError:
                    pass
                finally:
                    await response.aclose()
                error = self._status_error(response.status_code, payload, url)
                retry_after = _retry_after(response.headers)
            if not error.retryable or attempt >= self.max_retries:
                if attempt:
                    error = self._error(
                        f"{_bare(error)} (gave up after {attempt + 1} attempts)",
                        retryable=error.retryable,
                        status=error.status,
                    )
                raise error from cause
            delay = self.backoff * 2**attempt if retry_after is None else retry_after
            await asyncio.sleep(min(delay, self.max_backoff))
            attempt += 1

    def _error(
        self, message: str, *, retryable: bool = False, status: int | None = None
    ) -> ModelError:
        return ModelError(message, model=self.name, retryable=retryable, status=status)

    def _status_error(self, status: int, payload: bytes, url: str) -> ModelError:
        detail = _error_detail(payload)
        hint = _HINTS.get(status)
        message = f"HTTP {status} from {url}" + (f": {detail}" if detail else "")
        if hint:
            message += f" ({hint}; upstream model '{self.model}')"
        retryable = status in _RETRYABLE_STATUS or status >= 500
        return self._error(message, retryable=retryable, status=status)

    def _invalid(self, what: str, payload: bytes | str) -> ModelError:
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        snippet = text[:200] + ("…" if len(text) > 200 else "")
        tail = f": {snippet!r}" if snippet else ""
        return self._error(f"the provider returned an invalid response ({what}){tail}")


class OpenAICompatChat(_Endpoint):
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    async def generate(self, request: ChatRequest) -> ChatResult:
        t0 = time.perf_counter()
        response = await self._send("/chat/completions", self._body(request), request.timeout)
        return self._result(response.content, t0)

    def _result(self, raw: bytes, t0: float) -> ChatResult:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            calls = message.get("tool_calls") or ()
            finish = choice.get("finish_reason")
            usage = _usage(data.get("usage"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._invalid(f"{type(exc).__name__}: {exc}", raw) from exc
        tool_calls = tuple(self._tool_call(c, raw) for c in calls) if calls else ()
        return ChatResult(
            text,
            self.name,
            usage,
            time.perf_counter() - t0,
            tool_calls,
            finish,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """Chunks of text as they arrive; the last chunk carries the whole ``ChatResult``."""
        t0 = time.perf_counter()
        body = self._body(request)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        response = await self._send("/chat/completions", body, request.timeout, stream=True)
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage = Usage()
        events = 0
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                # A server that does not stream answers with one JSON completion: one chunk.
                whole = self._result(await response.aread(), t0)
                if whole.text:
                    yield StreamChunk(whole.text)
                yield StreamChunk("", whole)
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                events += 1
                try:
                    data = json.loads(payload)
                    if data.get("usage"):
                        usage = _usage(data["usage"])
                    choices = data.get("choices") or ()
                    if not choices:
                        continue
                    choice = choices[0]
                    delta = choice.get("delta") or {}
                    finish = choice.get("finish_reason") or finish
                    for d in delta.get("tool_calls") or ():
                        _merge_call(calls, d)
                    text = delta.get("content")
                except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                    raise self._invalid(
                        f"bad stream event, {type(exc).__name__}: {exc}", payload
                    ) from exc
                if text:
                    parts.append(text)
                    yield StreamChunk(text)
        except httpx.TimeoutException as exc:
            raise self._error("timed out while streaming the answer", retryable=True) from exc
        except httpx.TransportError as exc:
            raise self._error(
                f"the stream broke off ({type(exc).__name__}: {exc or 'connection lost'})",
                retryable=True,
            ) from exc
        finally:
            await response.aclose()
        if not events:
            raise self._invalid("a stream without events", "")
        tool_calls = tuple(
            self._tool_call(
                {"id": c.get("id", ""), "function": {"name": c["name"], "arguments": c["args"]}},
                "",
            )
            for _, c in sorted(calls.items())
        )
        result = ChatResult(
            "".join(parts), self.name, usage, time.perf_counter() - t0, tool_calls, finish
        )
        yield StreamChunk("", result)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [
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
        schema = request.response_schema
        if schema is not None:
            name = _SCHEMA_NAME.sub("_", str(schema.get("title") or "response"))[:64]
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": dict(schema), "strict": False},
            }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        return body

    def _tool_call(self, call: Any, raw: bytes | str) -> ToolCall:
        try:
            fn = call["function"]
            name = fn["name"]
            arguments = fn.get("arguments") or "{}"
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._invalid(f"a tool call without a function name: {exc}", raw) from exc
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError as exc:
            raise self._error(
                f"called tool '{name}' with arguments that are not valid JSON ({exc}): "
                f"{arguments[:200]!r}"
            ) from exc
        if not isinstance(args, dict):
            raise self._error(
                f"called tool '{name}' with arguments that are not a JSON object: "
                f"{str(arguments)[:200]!r}"
            )
        return ToolCall(str(call.get("id") or ""), str(name), args)


class OpenAICompatEmbed(_Endpoint):
    """An embedding model behind an OpenAI-compatible ``/embeddings`` endpoint."""

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        t0 = time.perf_counter()
        batch = list(texts)
        response = await self._send("/embeddings", {"model": self.model, "input": batch}, None)
        raw = response.content
        try:
            data = json.loads(raw)
            rows = sorted(data["data"], key=lambda r: r["index"])
            vectors = tuple(tuple(float(x) for x in r["embedding"]) for r in rows)
            usage = _usage(data.get("usage"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._invalid(f"{type(exc).__name__}: {exc}", raw) from exc
        if len(vectors) != len(batch):
            raise self._invalid(f"{len(vectors)} vectors for {len(batch)} texts", raw)
        return EmbedResult(vectors, self.name, usage, time.perf_counter() - t0)


def create(spec: ModelSpec) -> OpenAICompatChat | OpenAICompatEmbed:
    """Entry point of the ``openai`` provider: a chat or an embedding model, by ``spec.kind``."""
    if spec.kind == "chat":
        return OpenAICompatChat(spec)
    if spec.kind == "embed":
        return OpenAICompatEmbed(spec)
    raise ConfigError(
        f"model '{spec.name}': provider '{spec.provider}' serves kind 'chat' or 'embed', "
        f"not '{spec.kind}'"
    )


def check_params(spec: ModelSpec) -> None:
    """Check a spec's params as the provider will read them (builds no client)."""
    create(spec)


# --- mapping to and from the wire ---------------------------------------------------------------
def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if isinstance(m.content, str):
        out["content"] = m.content
    else:
        out["content"] = [
            {"type": "text", "text": p.text}
            if isinstance(p, TextPart)
            else {"type": "image_url", "image_url": {"url": p.data_url()}}
            for p in m.content
        ]
    if m.tool_calls:
        if out["content"] == "":
            out["content"] = None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _usage(data: Any) -> Usage:
    if not data:
        return Usage()
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def _merge_call(calls: dict[int, dict[str, Any]], delta: Mapping[str, Any]) -> None:
    """Fold one streamed tool-call delta into the calls being assembled (by ``index``)."""
    call = calls.setdefault(int(delta.get("index", 0)), {"name": "", "args": ""})
    if delta.get("id"):
        call["id"] = delta["id"]
    fn = delta.get("function") or {}
    if fn.get("name"):
        call["name"] += fn["name"]
    if fn.get("arguments"):
        call["args"] += fn["arguments"]


def _retry_after(headers: httpx.Headers) -> float | None:
    """The wait a server asked for: ``retry-after-ms``, or ``Retry-After`` in seconds or as an
    HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_detail(payload: bytes) -> str:
    """The provider's own error message (OpenAI's ``{"error": {"message": ...}}``), else the
    start of the body."""
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if message:
        return str(message)[:300]
    return payload[:300].decode(errors="replace").strip()


def _bare(error: ModelError) -> str:
    """The message of ``error`` without the ``model 'x': `` prefix."""
    text = str(error)
    prefix = f"model '{error.model}': "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _param(spec: ModelSpec, key: str, kind: Any, default: Any) -> Any:
    value = spec.params.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(
            f"model '{spec.name}': params.{key} must be {want}, not {type(value).__name__} "
            f"({value!r})"
        )
    return value
