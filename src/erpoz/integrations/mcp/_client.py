"""Sessions with MCP servers, and their tools as erpoz tools.

A process keeps one session per server, opened on first use and closed when the process ends
(or by :func:`close_sessions`). The sessions live on an event loop of their own, in one
thread: the MCP SDK ties a session to the task that opened it, while erpoz may build its
services in one event loop and run flows in another (``erpoz run`` does). Calls from any loop
or thread are handed to that loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx2
import jsonschema  # type: ignore[import-untyped]
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic_core import PydanticCustomError, ValidationError

from ...errors import ConfigError
from ...tools import Tool, ToolError, current_call
from ._config import ServerSpec

__all__ = [
    "IDEMPOTENCY_META",
    "McpSession",
    "McpToolError",
    "close_sessions",
    "list_tools",
    "session",
    "tools_of",
]

T = TypeVar("T")

#: The ``_meta`` key under which a call carries its idempotency key to the server.
IDEMPOTENCY_META = "io.erpoz/idempotency-key"


class McpToolError(ToolError):
    """An MCP server could not be reached, went away, or answered a call with an error;
    names the server and where it is declared."""

    def __init__(
        self, message: str, *, server: str, tool: str | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message, tool=tool, retryable=retryable)
        self.server = server


# --- the loop that owns the sessions --------------------------------------------------------
class _Loop:
    """An event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="erpoz-mcp", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False


_LOCK = threading.Lock()
_loop: _Loop | None = None
_sessions: dict[tuple[Any, ...], McpSession] = {}


def _the_loop() -> _Loop:
    global _loop
    with _LOCK:
        if _loop is None:
            _loop = _Loop()
            atexit.register(close_sessions)
        return _loop


async def _on_mcp_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the sessions' loop from whatever loop the caller is on."""
    loop = _the_loop()
    if loop.on_loop():
        return await coro
    return await asyncio.wrap_future(loop.submit(coro))


def session(spec: ServerSpec) -> McpSession:
    """This process's session with the server ``spec`` describes (not connected until used)."""
    key = spec.connection_key()
    with _LOCK:
        found = _sessions.get(key)
        if found is None:
            found = _sessions[key] = McpSession(spec)
        return found


def close_sessions(timeout_s: float = 10.0) -> None:
    """Close every session of this process (the servers started over stdio stop); runs at
    exit by itself. Safe to call more than once."""
    global _loop
    with _LOCK:
        loop, _loop = _loop, None
        sessions = list(_sessions.values())
        _sessions.clear()
    if loop is None:
        return

    async def close_all() -> None:
        await asyncio.gather(*(s._close() for s in sessions), return_exceptions=True)

    try:
        loop.submit(close_all()).result(timeout_s)
    except (concurrent.futures.TimeoutError, RuntimeError):
        pass
    finally:
        loop.loop.call_soon_threadsafe(loop.loop.stop)
        loop.thread.join(timeout_s)
        if not loop.thread.is_alive():
            loop.loop.close()


