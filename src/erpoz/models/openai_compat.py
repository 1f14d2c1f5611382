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

Every failure is a :class:`ModelError` carrying ``retryable`` and the HTTP ``status``; transport
errors never leak. Calls to loopback addresses (``localhost``, ``127.0.0.0/8``, ``::1``) are
local, so ``block_real_providers`` does not stop them; any other host is refused while blocked.

The provider speaks HTTP/1.1 itself, over kept-alive asyncio connections (:class:`_Conn`): it
only ever POSTs JSON to one origin, and httpx spent ~0.6 ms of CPU per call doing so, more than
the rest of a gateway request. httpx is still used where it does what this client does not: a
client shared by the caller (``client=``), and a proxy named by ``HTTP(S)_PROXY`` /
``ALL_PROXY`` (``NO_PROXY`` honoured).
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import ipaddress
import json
import os
import re
import select
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, cast
from urllib.parse import quote, urlsplit
from urllib.request import getproxies

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
        self._pool: _Pool | None = None
        self._wire_headers = _wire_headers(spec.name, self._headers)

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled httpx client (a shared one, or one that goes through a proxy), made on
        first use in the running event loop (a client's connections belong to one loop, so a
        new loop gets a new client)."""
        loop = asyncio.get_running_loop()
        if self._client is None or (self._owns_client and loop is not self._loop):
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=20),
            )
            self._loop = loop
        return self._client

    def _lean_pool(self) -> _Pool | None:
        """The provider's own connection pool for the running loop, or ``None`` when httpx
        must carry the request (a shared client, or a proxy for this URL)."""
        pool = self._pool
        loop = asyncio.get_running_loop()
        if pool is not None and pool.loop is loop:
            return pool
        if (
            not self._owns_client
            or urlsplit(self.base_url).scheme not in ("http", "https")
            or _proxied(self.base_url)
        ):
            return None  # httpx's error for an odd scheme; httpx's proxies
        # a pool made in another, finished loop is dropped: its sockets died with that loop
        self._pool = pool = _Pool(self.base_url, loop)
        return pool

    async def aclose(self) -> None:
        """Close the pooled connections (a later call opens new ones). Connections made in
        another, finished event loop are only dropped: their sockets died with that loop."""
        pool, self._pool = self._pool, None
        if pool is not None and pool.loop is asyncio.get_running_loop():
            pool.close()
        if not self._owns_client or self._client is None:
            return
        client, self._client = self._client, None
        if self._loop is asyncio.get_running_loop():
            await client.aclose()

    async def _post(self, url: str, content: bytes, timeout: float | None, stream: bool) -> _Reply:
        pool = self._lean_pool()
        if pool is not None:
            return await pool.post(
                url,
                self._wire_headers,
                content,
                self.timeout if timeout is None else timeout,
                stream,
            )
        client = self.client
        request = client.build_request(
            "POST",
            url,
            content=content,
            headers=self._request_headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout),
        )
        return _HttpxReply(await client.send(request, stream=stream))

    async def _send(
        self, path: str, body: Mapping[str, Any], timeout: float | None, *, stream: bool = False
    ) -> _Reply:
        """POST ``body``; retry what may pass on a second try; return a 2xx response, read
        whole (``content``), or still open when ``stream`` (the caller closes it)."""
        url = self.base_url + path
        if not self.local:
            ensure_allowed(self.name, f"HTTP to {self.base_url}", network=True)
        content = json.dumps(body).encode()
        attempt = 0
        while True:
            cause: BaseException | None = None
            retry_after: float | None = None
            try:
                response = await self._post(url, content, timeout, stream)
            except (httpx.TimeoutException, TimeoutError) as exc:
                error = self._error(
                    f"timed out after {timeout or self.timeout:g} s waiting for {url}",
                    retryable=True,
                )
                cause = exc
            except (httpx.TransportError, OSError) as exc:
                error = self._error(
                    f"could not reach {url} ({type(exc).__name__}: {exc or 'connection failed'})",
                    retryable=True,
                )
                cause = exc
            else:
                if response.status < 300:
                    return response
                payload = b""
                try:
                    payload = await response.read()
                except (httpx.HTTPError, OSError):
                    pass
                finally:
                    await response.aclose()
                error = self._status_error(response.status, payload, url)
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
                whole = self._result(await response.read(), t0)
                if whole.text:
                    yield StreamChunk(whole.text)
                yield StreamChunk("", whole)
                return
            async for line in response.lines():
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
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise self._error("timed out while streaming the answer", retryable=True) from exc
        except (httpx.TransportError, OSError) as exc:
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


# --- HTTP/1.1 on asyncio: the provider's own client -------------------------------------------
_MAX_CONNECTIONS = 100  # per model and event loop, as httpx's default pool
_MAX_KEEPALIVE = 20  # idle connections kept for the next calls
_MAX_HEAD = 64 * 1024  # a response head (status line and headers) larger than this is refused
_PAUSE_AT = 1 << 20  # stop reading a stream when this many bytes wait for the reader
_CHECK_IDLE_S = 1.0  # a connection idle longer than this is checked before it is reused
_SAFE = "/?&=%:@!$'()*+,;~-._"  # left as they are in a request target (the rest is quoted)

# where a response stands (``_Conn.state``)
_IDLE, _HEAD, _BODY, _UNTIL_CLOSE, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE = range(9)


def _wire_headers(model: str, headers: Mapping[str, str]) -> bytes:
    """The request's fixed header lines, checked once (no line breaks, latin-1)."""
    from ..version import __version__

    fixed = {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "User-Agent": f"erpoz/{__version__}",
    }
    lines = []
    for name, value in {**fixed, **headers}.items():
        text = f"{name}: {value}"
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        if "\r" in text or "\n" in text or ":" in str(name) or not str(name).strip():
            raise ConfigError(f"model '{model}': params.headers: {name!r} is not a valid header")
        try:
            lines.append(text.encode("latin-1") + b"\r\n")
        except UnicodeEncodeError:
            raise ConfigError(
                f"model '{model}': params.headers: {name!r} has characters HTTP headers cannot "
                "carry (latin-1 only)"
            ) from None
    return b"".join(lines)


