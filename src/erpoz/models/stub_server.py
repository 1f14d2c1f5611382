"""A real, local OpenAI-compatible HTTP server for tests and benchmarks: scripted and recording.

It speaks the OpenAI REST protocol on ``127.0.0.1`` over real sockets, so a client under test
goes through its whole stack (connection pool, JSON, SSE, timeouts, retries) instead of a
patched function. Each endpoint answers from a queue of scripted :class:`Behaviour` values and,
once that queue is empty, from a fallback (a deterministic echo unless set with ``always``)::

    with OpenAIStubServer() as server:
        server.script("chat", Behaviour.error(429, retry_after=0.05), Behaviour.reply("hi"))
        ...  # point a client at server.base_url ("http://127.0.0.1:PORT/v1")
        assert len(server.requests_to("chat")) == 2

Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE when the body has ``"stream": true``),
``POST /v1/embeddings`` and ``GET /v1/models``. Every request is recorded as a
:class:`RecordedRequest` (parsed JSON body and headers) before it is answered.

``python -m erpoz.models.stub_server [--port N]`` runs one in the foreground and prints its
base URL (benchmarks run it in a separate process this way). With ``--lean`` it answers the echo
only, without scripts or recording, from one asyncio event loop instead of a thread per
connection (:func:`serve_lean`): an upstream that a load test does not saturate first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

__all__ = ["Behaviour", "Endpoint", "OpenAIStubServer", "RecordedRequest"]

Endpoint = Literal["chat", "embeddings", "models"]
_ENDPOINTS: tuple[Endpoint, ...] = ("chat", "embeddings", "models")
_ROUTES: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "models",
}
_WORDS = re.compile(r"\s*\S+\s*|\s+")

ToolArgs = Mapping[str, Any] | str


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One scripted answer of the stub server. Build one with the class methods; add a delay
    before it with :meth:`delayed`.

    A behaviour fits any endpoint where it makes sense: ``reply`` and ``tool_calls`` answer chat
    (as JSON or as an SSE stream, as the request asks), ``embedding`` answers embeddings, and
    ``echo``, ``error``, ``malformed``, ``raw`` and ``disconnect`` answer anything.
    """

    kind: Literal["echo", "reply", "embedding", "error", "malformed", "raw", "disconnect"] = "echo"
    text: str = ""
    calls: tuple[tuple[str, str], ...] = ()
    vectors: tuple[tuple[float, ...], ...] = ()
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    status: int = 200
    message: str = ""
    retry_after: float | str | None = None
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0

    @classmethod
    def echo(cls) -> Behaviour:
        """The default answer: chat says ``echo: <last user text>``, embeddings are vectors
        derived from a hash of each text, models lists the server's models."""
        return cls()

    @classmethod
    def reply(
        cls, text: str, *, usage: tuple[int, int] | None = None, finish_reason: str = "stop"
    ) -> Behaviour:
        """A chat answer. ``usage`` is (prompt_tokens, completion_tokens); by default both
        are word counts of the request and the reply."""
        return cls("reply", text=text, usage=usage, finish_reason=finish_reason)

    @classmethod
    def json(cls, value: Any, *, usage: tuple[int, int] | None = None) -> Behaviour:
        """A chat answer whose text is ``value`` as JSON (for structured-output requests)."""
        return cls.reply(json.dumps(value), usage=usage)

    @classmethod
    def tool_calls(
        cls, *calls: tuple[str, ToolArgs], text: str = "", usage: tuple[int, int] | None = None
    ) -> Behaviour:
        """A chat answer calling tools: ``tool_calls(("get_weather", {"city": "Paris"}))``.
        Arguments given as a string are sent verbatim (malformed JSON included)."""
        encoded = tuple(
            (name, args if isinstance(args, str) else json.dumps(args)) for name, args in calls
        )
        return cls("reply", text=text, calls=encoded, usage=usage, finish_reason="tool_calls")

    @classmethod
    def embedding(cls, vectors: Sequence[Sequence[float]]) -> Behaviour:
        """An embeddings answer with these vectors, one per input text."""
        return cls("embedding", vectors=tuple(tuple(float(x) for x in v) for v in vectors))

    @classmethod
    def error(
        cls, status: int, message: str = "", *, retry_after: float | str | None = None
    ) -> Behaviour:
        """An HTTP error with an OpenAI-style JSON error body; ``retry_after`` (seconds, or a
        string sent verbatim) sets the ``Retry-After`` header."""
        return cls(
            "error",
            status=status,
            message=message or f"stub error {status}",
            retry_after=retry_after,
        )

    @classmethod
    def malformed(cls, body: bytes = b"{this is not json", *, status: int = 200) -> Behaviour:
        """A body that is not the JSON the client expects (an SSE ``data:`` line when the
        request streams)."""
        return cls("malformed", body=body, status=status)

    @classmethod
    def raw(
        cls, body: bytes, *, status: int = 200, content_type: str = "application/json"
    ) -> Behaviour:
        """Exactly this body, whatever was asked (e.g. JSON to a streaming request, as servers
        that cannot stream do)."""
        return cls("raw", body=body, status=status, content_type=content_type)

    @classmethod
    def disconnect(cls) -> Behaviour:
        """Close the connection without answering."""
        return cls("disconnect")

    def delayed(self, seconds: float) -> Behaviour:
        """The same behaviour, after waiting ``seconds`` (to provoke client timeouts)."""
        return replace(self, delay=seconds)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the server received: ``body`` is the parsed JSON (None when the body was
    empty or not JSON), ``headers`` have lower-case names, ``at`` when it arrived (epoch s)."""

    method: str
    path: str
    endpoint: Endpoint | None
    headers: Mapping[str, str]
    body: Any
    raw: bytes = field(repr=False)
    at: float = 0.0


class OpenAIStubServer:
    """An OpenAI-compatible server on ``127.0.0.1`` in a background thread.

    Use it as a context manager (or ``start()`` / ``stop()``). ``base_url`` is what an OpenAI
    client takes. ``script`` queues behaviours per endpoint, ``always`` sets what answers once a
    queue is empty, ``requests`` / ``requests_to`` show what was received and ``reset`` forgets
    scripts, fallbacks and recorded requests (share one server across tests and reset it
    between them). Thread-safe.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("stub-model",),
        dimensions: int = 8,
    ) -> None:
        self.models = tuple(models)
        self.dimensions = dimensions
        self._address = (host, port)
        self._lock = threading.Lock()
        self._queues: dict[Endpoint, deque[Behaviour]] = {e: deque() for e in _ENDPOINTS}
        self._fallback: dict[Endpoint, Behaviour] = {}
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> OpenAIStubServer:
        """Bind (a free port unless one was given) and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(self._address, _Handler)
        httpd.stub = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"openai-stub:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: the port and every open connection are closed, delayed answers in
        progress are abandoned."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.cut_connections()
        if thread is not None:
            thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the stub server is not running; call start() or use 'with'")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the base URL an OpenAI client takes."""
        return f"http://{self._address[0]}:{self.port}/v1"

    # --- scripting ------------------------------------------------------------------------
    def script(self, endpoint: Endpoint, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests to ``endpoint``, answered in order."""
        _check_endpoint(endpoint)
        with self._lock:
            self._queues[endpoint].extend(behaviours)

    def always(self, endpoint: Endpoint, behaviour: Behaviour | None) -> None:
        """Answer ``endpoint`` with ``behaviour`` whenever its queue is empty (None: echo)."""
        _check_endpoint(endpoint)
        with self._lock:
            if behaviour is None:
                self._fallback.pop(endpoint, None)
            else:
                self._fallback[endpoint] = behaviour

    def pending(self, endpoint: Endpoint) -> int:
        """How many scripted behaviours for ``endpoint`` have not been used yet."""
        with self._lock:
            return len(self._queues[endpoint])

    def reset(self) -> None:
        """Forget scripted behaviours, fallbacks and recorded requests."""
        with self._lock:
            for q in self._queues.values():
                q.clear()
            self._fallback.clear()
            self._requests.clear()

    # --- what was received ----------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the start (or the last ``reset``), oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        """The requests received by one endpoint."""
        return [r for r in self.requests if r.endpoint == endpoint]

    # --- used by the handler --------------------------------------------------------------
    def _take(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self._requests.append(request)
            if request.endpoint is None:
                return Behaviour.error(404, f"no route for {request.method} {request.path}")
            queue = self._queues[request.endpoint]
            if queue:
                return queue.popleft()
            return self._fallback.get(request.endpoint, Behaviour())

    def _next_id(self) -> int:
        return next(self._ids)


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in _ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(_ENDPOINTS)}")


# --- the HTTP side --------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    """Keeps its open connections, so that stopping also cuts the keep-alive ones."""

    daemon_threads = True
    request_queue_size = 1024  # socketserver's 5 resets connections when many open at once
    stub: OpenAIStubServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that went away (a client timing out closes its connection)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks do not want a line per request."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        request = RecordedRequest(
            self.command,
            path,
            _ROUTES.get((self.command, path)),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            raw,
            time.time(),
        )
        behaviour = stub._take(request)
        if behaviour.delay > 0 and stub._stopping.wait(behaviour.delay):
            self.close_connection = True
            return
        try:
            self._answer(stub, request, behaviour)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _answer(self, stub: OpenAIStubServer, req: RecordedRequest, b: Behaviour) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        streaming = req.endpoint == "chat" and body.get("stream") is True
        if b.kind == "disconnect":
            self.close_connection = True
        elif b.kind == "error":
            headers = {}
            if b.retry_after is not None:
                ra = b.retry_after
                headers["Retry-After"] = ra if isinstance(ra, str) else f"{ra:g}"
            kind = "rate_limit_error" if b.status == 429 else "stub_error"
            error = {"error": {"message": b.message, "type": kind, "code": b.status}}
            self._send_json(b.status, error, headers)
        elif b.kind == "malformed" and streaming:
            self._send_sse([b"data: " + b.body + b"\n\n"])
        elif b.kind in ("malformed", "raw"):
            self._send(b.status, b.body, b.content_type)
        elif req.endpoint == "chat":
            self._chat(stub, body, b, streaming)
        elif req.endpoint == "embeddings":
            self._embeddings(stub, body, b)
        else:
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "erpoz-stub"}
                for m in stub.models
            ]
            self._send_json(200, {"object": "list", "data": data})

    # --- chat ---------------------------------------------------------------------------------
    def _chat(
        self, stub: OpenAIStubServer, body: dict[str, Any], b: Behaviour, streaming: bool
    ) -> None:
        answer = _chat_answer(body, b, streaming, stub._next_id(), stub.models[0])
        if isinstance(answer, list):
            self._send_sse(answer)
        else:
            self._send(200, answer, "application/json")

    # --- embeddings ---------------------------------------------------------------------------
    def _embeddings(self, stub: OpenAIStubServer, body: dict[str, Any], b: Behaviour) -> None:
        reply = _embeddings_answer(body, b, stub.dimensions, stub.models[0])
        self._send(200, reply, "application/json")

    # --- writing ------------------------------------------------------------------------------
    def _send_json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_sse(self, events: Sequence[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.write(b"0\r\n\r\n")


def _chat_answer(
    body: Mapping[str, Any], b: Behaviour, streaming: bool, number: int, default_model: str
) -> bytes | list[bytes]:
    """A chat completion answering ``body`` as behaviour ``b`` says (``reply`` or the echo): the
    JSON body, or the SSE events of a stream."""
    messages: list[Any] = body.get("messages") or []
    calls: tuple[tuple[str, str], ...] = ()
    if b.kind == "reply":
        text, calls, finish = b.text, b.calls, b.finish_reason or "stop"
    else:
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text, finish = f"echo: {_text_of(users[-1]) if users else ''}", "stop"
    if b.usage is not None:
        prompt_tokens, completion_tokens = b.usage
    else:
        prompt_tokens = max(1, sum(_word_count(_text_of(m)) for m in messages))
        completion_tokens = _word_count(text) + sum(_word_count(a) for _, a in calls)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    ident = f"chatcmpl-stub-{number}"
    model = body.get("model", default_model)
    head = {"id": ident, "created": int(time.time()), "model": model}
    call_ids = [f"call_{ident[-6:]}_{i}" for i in range(len(calls))]
    tool_calls = [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
        for cid, (name, args) in zip(call_ids, calls, strict=True)
    ]
    if not streaming:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice = {"index": 0, "message": message, "finish_reason": finish}
        reply = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return json.dumps(reply).encode()

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in _WORDS.findall(text)]
    for i, (cid, (name, args)) in enumerate(zip(call_ids, calls, strict=True)):
        opening = {
            "index": i,
            "id": cid,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [opening]}))
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    events.append(chunk({}, finish))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append(
            _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _embeddings_answer(
    body: Mapping[str, Any], b: Behaviour, dimensions: int, default_model: str
) -> bytes:
    raw_input = body.get("input", [])
    texts = [raw_input] if isinstance(raw_input, str) else [str(t) for t in raw_input]
    if b.kind == "embedding":
        vectors = [list(v) for v in b.vectors]
    else:
        vectors = [_hash_vector(t, dimensions) for t in texts]
    tokens = max(1, sum(_word_count(t) for t in texts))
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    reply = {
        "object": "list",
        "data": data,
        "model": body.get("model", default_model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json.dumps(reply).encode()


def _sse(value: Any) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


def _text_of(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _word_count(text: str) -> int:
    return len(text.split())


def _hash_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text`` (same text, same vector)."""
    digest = b""
    counter = 0
    while len(digest) < dimensions:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [b / 127.5 - 1.0 for b in digest[:dimensions]]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


# --- the lean mode: echo only, on asyncio ---------------------------------------------------
class _Lean(asyncio.Protocol):
    """One connection of :func:`serve_lean`: HTTP/1.1 requests with a Content-Length body (or
    none), answered in order as the echo fallback answers them."""

    def __init__(self, numbers: Iterator[int], models: tuple[str, ...], dimensions: int) -> None:
        self.numbers = numbers
        self.models = models
        self.dimensions = dimensions
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            lines = buf[:end].decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            path = rest.partition(" ")[0].split("?", 1)[0]
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection":
                    close = "close" in value.lower()
                elif name == "transfer-encoding":
                    self._write(411, b'{"error": {"message": "send a Content-Length"}}', True)
                    return
            if len(buf) < end + 4 + length:
                return
            raw = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            self._answer(method, path, raw, close)
            if close:
                return

    def _answer(self, method: str, path: str, raw: bytes, close: bool) -> None:
        endpoint = _ROUTES.get((method, path))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if endpoint == "chat":
            answer = _chat_answer(
                body, Behaviour(), body.get("stream") is True, next(self.numbers), self.models[0]
            )
            if isinstance(answer, list):
                assert self.transport is not None
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in answer)
                    + b"0\r\n\r\n"
                )
                if close:
                    self.transport.close()
                return
            self._write(200, answer, close)
        elif endpoint == "embeddings":
            self._write(
                200, _embeddings_answer(body, Behaviour(), self.dimensions, self.models[0]), close
            )
        elif endpoint == "models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "erpoz-stub"}
                for m in self.models
            ]
            self._write(200, json.dumps({"object": "list", "data": data}).encode(), close)
        else:
            error = {"error": {"message": f"no route for {method} {path}", "code": 404}}
            self._write(404, json.dumps(error).encode(), close)

    def _write(self, status: int, payload: bytes, close: bool) -> None:
        assert self.transport is not None
        reason = {200: "OK", 404: "Not Found", 411: "Length Required"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason.encode(), len(payload), payload)
        )
        if close or status == 411:
            self.transport.close()