# --- one session ----------------------------------------------------------------------------
class McpSession:
    """The session with one server. It connects on first use and again on the next call after
    the server went away; a call that was cut off is not sent again (the step's retry policy
    decides, and the server gets the same idempotency key)."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._opening: asyncio.Future[Client] | None = None
        self.protocol_version: str | None = None
        self.server_name: str | None = None
        self.connects = 0

    # everything below runs on the sessions' loop
    async def _connected(self) -> Client:
        if self._client is not None and self._task is not None and not self._task.done():
            return self._client
        if self._opening is not None and not self._opening.done():
            return await asyncio.shield(self._opening)
        opening: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._opening = opening
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(opening, self._stop))
        try:
            return await asyncio.wait_for(asyncio.shield(opening), self.spec.connect_timeout_s)
        except TimeoutError:
            self._stop.set()
            raise self._error(
                f"did not answer within {self.spec.connect_timeout_s:g}s "
                "(connect_timeout_s) while connecting"
            ) from None
        except Exception as exc:
            raise self._error(f"could not connect: {_reason(exc)}") from exc

    async def _hold(self, opening: asyncio.Future[Client], stop: asyncio.Event) -> None:
        """Open the session, keep it until asked to stop, close it: all in this one task."""
        try:
            async with AsyncExitStack() as stack:
                spec = self.spec
                if spec.transport == "stdio":
                    params = StdioServerParameters(
                        command=str(spec.command),
                        args=list(spec.args),
                        env=dict(spec.env),
                        cwd=spec.cwd,
                    )
                    transport: Any = stdio_client(params, errlog=_errlog())
                else:
                    http = await stack.enter_async_context(
                        httpx2.AsyncClient(
                            headers=dict(spec.headers),
                            timeout=httpx2.Timeout(30.0, read=max(300.0, spec.timeout_s)),
                        )
                    )
                    transport = streamable_http_client(str(spec.url), http_client=http)
                client = Client(transport, read_timeout_seconds=spec.timeout_s)
                await stack.enter_async_context(client)
                self._client = client
                self.protocol_version = client.protocol_version
                info = client.server_info
                self.server_name = info.name if info is not None else None
                self.connects += 1
                opening.set_result(client)
                await stop.wait()
        except BaseException as exc:  # an exception group from the SDK's task groups too
            if not opening.done():
                opening.set_exception(_unwrap(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._client = None

    async def _close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()

    async def _list(self) -> list[mcp_types.Tool]:
        client = await self._connected()
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        try:
            for _ in range(1000):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except Exception as exc:
            await self._forget(exc)
            raise self._error(f"could not list its tools: {_reason(exc)}") from exc
        return tools

    async def _call(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None
    ) -> mcp_types.CallToolResult:
        client = await self._connected()
        try:
            return await client.call_tool(tool, arguments, meta=meta)  # type: ignore[arg-type]
        except Exception as exc:
            await self._forget(exc)
            raise self._error(f"tool '{tool}' was not answered: {_reason(exc)}", tool) from exc

    async def _forget(self, exc: BaseException) -> None:
        """After a transport failure the session is not used again; the next call reconnects."""
        if isinstance(exc, MCPError) and exc.error.code != -32000:
            return  # an error the server answered: the session is fine
        await self._close()

    def _error(self, what: str, tool: str | None = None) -> McpToolError:
        spec = self.spec
        return McpToolError(
            f"MCP server '{spec.name}' ({spec.transport}: {spec.target}, declared at "
            f"{spec.where}) {what}",
            server=spec.name,
            tool=tool,
        )

    # the public face: callable from any loop
    async def list_tools(self) -> list[mcp_types.Tool]:
        """The tools the server lists (every page)."""
        return await _on_mcp_loop(self._list())

    async def call(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> mcp_types.CallToolResult:
        """Call ``tool`` as it is named on the server; ``McpToolError`` when the server cannot
        be reached or the call is cut off (an error the tool reports is in the result)."""
        return await _on_mcp_loop(self._call(tool, arguments, meta))


def _errlog() -> Any:
    """Where a stdio server's stderr goes: ours, when it is a real file (not in a notebook or
    a test runner that captures it), else the process's original stderr, else nowhere."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open(os.devnull, "w")  # kept open for the server process's life


def _reason(exc: BaseException) -> str:
    exc = _unwrap(exc)
    if isinstance(exc, MCPError):
        return exc.error.message
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# --- tools ----------------------------------------------------------------------------------
async def list_tools(specs: Sequence[ServerSpec]) -> dict[str, list[mcp_types.Tool]]:
    """Each server's tools, the servers asked at the same time; ``ConfigError`` at the
    server's line when one cannot be reached, or a tool named in ``tools:`` is not listed."""

    async def one(spec: ServerSpec) -> list[mcp_types.Tool]:
        try:
            listed = await session(spec).list_tools()
        except McpToolError as exc:
            raise ConfigError(str(exc), file=spec.file, line=spec.line) from exc
        if spec.tools is not None:
            names = {t.name for t in listed}
            missing = [t for t in spec.tools if t not in names]
            if missing:
                raise ConfigError(
                    f"mcp server '{spec.name}' lists no tool {', '.join(map(repr, missing))} "
                    f"(it lists: {', '.join(sorted(names)) or 'none'})",
                    file=spec.file,
                    line=spec.line,
                )
            listed = [t for t in listed if t.name in spec.tools]
        return listed

    found = await asyncio.gather(*(one(s) for s in specs))
    return {s.name: tools for s, tools in zip(specs, found, strict=True)}


async def tools_of(specs: Sequence[ServerSpec]) -> list[Tool]:
    """The erpoz tools of the servers: named ``prefix + name``, with the server's JSON schema,
    side effects unless read-only; ``ConfigError`` when a server cannot be reached or two
    tools get one name."""
    listed = await list_tools(specs)
    out: list[Tool] = []
    seen: dict[str, str] = {}
    for spec in specs:
        for remote in listed[spec.name]:
            t = as_tool(spec, remote)
            if t.name in seen:
                raise ConfigError(
                    f"two MCP tools are named '{t.name}' (servers '{seen[t.name]}' and "
                    f"'{spec.name}'); give one server another 'prefix'",
                    file=spec.file,
                    line=spec.line,
                )
            seen[t.name] = spec.name
            out.append(t)
    return out


def as_tool(spec: ServerSpec, remote: mcp_types.Tool) -> Tool:
    """One MCP tool as an erpoz :class:`~erpoz.tools.Tool`; calls go through this process's
    session with the server."""
    name = spec.prefix + remote.name
    schema = dict(remote.input_schema or {"type": "object"})
    read_only = spec.is_read_only(
        remote.name, remote.annotations.read_only_hint if remote.annotations else None
    )
    conn = session(spec)
    fn = _caller(conn, remote.name, name, _wraps_result(remote.output_schema))
    return Tool(
        name=name,
        description=remote.description or remote.title or f"{remote.name} (MCP server {spec.name})",
        fn=fn,
        parameters=schema,
        side_effects=not read_only,
        secret_params=frozenset(spec.secret & set(schema.get("properties", {}))),
        validator=_Arguments(schema, name),
    )


