"""``Client`` and ``AsyncClient``: the runs API of ``erpoz serve`` from Python.

Each method is one request described once (:class:`_Call`: method, path, body, how to read the
answer) and sent by either client, so both behave alike. Answers are the pydantic models of
:mod:`erpoz.server.wire`, the ones the server writes; errors are :mod:`erpoz.client._errors`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ..server.wire import (
    Drive,
    EndOfTurn,
    EventOut,
    EventPage,
    FlowInfo,
    ForkRun,
    Health,
    ModelStats,
    QualityStats,
    ReviewDecision,
    ReviewItem,
    RunDetail,
    RunInfoOut,
    RunOutcome,
    SendMessage,
    StartRun,
    TokenChunk,
    VerifyReport,
    WhoAmI,
)
from ._errors import ApiError, ConnectionFailed, WaitTimedOut, error_from, transport_error
from ._sse import Follower, FollowItem

__all__ = ["DEFAULT_URL", "AsyncClient", "Client"]

DEFAULT_URL = "http://127.0.0.1:8000"
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: a follower's read timeout: the server sends a ping after 15 s of silence, so a longer
#: silence means a dead connection (reconnect)
FOLLOW_READ_TIMEOUT_S = 60.0
#: how long one POST may wait server-side before the client follows instead
_WAIT_CHUNK_S = 300.0
_DONE = frozenset({"succeeded", "failed", "cancelled", "waiting"})


def _model(cls: type[M], what: str) -> Callable[[Any], M]:
    def parse(data: Any) -> M:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ApiError(
                f"{what}: the answer does not fit {cls.__name__}: {exc.errors()[0]['msg']} "
                f"at {'.'.join(map(str, exc.errors()[0]['loc']))}",
                status=200,
                kind="bad_response",
            ) from None

    return parse


def _listed(cls: type[M], key: str, what: str) -> Callable[[Any], list[M]]:
    one = _model(cls, what)

    def parse(data: Any) -> list[M]:
        items = data.get(key) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ApiError(
                f"{what}: no list {key!r} in the answer", status=200, kind="bad_response"
            )
        return [one(i) for i in items]

    return parse


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request and how to read its answer (``read`` gets the decoded JSON)."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    body: BaseModel | None = None

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return self.body.model_dump_json(exclude_unset=True).encode()

    def answer(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_from(response)
        try:
            data = response.json()
        except ValueError:
            raise ApiError(
                f"{self.what}: the answer is not JSON ({response.text[:100]!r})",
                status=response.status_code,
                kind="bad_response",
            ) from None
        return self.read(data)


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _decision(
    *,
    step: str | None,
    reviewer: str | None,
    comment: str,
    wait: bool,
    timeout_s: float | None,
    output: Any = ...,
) -> ReviewDecision:
    fields: dict[str, Any] = {"wait": wait}
    if step is not None:
        fields["step"] = step
    if reviewer is not None:
        fields["reviewer"] = reviewer
    if comment:
        fields["comment"] = comment
    if timeout_s is not None:
        fields["timeout_s"] = timeout_s
    if output is not ...:
        fields["output"] = output
    return ReviewDecision(**fields)


class _Calls:
    """Every request of the runs API, described once for both clients."""

    @staticmethod
    def health() -> _Call[Health]:
        return _Call("GET", "/api/health", _model(Health, "health"))

    @staticmethod
    def whoami() -> _Call[WhoAmI]:
        return _Call("GET", "/api/whoami", _model(WhoAmI, "whoami"))

    @staticmethod
    def flows() -> _Call[list[FlowInfo]]:
        return _Call("GET", "/api/flows", _listed(FlowInfo, "flows", "GET /api/flows"))

    @staticmethod
    def start(body: StartRun) -> _Call[RunOutcome]:
        return _Call("POST", "/api/runs", _model(RunOutcome, "POST /api/runs"), body=body)

    @staticmethod
    def get(run_id: str) -> _Call[RunDetail]:
        return _Call("GET", f"/api/runs/{run_id}", _model(RunDetail, f"run {run_id}"))

    @staticmethod
    def runs(
        status: str | None, flow: str | None, limit: int, q: str | None
    ) -> _Call[list[RunInfoOut]]:
        return _Call(
            "GET",
            "/api/runs",
            _listed(RunInfoOut, "runs", "GET /api/runs"),
            _params(status=status, flow=flow, limit=limit, q=q),
        )

    @staticmethod
    def events(run_id: str, after: int, kind: str | None, limit: int | None) -> _Call[EventPage]:
        return _Call(
            "GET",
            f"/api/runs/{run_id}/events",
            _model(EventPage, f"events of {run_id}"),
            _params(after=after, kind=kind, limit=limit),
        )

    @staticmethod
    def resume(run_id: str, wait: bool, timeout_s: float | None) -> _Call[RunOutcome]:
        body = Drive(wait=wait, timeout_s=timeout_s)
        return _Call("POST", f"/api/runs/{run_id}/resume", _model(RunOutcome, "resume"), body=body)

    @staticmethod
    def cancel(run_id: str) -> _Call[str]:
        def read(data: Any) -> str:
            return str(data.get("cancel")) if isinstance(data, dict) else "?"

        return _Call("POST", f"/api/runs/{run_id}/cancel", read)

    @staticmethod
    def fork(run_id: str, from_step: str | None, inputs: Mapping[str, Any]) -> _Call[RunOutcome]:
        body = ForkRun(from_step=from_step, inputs=dict(inputs))
        return _Call("POST", f"/api/runs/{run_id}/fork", _model(RunOutcome, "fork"), body=body)

    @staticmethod
    def send(run_id: str, topic: str, value: Any) -> _Call[int]:
        def read(data: Any) -> int:
            return int(data.get("message_id", 0)) if isinstance(data, dict) else 0

        body = SendMessage(topic=topic, value=value)
        return _Call("POST", f"/api/runs/{run_id}/messages", read, body=body)

    @staticmethod
    def published(run_id: str, key: str, timeout_s: float) -> _Call[Any]:
        def read(data: Any) -> Any:
            return data.get("value") if isinstance(data, dict) else None

        return _Call(
            "GET", f"/api/runs/{run_id}/published/{key}", read, params={"timeout_s": timeout_s}
        )

    @staticmethod
    def lineage(run_id: str, step: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/api/runs/{run_id}/lineage/{step}", _dict)

    @staticmethod
    def reviews(run_id: str | None) -> _Call[list[ReviewItem]]:
        path = "/api/reviews" if run_id is None else f"/api/reviews/{run_id}"
        return _Call("GET", path, _listed(ReviewItem, "reviews", f"GET {path}"))

    @staticmethod
    def decide(action: str, run_id: str, body: ReviewDecision) -> _Call[RunOutcome]:
        return _Call(
            "POST",
            f"/api/reviews/{run_id}/{action}",
            _model(RunOutcome, f"{action} {run_id}"),
            body=body,
        )

    @staticmethod
    def verify(run: str | None) -> _Call[VerifyReport]:
        return _Call(
            "GET", "/api/audit/verify", _model(VerifyReport, "audit verify"), _params(run=run)
        )

    @staticmethod
    def model_stats(since: str | None, bucket: str | None) -> _Call[ModelStats]:
        return _Call(
            "GET",
            "/api/stats/models",
            _model(ModelStats, "model stats"),
            _params(since=since, bucket=bucket),
        )

    @staticmethod
    def quality_stats(params: dict[str, Any]) -> _Call[QualityStats]:
        return _Call(
            "GET", "/api/stats/quality", _model(QualityStats, "quality stats"), _params(**params)
        )


def _dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError("the answer is not a JSON object", status=200, kind="bad_response")
    return data


def _outcome_of(detail: RunDetail) -> RunOutcome:
    """A run's result as ``POST /api/runs`` gives it, from ``GET /api/runs/{RUN}``."""
    failed = [s.step for s in detail.steps if s.status == "failed"]
    failed_step = failed[-1] if detail.status == "failed" and failed else None
    error = detail.error
    prefix = f"step '{failed_step}' failed: "
    if error is not None and failed_step is not None and error.startswith(prefix):
        error = error[len(prefix) :]
    return RunOutcome(
        run_id=detail.run_id,
        status=detail.status,
        output=detail.output,
        error=error,
        failed_step=failed_step,
        waiting_steps=detail.waiting_steps,
        queue=detail.queue,
    )