def _proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy (as httpx reads it)."""
    proxies = getproxies()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    host = (parts.hostname or "").lower()
    for entry in proxies.get("no", "").split(","):
        entry = entry.strip().lower().lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return False
    return True


class _Reply(Protocol):
    """A response as the provider reads it: status, headers (lower-case names), and the body:
    ``content`` when read whole, else ``read()`` or ``lines()``; ``aclose()`` when done."""

    status: int
    headers: Mapping[str, str]

    @property
    def content(self) -> bytes: ...
    async def read(self) -> bytes: ...
    def lines(self) -> AsyncIterator[str]: ...
    async def aclose(self) -> None: ...


class _HttpxReply:
    """An httpx response as a :class:`_Reply`."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    @property
    def content(self) -> bytes:
        return self._response.content

    async def read(self) -> bytes:
        return await self._response.aread()

    def lines(self) -> AsyncIterator[str]:
        return self._response.aiter_lines()

    async def aclose(self) -> None:
        await self._response.aclose()


class RemoteProtocolError(ConnectionError):
    """The server broke the exchange: closed the connection early, or did not speak HTTP/1.x
    (httpx's name for the same)."""


class _Conn(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection. It writes a request and parses the response as bytes
    arrive: the head, then the body framed by Content-Length, by chunks, or by the connection's
    end. The reader waits in :meth:`wait` until something new arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.state = _IDLE
        self.error: BaseException | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.remaining = 0
        self.pieces: list[bytes] = []
        self.pending = 0
        self.paused = False

    # --- asyncio's side ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.state in (_IDLE, _DONE):  # nothing asked: the connection is not reused
            self.close()
            return
        self.buf += data
        try:
            self._parse()
        except RemoteProtocolError as exc:
            self.error = exc
            self.keep_alive = False
            self.close()
        if self.pending > _PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == _UNTIL_CLOSE:
            self.state = _DONE
        elif self.state not in (_IDLE, _DONE) and self.error is None:
            if self.state == _HEAD and not self.buf:
                why = "the server closed the connection without answering"
            else:
                why = "the server closed the connection before the answer was complete"
            self.error = RemoteProtocolError(why)
            self.error.__cause__ = exc
        self._wake()

    # --- the reader's side -------------------------------------------------------------------
    def start(self, request: bytes) -> bool:
        """Send ``request`` and expect its response; ``False`` (nothing sent) when the
        connection is closed already."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        self.state = _HEAD
        self.error = None
        self.status = 0
        self.headers = {}
        self.keep_alive = True
        self.pieces = []
        self.pending = 0
        self.transport.write(request)
        return True

    async def wait(self, timeout: float) -> None:
        """Until new bytes of the response arrived, it ended, or it failed (``TimeoutError``
        when nothing arrived for ``timeout`` seconds)."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> list[bytes]:
        """The body bytes that arrived since the last call."""
        pieces, self.pieces = self.pieces, []
        self.pending = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return pieces

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return self.state == _DONE and self.keep_alive and not self.closed and not self.buf

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- parsing -----------------------------------------------------------------------------
    def _parse(self) -> None:
        """Read what the buffer holds, state by state, until a state waits for more bytes."""
        while self._advance():
            pass

    def _advance(self) -> bool:
        """One step of the response's state machine; whether to go on."""
        state = self.state
        if state == _HEAD:
            return self._parse_head()
        if state in (_BODY, _CHUNK_DATA):
            return self._parse_data(state)
        if state == _UNTIL_CLOSE:
            if self.buf:
                self._piece(bytes(self.buf))
                self.buf.clear()
            return False
        if state in (_CHUNK_SIZE, _TRAILERS):
            return self._parse_line(state)
        if state == _CHUNK_END:
            return self._parse_chunk_end()
        if self.buf:  # _DONE (or _IDLE): bytes past the response: the connection is not reused
            self.keep_alive = False
            self.buf.clear()
        return False

    def _parse_head(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise RemoteProtocolError(f"a response head over {_MAX_HEAD} bytes")
            return False
        head = buf[:end].decode("latin-1")
        del buf[: end + 4]
        self._head(head)
        return True

    def _parse_data(self, state: int) -> bool:
        buf = self.buf
        if not buf:
            return False
        n = min(len(buf), self.remaining)
        self._piece(bytes(buf[:n]))
        del buf[:n]
        self.remaining -= n
        if self.remaining == 0:
            self.state = _DONE if state == _BODY else _CHUNK_END
        return True

    def _parse_line(self, state: int) -> bool:
        """A chunk's size line, or a trailer line (an empty one ends the response)."""
        buf = self.buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise RemoteProtocolError("a chunk size line or trailer too long")
            return False
        line = bytes(buf[:end])
        del buf[: end + 2]
        if state == _TRAILERS:
            if not line:
                self.state = _DONE
            return True
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise RemoteProtocolError(f"a bad chunk size {line[:40]!r}") from None
        if size < 0:
            raise RemoteProtocolError(f"a bad chunk size {line[:40]!r}")
        self.remaining = size
        self.state = _CHUNK_DATA if size else _TRAILERS
        return True

    def _parse_chunk_end(self) -> bool:
        buf = self.buf
        if len(buf) < 2:
            return False
        if buf[:2] != b"\r\n":
            raise RemoteProtocolError("a chunk without its closing line break")
        del buf[:2]
        self.state = _CHUNK_SIZE
        return True

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise RemoteProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(code)
        if status < 200:  # an interim response (100 Continue): the real one follows
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise RemoteProtocolError(f"a malformed header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status = status
        self.headers = headers
        self.keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "")
        if status in (204, 304):
            self.state = _DONE
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = _CHUNK_SIZE
        elif "content-length" in headers:
            try:
                self.remaining = int(headers["content-length"])
            except ValueError:
                raise RemoteProtocolError(
                    f"a bad Content-Length {headers['content-length']!r}"
                ) from None
            if self.remaining < 0:
                raise RemoteProtocolError(f"a bad Content-Length {headers['content-length']!r}")
            self.state = _BODY if self.remaining else _DONE
        else:
            self.keep_alive = False
            self.state = _UNTIL_CLOSE

    def _piece(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.pending += len(piece)


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"nothing received for {timeout:g} s"))


class _Pool:
    """Kept-alive connections to one origin, in one event loop: at most ``_MAX_CONNECTIONS`` in
    use (a caller past that waits, within its timeout), at most ``_MAX_KEEPALIVE`` kept idle."""

    def __init__(self, base_url: str, loop: asyncio.AbstractEventLoop) -> None:
        parts = urlsplit(base_url)
        self.loop = loop
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.netloc = (parts.netloc.rpartition("@")[2]).encode("idna")
        self.ssl: ssl.SSLContext | None = httpx.create_ssl_context() if self.https else None
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(_MAX_CONNECTIONS)
        self.lines: dict[str, bytes] = {}  # URL -> its request line and Host header

    async def post(
        self, url: str, headers: bytes, content: bytes, timeout: float, stream: bool
    ) -> _LeanReply:
        """POST ``content`` to ``url``; the response with its head read, and its body read too
        unless ``stream``."""
        line = self.lines.get(url)
        if line is None:
            parts = urlsplit(url)
            target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _SAFE)
            line = self.lines[url] = b"POST %s HTTP/1.1\r\nHost: %s\r\n" % (
                target.encode("ascii"),
                self.netloc,
            )
        request = b"".join((line, headers, b"Content-Length: %d\r\n\r\n" % len(content), content))
        if self.slots.locked():
            await asyncio.wait_for(self.slots.acquire(), timeout)
        else:
            await self.slots.acquire()
        reply = None
        try:
            conn = await self._connection(timeout)
            if not conn.start(request):  # closed while idle, nothing sent: a new one is safe
                conn = await self._connection(timeout, fresh=True)
                if not conn.start(request):
                    raise RemoteProtocolError("the server closed the connection at once")
            reply = _LeanReply(self, conn, timeout)
            while conn.state == _HEAD:
                await conn.wait(timeout)
            reply.status = conn.status
            reply.headers = conn.headers
            if not stream:
                await reply.read()
        except BaseException:
            if reply is not None:
                reply.discard()
            else:
                self.slots.release()
            raise
        return reply

    async def _connection(self, timeout: float, *, fresh: bool = False) -> _Conn:
        now = self.loop.time()
        while self.idle and not fresh:
            conn = self.idle.pop()
            if not conn.closed and (now - conn.idle_since < _CHECK_IDLE_S or _still_open(conn)):
                return conn
            conn.close()
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: _Conn(self.loop),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.https else None,
            ),
            timeout,
        )
        return conn

    def release(self, conn: _Conn) -> None:
        """A connection whose response was read (or abandoned): kept for reuse when it can be."""
        self.slots.release()
        if conn.reusable() and len(self.idle) < _MAX_KEEPALIVE:
            conn.state = _IDLE
            conn.idle_since = self.loop.time()
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def _still_open(conn: _Conn) -> bool:
    """Whether an idle connection's peer has not closed it (nor sent anything unasked for)."""
    sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable  # readable while idle: the peer closed it (or spoke unasked)