def _wraps_result(schema: Mapping[str, Any] | None) -> bool:
    """Whether the server wraps a result that is not an object as ``{"result": value}`` (how
    the MCP SDKs return a number or a string as structured content)."""
    if not schema:
        return False
    props = schema.get("properties")
    required = schema.get("required")
    return isinstance(props, Mapping) and set(props) == {"result"} and required == ["result"]


def _caller(
    conn: McpSession, remote: str, name: str, wrapped: bool
) -> Callable[..., Awaitable[Any]]:
    spec = conn.spec

    async def call(**arguments: Any) -> Any:
        current = current_call()
        key = current.idempotency_key if current is not None else None
        meta = {IDEMPOTENCY_META: key} if key else None
        t0 = time.perf_counter()
        status, detail = "ok", None
        try:
            result = await conn.call(remote, arguments, meta)
            if result.is_error:
                status, detail = "tool_error", _text(result)
                raise McpToolError(
                    f"MCP server '{spec.name}': tool '{remote}' answered with an error: {detail}",
                    server=spec.name,
                    tool=remote,
                    retryable=False,  # the tool itself said no: asking again says it again
                )
            return _value(result, wrapped)
        except McpToolError as exc:
            if status == "ok":
                status, detail = "unreachable", str(exc)
            raise
        finally:
            if current is not None:
                record: dict[str, Any] = {
                    "tool": name,
                    "server": spec.name,
                    "remote_tool": remote,
                    "transport": spec.transport,
                    "protocol": conn.protocol_version,
                    "status": status,
                    "ms": round((time.perf_counter() - t0) * 1000, 3),
                }
                if key:
                    record["idempotency_key"] = key
                if detail is not None:
                    record["error"] = detail[:500]
                current.emit("mcp_called", record)

    call.__name__ = name
    call.__qualname__ = name
    return call


def _value(result: mcp_types.CallToolResult, wrapped: bool = False) -> Any:
    """What a step gets back: the structured result when the server gives one (unwrapped from
    ``{"result": value}``), else the text (one string), else the content blocks as JSON."""
    structured = result.structured_content
    if structured is not None:
        if wrapped and isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured
    blocks = result.content
    if all(isinstance(b, mcp_types.TextContent) for b in blocks):
        return "\n".join(b.text for b in blocks if isinstance(b, mcp_types.TextContent))
    return [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in blocks]


def _text(result: mcp_types.CallToolResult) -> str:
    parts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
    if parts:
        return "\n".join(parts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content)[:500]
    return "(no text)"


class _Arguments:
    """Checks a call's arguments against the tool's JSON schema, the way erpoz checks its own
    tools' (a pydantic ``ValidationError`` naming the argument)."""

    def __init__(self, schema: dict[str, Any], tool: str) -> None:
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolError(
                f"tool '{tool}': the server's input schema is invalid: {exc.message}"
            ) from exc
        self._validator = cls(schema)
        self._tool = tool
        props = schema.get("properties")
        # unknown arguments are refused, as for erpoz's own tools (a model's typo is an error),
        # unless the schema says what extra ones may be
        self._known: frozenset[str] | None = None
        if isinstance(props, dict) and "additionalProperties" not in schema:
            self._known = frozenset(props)

    def __call__(self, **arguments: Any) -> _Checked:
        if self._known is not None:
            extra = [k for k in arguments if k not in self._known]
            if extra:
                known = ", ".join(sorted(self._known)) or "none"
                raise _invalid(self._tool, (extra[0],), f"unknown argument (arguments: {known})")
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is not None:
            loc = tuple(error.absolute_path)
            if not loc and error.validator == "required":
                missing = [p for p in error.validator_value if p not in arguments]
                loc = (missing[0],) if missing else ()
            if not loc and error.validator == "additionalProperties":
                allowed = set(self._validator.schema.get("properties", {}))
                extra = [k for k in arguments if k not in allowed]
                loc = (extra[0],) if extra else ()
            raise _invalid(self._tool, loc or ("arguments",), error.message)
        return _Checked(arguments)


def _invalid(tool: str, loc: tuple[Any, ...], message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        tool,
        [
            {
                "type": PydanticCustomError("json_schema", "{msg}", {"msg": message}),
                "loc": loc,
                "input": None,
            }
        ],
    )


class _Checked:
    __slots__ = ("_arguments",)

    def __init__(self, arguments: dict[str, Any]) -> None:
        self._arguments = arguments

    def model_dump(self) -> dict[str, Any]:
        return self._arguments