def _start_body(
    flow: str,
    inputs: Mapping[str, Any] | None,
    tags: Mapping[str, str] | None,
    **more: Any,
) -> StartRun:
    try:
        return StartRun(flow=flow, inputs=dict(inputs or {}), tags=dict(tags or {}), **more)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ApiError(
            f"POST /api/runs: {'.'.join(map(str, err['loc']))}: {err['msg']}",
            status=None,
            kind="invalid_request_error",
            param=".".join(map(str, err["loc"])),
        ) from None


class _Base:
    """Settings both clients share."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        max_reconnects: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("ERPOZ_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("ERPOZ_API_KEY")
        self._headers = {"User-Agent": "erpoz-client", **(headers or {})}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.timeout = timeout
        self.max_reconnects = max_reconnects

    def _follow_timeout(self, deadline: float | None = None) -> httpx.Timeout:
        read = FOLLOW_READ_TIMEOUT_S
        if deadline is not None:
            read = max(0.05, min(read, deadline - time.monotonic()))
        return httpx.Timeout(self.timeout, read=read)

    def _next_try(self, f: Follower, progressed: bool, failures: int, exc: Exception | None) -> int:
        """After a follow connection ended without the run's end: the count of attempts in a
        row that brought nothing; :class:`ConnectionFailed` past ``max_reconnects``."""
        failures = 0 if progressed else failures + 1
        if failures > self.max_reconnects:
            why = f"{type(exc).__name__}: {exc}" if exc is not None else "the stream kept closing"
            raise ConnectionFailed(
                f"following run {f.run_id}: gave up after {self.max_reconnects} reconnections "
                f"without a new event ({why}); last event {f.after}",
                status=None,
                kind="connection_error",
            ) from exc
        return failures

    @staticmethod
    def _backoff(failures: int) -> float:
        """Seconds before reconnecting: at once after progress, then 0.1 s doubling to 2 s."""
        return 0.0 if failures == 0 else float(min(2.0, 0.1 * 2 ** (failures - 1)))


class Client(_Base):
    """The runs API of an ``erpoz serve`` from synchronous code.

    ``base_url`` defaults to ``$ERPOZ_URL``, else ``http://127.0.0.1:8000``; ``api_key`` to
    ``$ERPOZ_API_KEY`` (sent as ``Authorization: Bearer``). ``timeout`` bounds each request
    (not a run: see :meth:`run` and :meth:`wait`). Following a run reconnects after a dropped
    connection up to ``max_reconnects`` times in a row, from the last event received.
    ``transport`` is handed to httpx (an ``httpx.MockTransport`` or a custom one). Close it
    (or use ``with``) to free its connections."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_reconnects: int = 10,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_reconnects, headers)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: _Call[T], timeout: float | None = None) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                content=call.content(),
                headers={"Content-Type": "application/json"} if call.body is not None else None,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, call.what) from exc
        return call.answer(response)

    # --- the server ------------------------------------------------------------------------
    def health(self) -> Health:
        """``GET /api/health`` (no key needed)."""
        return self._send(_Calls.health())

    def whoami(self) -> WhoAmI:
        """The tenant and key name the server sees."""
        return self._send(_Calls.whoami())

    def flows(self) -> list[FlowInfo]:
        """The flows the server runs, with their inputs and graph."""
        return self._send(_Calls.flows())

    # --- runs --------------------------------------------------------------------------------
    def start(
        self,
        flow: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
        run_id: str | None = None,
    ) -> RunOutcome:
        """Start a run and return at once (``status`` ``running``, or ``queued`` with a queue);
        follow it with :meth:`follow` or :meth:`wait`. With ``run_id``, a run of that id that
        exists is the answer (an idempotent start)."""
        body = _start_body(flow, inputs, tags, wait=False, queue=queue, run_id=run_id)
        return self._send(_Calls.start(body))

    def run(
        self,
        flow: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
        run_id: str | None = None,
    ) -> RunOutcome:
        """Start a run and wait until it succeeds, fails, waits for review or sleeps (its
        outcome, not an error: :meth:`RunOutcome.unwrap` raises for anything but success).
        ``timeout`` (seconds; default: no limit) ends the wait with :class:`WaitTimedOut`, the
        run going on in the server. With ``run_id``, an idempotent start (see :meth:`start`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunk = _WAIT_CHUNK_S if timeout is None else min(_WAIT_CHUNK_S, timeout)
        body = _start_body(flow, inputs, tags, wait=True, timeout_s=chunk, run_id=run_id)
        outcome = self._send(_Calls.start(body), timeout=chunk + self.timeout)
        if outcome.done:
            return outcome
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.wait(outcome.run_id, timeout=left)

    def get(self, run_id: str) -> RunDetail:
        """One run: status, inputs, output, step timeline, waiting steps."""
        return self._send(_Calls.get(run_id))

    def outcome(self, run_id: str) -> RunOutcome:
        """How the run stands, as :meth:`run` answers it (status, output, error, failed or
        waiting steps), read now, without waiting."""
        return _outcome_of(self.get(run_id))

    def runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        q: str | None = None,
    ) -> list[RunInfoOut]:
        """The tenant's runs, newest first."""
        return self._send(_Calls.runs(status, flow, limit, q))

    def events(
        self, run_id: str, *, after: int = 0, kind: str | None = None, limit: int | None = None
    ) -> EventPage:
        """A run's event log after sequence number ``after``."""
        return self._send(_Calls.events(run_id, after, kind, limit))

    def wait(self, run_id: str, *, timeout: float | None = None) -> RunOutcome:
        """Follow a run until it ends its turn (succeeds, fails, is cancelled or waits for
        review) and return how; a run queued for a worker is waited for until one has run
        it. :class:`WaitTimedOut` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            end: EndOfTurn | None = None
            for item in self._follow(Follower(run_id), deadline):
                if isinstance(item, EndOfTurn):
                    end = item
            if end is not None and end.status in _DONE:
                return _outcome_of(self.get(run_id))
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"run {run_id} is still {end.status if end else 'running'} after "
                    f"{timeout} s; it goes on in the server",
                    run_id=run_id,
                )
            time.sleep(0.2)  # queued: no worker has taken it yet

    def follow(self, run_id: str, *, after: int = 0, tokens: bool = False) -> Iterator[FollowItem]:
        """The run's events after ``after`` as they are recorded (:class:`EventOut`), live
        notices (:class:`LiveEvent`), with ``tokens`` the model tokens its steps stream
        (:class:`TokenChunk`), until :class:`EndOfTurn`. A dropped connection is resumed
        from the last event received: no event is lost or repeated (tokens sent while
        disconnected are: they are not in the log)."""
        yield from self._follow(Follower(run_id, after, tokens), None)

    def stream(
        self,
        flow: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[FollowItem]:
        """Start a run and follow it from its first event, tokens included (none is missed:
        the server follows before the run starts), until :class:`EndOfTurn`; then
        :meth:`get` or :meth:`wait` give its outcome. The run id is ``run_id`` of every
        item. Reconnects like :meth:`follow`."""
        body = _start_body(flow, inputs, tags, stream=True)
        follower: Follower | None = None
        try:
            with self._http.stream(
                "POST",
                "/api/runs",
                content=body.model_dump_json(exclude_unset=True).encode(),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                timeout=self._follow_timeout(),
            ) as response:
                if response.status_code >= 400:
                    raise error_from(response, response.read())
                follower = Follower(response.headers.get("x-erpoz-run-id", ""), tokens=True)
                for line in response.iter_lines():
                    item = follower.feed(line)
                    if item is not None:
                        yield item
                        if follower.ended is not None:
                            return
        except httpx.HTTPError as exc:
            if follower is None or not follower.run_id:
                raise transport_error(exc, "POST /api/runs (stream)") from exc
        if follower is not None and follower.ended is None and follower.run_id:
            yield from self._follow(follower, None, reconnect=True)

    def _follow(
        self, f: Follower, deadline: float | None, *, reconnect: bool = False
    ) -> Iterator[FollowItem]:
        failures = 0
        while f.ended is None:
            if deadline is not None and time.monotonic() >= deadline:
                return
            path, params, headers = f.request(reconnect)
            progressed = False
            error: Exception | None = None
            try:
                with self._http.stream(
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=self._follow_timeout(deadline),
                ) as response:
                    if response.status_code >= 400:
                        raise error_from(response, response.read())
                    for line in response.iter_lines():
                        item = f.feed(line)
                        if item is not None:
                            progressed = True
                            yield item
                            if f.ended is not None:
                                return
            except httpx.HTTPError as exc:
                error = exc
            reconnect = True
            failures = self._next_try(f, progressed, failures, error)
            time.sleep(self._backoff(failures))

    def resume(
        self, run_id: str, *, wait: bool = True, timeout_s: float | None = None
    ) -> RunOutcome:
        """Continue a crashed or interrupted run (not one waiting for review: decide it)."""
        return self._send(_Calls.resume(run_id, wait, timeout_s))

    def cancel(self, run_id: str) -> str:
        """Cancel a run: ``cancelled`` at once, or ``requested`` when a process drives it."""
        return self._send(_Calls.cancel(run_id))

    def fork(
        self, run_id: str, from_step: str | None = None, inputs: Mapping[str, Any] | None = None
    ) -> RunOutcome:
        """A new run from ``run_id`` (its parent) with ``inputs`` changed, re-running
        ``from_step`` on and every step that reads a changed input; waits for its outcome."""
        return self._send(_Calls.fork(run_id, from_step, inputs or {}))

    def send(self, run_id: str, topic: str, value: Any) -> int:
        """Send a message to a run (it takes it with ``ctx.recv(topic, …)``); its id."""
        return self._send(_Calls.send(run_id, topic, value))

    def published(self, run_id: str, key: str, timeout_s: float = 0.0) -> Any:
        """An event the run published (``ctx.set_event``), waiting up to ``timeout_s``;
        ``None`` when it is not set."""
        return self._send(_Calls.published(run_id, key, timeout_s))

    def lineage(self, run_id: str, step: str) -> dict[str, Any]:
        """Where a step's output came from (as ``erpoz audit lineage --json``)."""
        return self._send(_Calls.lineage(run_id, step))

    # --- reviews -----------------------------------------------------------------------------
    def reviews(self, run_id: str | None = None) -> list[ReviewItem]:
        """The steps waiting for review (of one run, or the whole queue), oldest first."""
        return self._send(_Calls.reviews(run_id))

    def approve(
        self,
        run_id: str,
        *,
        step: str | None = None,
        reviewer: str | None = None,
        comment: str = "",
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        """Approve the proposal; the run goes on (its outcome when ``wait``)."""
        body = _decision(
            step=step, reviewer=reviewer, comment=comment, wait=wait, timeout_s=timeout_s
        )
        return self._send(_Calls.decide("approve", run_id, body))

    def reject(
        self,
        run_id: str,
        *,
        step: str | None = None,
        reviewer: str | None = None,
        comment: str = "",
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        """Reject the proposal; the step (and the run) fails."""
        body = _decision(
            step=step, reviewer=reviewer, comment=comment, wait=wait, timeout_s=timeout_s
        )
        return self._send(_Calls.decide("reject", run_id, body))

    def edit(
        self,
        run_id: str,
        output: Any,
        *,
        step: str | None = None,
        reviewer: str | None = None,
        comment: str = "",
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        """Replace the proposal with ``output`` (checked against the step's type: 422 naming
        ``output`` when it does not fit, and the run still waits)."""
        body = _decision(
            step=step,
            reviewer=reviewer,
            comment=comment,
            wait=wait,
            timeout_s=timeout_s,
            output=output,
        )
        return self._send(_Calls.decide("edit", run_id, body))

    # --- audit and statistics ----------------------------------------------------------------
    def verify(self, run: str | None = None) -> VerifyReport:
        """Recompute the hash chains of the tenant's runs (or one run)."""
        return self._send(_Calls.verify(run))

    def export(self, since: str | None = None) -> Iterator[dict[str, Any]]:
        """The tenant's audit records (one per event), as ``erpoz audit export`` writes them."""
        try:
            with self._http.stream(
                "GET", "/api/audit/export", params=_params(since=since)
            ) as response:
                if response.status_code >= 400:
                    raise error_from(response, response.read())
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise transport_error(exc, "GET /api/audit/export") from exc

    def model_stats(self, since: str | None = None, *, bucket: str | None = None) -> ModelStats:
        """Per model: calls, errors, tokens, cost, latency (``since``: ``24h``, ``7d`` …)."""
        return self._send(_Calls.model_stats(since, bucket))

    def quality_stats(
        self,
        since: str | None = None,
        *,
        window: int | None = None,
        threshold: float | None = None,
        min_samples: int | None = None,
        by: str | None = None,
        bucket: str | None = None,
    ) -> QualityStats:
        """Guard pass rates per model, step and guard."""
        return self._send(
            _Calls.quality_stats(
                {
                    "since": since,
                    "window": window,
                    "threshold": threshold,
                    "min_samples": min_samples,
                    "by": by,
                    "bucket": bucket,
                }
            )
        )


class AsyncClient(_Base):
    """:class:`Client` for asyncio code: the same methods, awaited (``follow`` and ``stream``
    are async iterators). Use it within one event loop (its connections belong to it)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_reconnects: int = 10,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_reconnects, headers)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call[T], timeout: float | None = None) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                content=call.content(),
                headers={"Content-Type": "application/json"} if call.body is not None else None,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, call.what) from exc
        return call.answer(response)

    async def health(self) -> Health:
        return await self._send(_Calls.health())

    async def whoami(self) -> WhoAmI:
        return await self._send(_Calls.whoami())

    async def flows(self) -> list[FlowInfo]:
        return await self._send(_Calls.flows())

    async def start(
        self,
        flow: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
        run_id: str | None = None,
    ) -> RunOutcome:
        body = _start_body(flow, inputs, tags, wait=False, queue=queue, run_id=run_id)
        return await self._send(_Calls.start(body))

    async def run(
        self,
        flow: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
        run_id: str | None = None,
    ) -> RunOutcome:
        deadline = None if timeout is None else time.monotonic() + timeout
        chunk = _WAIT_CHUNK_S if timeout is None else min(_WAIT_CHUNK_S, timeout)
        body = _start_body(flow, inputs, tags, wait=True, timeout_s=chunk, run_id=run_id)
        outcome = await self._send(_Calls.start(body), timeout=chunk + self.timeout)
        if outcome.done:
            return outcome
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await self.wait(outcome.run_id, timeout=left)

    async def get(self, run_id: str) -> RunDetail:
        return await self._send(_Calls.get(run_id))

    async def outcome(self, run_id: str) -> RunOutcome:
        return _outcome_of(await self.get(run_id))

    async def runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        q: str | None = None,
    ) -> list[RunInfoOut]:
        return await self._send(_Calls.runs(status, flow, limit, q))

    async def events(
        self, run_id: str, *, after: int = 0, kind: str | None = None, limit: int | None = None
    ) -> EventPage:
        return await self._send(_Calls.events(run_id, after, kind, limit))

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunOutcome:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            end: EndOfTurn | None = None
            async for item in self._follow(Follower(run_id), deadline):
                if isinstance(item, EndOfTurn):
                    end = item
            if end is not None and end.status in _DONE:
                return _outcome_of(await self.get(run_id))
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"run {run_id} is still {end.status if end else 'running'} after "
                    f"{timeout} s; it goes on in the server",
                    run_id=run_id,
                )
            await asyncio.sleep(0.2)

    async def follow(
        self, run_id: str, *, after: int = 0, tokens: bool = False
    ) -> AsyncIterator[FollowItem]:
        async for item in self._follow(Follower(run_id, after, tokens), None):
            yield item

    async def stream(
        self,
        flow: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> AsyncIterator[FollowItem]:
        body = _start_body(flow, inputs, tags, stream=True)
        follower: Follower | None = None
        try:
            async with self._http.stream(
                "POST",
                "/api/runs",
                content=body.model_dump_json(exclude_unset=True).encode(),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                timeout=self._follow_timeout(),
            ) as response:
                if response.status_code >= 400:
                    raise error_from(response, await response.aread())
                follower = Follower(response.headers.get("x-erpoz-run-id", ""), tokens=True)
                async for line in response.aiter_lines():
                    item = follower.feed(line)
                    if item is not None:
                        yield item
                        if follower.ended is not None:
                            return
        except httpx.HTTPError as exc:
            if follower is None or not follower.run_id:
                raise transport_error(exc, "POST /api/runs (stream)") from exc
        if follower is not None and follower.ended is None and follower.run_id:
            async for item in self._follow(follower, None, reconnect=True):
                yield item

    async def _follow(
        self, f: Follower, deadline: float | None, *, reconnect: bool = False
    ) -> AsyncIterator[FollowItem]:
        failures = 0
        while f.ended is None:
            if deadline is not None and time.monotonic() >= deadline:
                return
            path, params, headers = f.request(reconnect)
            progressed = False
            error: Exception | None = None
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=self._follow_timeout(deadline),
                ) as response:
                    if response.status_code >= 400:
                        raise error_from(response, await response.aread())
                    async for line in response.aiter_lines():
                        item = f.feed(line)
                        if item is not None:
                            progressed = True
                            yield item
                            if f.ended is not None:
                                return
            except httpx.HTTPError as exc:
                error = exc
            reconnect = True
            failures = self._next_try(f, progressed, failures, error)
            await asyncio.sleep(self._backoff(failures))

    async def resume(
        self, run_id: str, *, wait: bool = True, timeout_s: float | None = None
    ) -> RunOutcome:
        return await self._send(_Calls.resume(run_id, wait, timeout_s))

    async def cancel(self, run_id: str) -> str:
        return await self._send(_Calls.cancel(run_id))

    async def fork(
        self, run_id: str, from_step: str | None = None, inputs: Mapping[str, Any] | None = None
    ) -> RunOutcome:
        return await self._send(_Calls.fork(run_id, from_step, inputs or {}))

    async def send(self, run_id: str, topic: str, value: Any) -> int:
        return await self._send(_Calls.send(run_id, topic, value))

    async def published(self, run_id: str, key: str, timeout_s: float = 0.0) -> Any:
        return await self._send(_Calls.published(run_id, key, timeout_s))

    async def lineage(self, run_id: str, step: str) -> dict[str, Any]:
        return await self._send(_Calls.lineage(run_id, step))

    async def reviews(self, run_id: str | None = None) -> list[ReviewItem]:
        return await self._send(_Calls.reviews(run_id))

    async def approve(
        self,
        run_id: str,
        *,
        step: str | None = None,
        reviewer: str | None = None,
        comment: str = "",
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        body = _decision(
            step=step, reviewer=reviewer, comment=comment, wait=wait, timeout_s=timeout_s
        )
        return await self._send(_Calls.decide("approve", run_id, body))

    async def reject(
        self,
        run_id: str,
        *,
        step: str | None = None,
        reviewer: str | None = None,
        comment: str = "",
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        body = _decision(
            step=step, reviewer=reviewer, comment=comment, wait=wait, timeout_s=timeout_s
        )
        return await self._send(_Calls.decide("reject", run_id, body))

    async def edit(
        self,
        run_id: str,
        output: Any,
        *,
        step: str | None = None,
        reviewer: str | None = None,
        comment: str = "",
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> RunOutcome:
        body = _decision(
            step=step,
            reviewer=reviewer,
            comment=comment,
            wait=wait,
            timeout_s=timeout_s,
            output=output,
        )
        return await self._send(_Calls.decide("edit", run_id, body))

    async def verify(self, run: str | None = None) -> VerifyReport:
        return await self._send(_Calls.verify(run))

    async def export(self, since: str | None = None) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._http.stream(
                "GET", "/api/audit/export", params=_params(since=since)
            ) as response:
                if response.status_code >= 400:
                    raise error_from(response, await response.aread())
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise transport_error(exc, "GET /api/audit/export") from exc

    async def model_stats(
        self, since: str | None = None, *, bucket: str | None = None
    ) -> ModelStats:
        return await self._send(_Calls.model_stats(since, bucket))

    async def quality_stats(
        self,
        since: str | None = None,
        *,
        window: int | None = None,
        threshold: float | None = None,
        min_samples: int | None = None,
        by: str | None = None,
        bucket: str | None = None,
    ) -> QualityStats:
        return await self._send(
            _Calls.quality_stats(
                {
                    "since": since,
                    "window": window,
                    "threshold": threshold,
                    "min_samples": min_samples,
                    "by": by,
                    "bucket": bucket,
                }
            )
        )


__all__ += ["EventOut", "TokenChunk"]