class _LeanReply:
    """A response on a :class:`_Conn`, as a :class:`_Reply`. The connection goes back to the
    pool once the body is read whole, or is closed when the reader stops early."""

    __slots__ = ("_conn", "_pool", "_timeout", "content", "headers", "status")

    def __init__(self, pool: _Pool, conn: _Conn, timeout: float) -> None:
        self._pool: _Pool | None = pool
        self._conn = conn
        self._timeout = timeout
        self.status = 0
        self.headers: Mapping[str, str] = {}
        self.content = b""

    async def read(self) -> bytes:
        """The whole body (kept in ``content``: a second call returns it again)."""
        if self._pool is None:
            return self.content
        conn = self._conn
        while conn.state != _DONE:
            await conn.wait(self._timeout)
        pieces = conn.take()
        self.discard()
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        decoder = _decoder(self.headers)
        self.content = body if decoder is None else decoder.decompress(body) + decoder.flush()
        return self.content

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines as text (UTF-8), without their line breaks (``\\n``, ``\\r\\n``)."""
        conn = self._conn
        unzip = _decoder(self.headers)
        text = codecs.getincrementaldecoder("utf-8")("replace")
        rest = ""
        while True:
            pieces = conn.take()
            if pieces:
                data = b"".join(pieces)
                chunk = text.decode(unzip.decompress(data) if unzip is not None else data)
                *complete, rest = (rest + chunk).split("\n")
                for line in complete:
                    yield line[:-1] if line.endswith("\r") else line
            elif conn.state == _DONE:
                break
            else:
                await conn.wait(self._timeout)
        self.discard()
        last = rest + text.decode(unzip.flush() if unzip is not None else b"", final=True)
        if last:
            yield last[:-1] if last.endswith("\r") else last

    async def aclose(self) -> None:
        self.discard()

    def discard(self) -> None:
        """Give the connection back: kept when its response was read whole, else closed."""
        pool, self._pool = self._pool, None
        if pool is not None:
            if self._conn.state != _DONE:
                self._conn.close()
            pool.release(self._conn)


def _decoder(headers: Mapping[str, str]) -> Any:
    """A zlib decompressor for a gzip- or deflate-coded body, else ``None``."""
    coding = headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if coding == "deflate":
        return zlib.decompressobj()
    raise RemoteProtocolError(f"a body in a coding this client did not ask for ({coding!r})")


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


def _retry_after(headers: Mapping[str, str]) -> float | None:
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