async def serve_lean(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    models: Sequence[str] = ("stub-model",),
    dimensions: int = 8,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve the echo answers of :class:`OpenAIStubServer` (chat, streamed or not, embeddings,
    models) from the running event loop until cancelled: no scripts, no recording, no threads,
    so that a benchmark's upstream is not its bottleneck. ``started`` gets the base URL."""
    loop = asyncio.get_running_loop()
    numbers = itertools.count(1)
    names = tuple(models)
    server = await loop.create_server(
        lambda: _Lean(numbers, names, dimensions), host, port, backlog=1024
    )
    bound = server.sockets[0].getsockname()
    if started is not None:
        started(f"http://{host}:{bound[1]}/v1")
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m erpoz.models.stub_server",
        description="Run a local OpenAI-compatible stub server (echoes) until interrupted.",
        epilog="example: python -m erpoz.models.stub_server --port 8411",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--lean",
        action="store_true",
        help="echo only, on one asyncio loop (uvloop when installed): for benchmarks",
    )
    args = parser.parse_args(argv)
    if args.lean:
        run = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
        with contextlib.suppress(KeyboardInterrupt):
            run(serve_lean(args.host, args.port, started=lambda url: print(url, flush=True)))
        return 0
    server = OpenAIStubServer(host=args.host, port=args.port).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
