"""The runs API under ``/api``: start, list, read and follow runs; resume and cancel them; the
review queue; audit verify and export; models, flows and statistics.

Every endpoint but ``/api/health`` needs an API key when keys are configured, and sees only the
caller's tenant: a run belongs to the tenant that started it (its ``tenant`` tag), and another
tenant's run is answered exactly like a run that does not exist (404). Shapes are documented in
``docs/server.md``; errors are ``{"error": {"message", "type"}}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import __version__
from ..engine import Decision, RunResult, pending_reviews, review_items, top_step
from ..errors import ErpozError, FlowError, InvalidOutput, RunClaimed, RunError, StoreError
from ..flow import LOOP, MAP, Plan, type_name
from ..observe.stats import model_stats, parse_since
from ..observe.timeline import timeline
from ..store import TERMINAL, RunInfo
from ..user_json import jsonable
from ._auth import caller_of
from ._scope import TenantView, as_store, event_json, public_source, run_json
from ._state import Caller, ServerState, Token
from .wire import Drive, ForkRun, ReviewDecision, SendMessage, StartRun

# --- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than success: ``{"error": {"message", "type", **extra}}`` with a status."""

    def __init__(self, status: int, message: str, kind: str, **extra: Any) -> None:
        self.status = status
        self.message = message
        self.kind = kind
        self.extra = extra
        super().__init__(message)

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, **self.extra}}
        return JSONResponse(body, status_code=self.status)


def _no_run(ref: str) -> ApiError:
    # the same words whether the run never existed or belongs to another tenant
    return ApiError(404, f"no run {ref!r}", "not_found")


def _store_error(exc: StoreError) -> ApiError:
    if isinstance(exc, RunClaimed):  # another process holds the run: a conflict, not an outage
        return ApiError(409, str(exc), "conflict", owner=exc.owner)
    return ApiError(503, f"the run store is not available: {exc}", "store_error")


def _erpoz_error(exc: BaseException) -> ApiError:
    """An error raised while starting or driving a run, as an answer."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, FlowError):
        return ApiError(422, str(exc), "invalid_request_error")
    if isinstance(exc, RunError):
        return ApiError(409, str(exc), "conflict")
    if isinstance(exc, StoreError):
        return _store_error(exc)
    if isinstance(exc, ErpozError):
        return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error")
    return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error")


# --- request bodies: erpoz.server.wire (shared with the Python client) -------------------------

# --- JSON shapes -----------------------------------------------------------------------------


_KIND = {MAP: "map", LOOP: "loop"}


def flow_json(name: str, plan: Plan) -> dict[str, Any]:
    """An exposed flow: its inputs and its graph (nodes and edges between steps)."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    for n in plan.nodes:
        nodes.append(
            {
                "id": n.id,
                "kind": "flow" if n.sub is not None else _KIND.get(n.kind, "task"),
                "label": n.label or n.id,
                "ref": n.spec.ref if n.spec is not None else None,
                "review": n.review,
                "cache": n.cache,
                "retries": max(0, n.retry.attempts - 1),
                "timeout_s": n.timeout,
                "output_type": type_name(n.out_type),
                "deps": [plan.nodes[d].id for d in n.deps],
                "delivery": n.id in plan.delivery,
            }
        )
        edges.extend({"from": plan.nodes[d].id, "to": n.id} for d in n.deps)
    return {
        "name": name,
        "source": public_source(plan.source),
        "fingerprint": plan.fingerprint,
        "inputs": [
            {
                "name": i.name,
                "type": type_name(i.type),
                "required": i.required,
                "default": None if i.required else jsonable(i.default),
            }
            for i in plan.inputs
        ],
        "output_type": type_name(plan.output_type),
        "graph": {"nodes": nodes, "edges": edges},
    }


_ROUTER_TYPES = {
    "FallbackRouter": "fallback",
    "CascadeRouter": "cascade",
    "CheapestCapableRouter": "cheapest",
    "LoadBalanceRouter": "balance",
    "SemanticRouter": "semantic",
    "ClassifierRouter": "learned",
}


def models_json(hub: Any) -> dict[str, Any]:
    models, routers = [], []
    for name in hub.names():
        spec = hub.specs.get(name)
        if spec is not None:
            models.append(
                {
                    "name": name,
                    "kind": spec.kind,
                    "provider": spec.provider,
                    "price_in": spec.price_in,
                    "price_out": spec.price_out,
                    "context_window": spec.context_window,
                    "modalities": sorted(spec.modalities),
                    "tags": sorted(spec.tags),
                }
            )
            continue
        model = hub.get(name)
        cls = type(model).__name__
        members = [getattr(m, "name", str(m)) for m in getattr(model, "models", ())]
        routers.append(
            {
                "name": name,
                "kind": "router",
                "type": _ROUTER_TYPES.get(cls, cls),
                "members": members,
            }
        )
    budget = getattr(hub, "budget", None)
    return {
        "models": models,
        "routers": routers,
        "budget": None
        if budget is None
        else {
            "per_run_usd": getattr(budget, "per_run_usd", None),
            "per_project_usd": getattr(budget, "per_project_usd", None),
        },
    }


# --- statistics ------------------------------------------------------------------------------

_MAX_RUNS = 100_000
_MAX_BUCKETS = 5_000


def _since(text: str | None, what: str = "since") -> float | None:
    """``24h`` / ``7d`` … (a span back from now) or epoch seconds; ``None`` for all time."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            return time.time() - parse_since(text)
        except ValueError:
            raise ApiError(
                422,
                f"{what}: write a span like 30m, 24h or 7d, or epoch seconds (got {text!r})",
                "invalid_request_error",
                param=what,
            ) from None
    if not math.isfinite(value):
        raise ApiError(422, f"{what}: not a finite number", "invalid_request_error", param=what)
    return value


def _bucket(text: str | None, cutoff: float | None, first: float | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        size = parse_since(text)
    except ValueError:
        raise ApiError(
            422,
            f"bucket: write a span like 5m, 1h or 1d (got {text!r})",
            "invalid_request_error",
            param="bucket",
        ) from None
    start = cutoff if cutoff is not None else first
    if size <= 0 or (start is not None and (time.time() - start) / size > _MAX_BUCKETS):
        raise ApiError(
            422,
            f"bucket: {text!r} makes more than {_MAX_BUCKETS} buckets; choose a longer one "
            "or a shorter since",
            "invalid_request_error",
            param="bucket",
        )
    return size


async def _runs_since(view: TenantView, cutoff: float | None) -> list[RunInfo]:
    runs = await view.list_runs(limit=_MAX_RUNS)
    return [r for r in runs if cutoff is None or r.updated >= cutoff]


# --- following -------------------------------------------------------------------------------
TERMINAL_KINDS = frozenset({"run_succeeded", "run_failed", "run_cancelled"})
_STATUS = {"run_succeeded": "succeeded", "run_failed": "failed", "run_cancelled": "cancelled"}
_POLL_S = 0.5  # look at the store this often too: runs driven by other processes


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, default=str)
    return f"{head}event: {event}\ndata: {body}\n\n"


async def follow_run(
    state: ServerState,
    run_id: str,
    after: int,
    *,
    tokens: bool = False,
    queue: asyncio.Queue[tuple[Any, ...]] | None = None,
    starting: asyncio.Task[Any] | None = None,
) -> AsyncIterator[str]:
    """Server-sent events of one run: the recorded events after ``after`` (``event: event``,
    ``id`` = sequence number), then each new one as it is recorded, until the run ends or
    waits (``event: end``). ``event: live`` tells of an event the moment it is appended, before
    it is durable (progress); the same event follows as ``event: event``. With ``tokens``,
    ``event: token`` carries each piece of model output a step streams. A comment line
    (``: ping``) goes out after ``state.ping_s`` of silence.

    ``queue`` is a follower's queue of the bus made before the run started (so that no token
    is missed) and ``starting`` the task starting it: until the run is recorded, its absence
    from the store does not end the stream."""
    store = state.store
    q = queue if queue is not None else state.bus.follow(run_id, tokens=tokens)
    last_sent = time.monotonic()
    delivery: frozenset[str] | None = None
    try:
        yield ": following run " + run_id + "\n\n"
        while True:
            events = await store.events(run_id, after)
            for e in events:
                yield _sse("event", event_json(e), e.seq)
                after = e.seq
                last_sent = time.monotonic()
                if e.kind in TERMINAL_KINDS:
                    yield _sse("end", {"run_id": run_id, "status": _STATUS[e.kind]})
                    return
            info = await store.get_run(run_id)
            if info is None:
                if starting is None or starting.done():
                    return
            elif info.status != "running" and after >= info.head_seq:
                # waiting, or final with every event sent: this turn of the run is over
                yield _sse("end", {"run_id": run_id, "status": info.status})
                return
            elif tokens and delivery is None:
                plan = state.flows.get(info.flow)
                if plan is not None and plan.fingerprint == info.fingerprint:
                    delivery = plan.delivery
            try:
                async with asyncio.timeout(_POLL_S):  # no task per wait, unlike wait_for
                    item = await q.get()
            except TimeoutError:
                if time.monotonic() - last_sent >= state.ping_s:
                    yield ": ping\n\n"
                    last_sent = time.monotonic()
                continue
            items = [item]
            while not q.empty():
                items.append(q.get_nowait())
            for it in items:
                yield _live(it, delivery)
            last_sent = time.monotonic()
    finally:
        state.bus.unfollow(q, run_id)


def _live(item: tuple[Any, ...], delivery: frozenset[str] | None) -> str:
    """A bus item as a server-sent event: ``token`` for a streamed token, else ``live``."""
    if isinstance(item, Token):
        return _sse(
            "token",
            {
                "run_id": item.run_id,
                "step": item.step,
                "attempt": item.attempt,
                "text": item.text,
                "delivery": None if delivery is None else top_step(item.step) in delivery,
            },
        )
    rid, kind, step, attempt, data = item
    return _sse(
        "live", {"run_id": rid, "kind": kind, "step": step, "attempt": attempt, "data": data}
    )


def _event_stream(
    body: AsyncIterator[str], headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )


#: the header that names the run a streamed start answers about (as the gateway's)
RUN_HEADER = "x-erpoz-run-id"

# --- the router ------------------------------------------------------------------------------

RunId = Annotated[str, Path(min_length=1, max_length=200, description="A run id or unique prefix")]
#: a span back from now (``30m``, ``24h``, ``7d``: s, m, h, d, w) or epoch seconds
Since = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=r"^\s*(\d+(\.\d+)?\s*[smhdw]?)?\s*$",
        description="A span back from now (30m, 24h, 7d; units s m h d w) or epoch seconds",
    ),
]
#: the width of a series' buckets (``5m``, ``1h``, ``1d``)
Bucket = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=r"^\s*(\d+(\.\d+)?\s*[smhdw])?\s*$",
        description="The width of a series' buckets: 5m, 1h, 1d (units s m h d w)",
    ),
]
Status = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
CallerDep = Annotated[Caller, Depends(caller_of)]


class _Api:
    """What the endpoints share: the server's state, the caller's view of the store, and the
    ways to find a run and to drive one."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def view(self, caller: Caller) -> TenantView:
        return TenantView(self.state.store, caller.tenant)

    async def find(self, v: TenantView, ref: str) -> RunInfo:
        try:
            info = await v.get_run(ref)
        except StoreError as exc:
            raise _store_error(exc) from exc
        if info is None:
            raise _no_run(ref)
        return info

    async def drive(
        self,
        run_id: str,
        make: Callable[[], Awaitable[RunResult]],
        wait: bool,
        timeout_s: float | None,
        *,
        new: bool,
    ) -> Response:
        """Drive a run in a task of its own; answer with its result when it ends its turn in
        time (200), else at once with 202 (the run goes on)."""
        if self.state.driving(run_id):
            raise ApiError(409, f"run {run_id} is being run by this server now", "conflict")

        async def go() -> RunResult:
            return await make()

        task = self.state.spawn(run_id, go())
        if wait:
            await asyncio.wait({task}, timeout=timeout_s)
        else:
            # let it record the run before answering, so GET /api/runs/{id} finds it
            for _ in range(50):
                if task.done() or (not new or await self.state.store.get_run(run_id) is not None):
                    break
                await asyncio.sleep(0)
        if task.done():
            exc = task.exception() if not task.cancelled() else RunError("cancelled")
            if exc is not None:
                raise _erpoz_error(exc)
            result = task.result()
            if wait:
                return JSONResponse(result.to_json())
            return JSONResponse(
                {"run_id": run_id, "status": result.status},
                status_code=202,
                headers={"Location": f"/api/runs/{run_id}"},
            )
        return JSONResponse(
            {"run_id": run_id, "status": "running"},
            status_code=202,
            headers={"Location": f"/api/runs/{run_id}"},
        )

    def streamed(self, run_id: str, make: Callable[[], Coroutine[Any, Any, RunResult]]) -> Response:
        """Start a run in a task of its own and answer with its events as they are recorded
        and the tokens its steps stream (server-sent events, as GET .../follow?tokens=true),
        following from before it starts so that no token is missed."""
        q = self.state.bus.follow(run_id, tokens=True)
        task = self.state.spawn(run_id, make())

        async def events() -> AsyncIterator[str]:
            async for chunk in follow_run(
                self.state, run_id, 0, tokens=True, queue=q, starting=task
            ):
                yield chunk
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                err = _erpoz_error(exc)
                yield _sse("error", {"error": {"message": err.message, "type": err.kind}})

        return _event_stream(events(), {RUN_HEADER: run_id, "Location": f"/api/runs/{run_id}"})


def _api(request: Request) -> _Api:
    return _Api(request.app.state.erpoz)


ApiDep = Annotated[_Api, Depends(_api)]


_runs = APIRouter()
_reviews = APIRouter()
_audit = APIRouter()
_info = APIRouter()


def router() -> APIRouter:
    """The runs API: runs, reviews, audit, then models, flows and statistics."""
    api = APIRouter(prefix="/api", tags=["runs API"])
    for part in (_runs, _reviews, _audit, _info):
        api.include_router(part)
    return api


# --- runs ---------------------------------------------------------------------------------
@_runs.post("/runs", summary="Start a run of an exposed flow")
async def start_run(a: ApiDep, body: StartRun, caller: CallerDep) -> Response:
    from ..engine import new_run_id

    plan = a.state.flows.get(body.flow)
    if plan is None:
        names = sorted(a.state.flows)
        raise ApiError(
            404,
            f"no flow {body.flow!r} (flows: {', '.join(names) or 'none exposed'})",
            "not_found",
            flows=names,
        )
    if body.tags.get("tenant", caller.tenant) != caller.tenant:
        raise ApiError(
            422,
            "tags.tenant: the tenant is the API key's; leave it out",
            "invalid_request_error",
            param="tags.tenant",
        )
    try:
        plan.bind_inputs(body.inputs)
    except FlowError as exc:
        raise ApiError(422, str(exc), "invalid_request_error", param="inputs") from None
    except Exception as exc:  # a validator choking on odd input is still bad input
        raise ApiError(
            422, f"inputs: {type(exc).__name__}: {exc}", "invalid_request_error"
        ) from None
    tags = {**body.tags, "tenant": caller.tenant}
    run_id = body.run_id or new_run_id()
    if body.run_id is not None:
        again = await _started_before(a, body, plan, tags, caller)
        if again is not None:
            return again
    if body.stream:
        if body.queue is not None:
            raise ApiError(
                422,
                "stream: a queued run is driven by a worker, whose tokens do not reach this "
                "server; follow it with GET /api/runs/RUN/follow",
                "invalid_request_error",
                param="stream",
            )
        return a.streamed(
            run_id, lambda: a.state.engine.run(plan, body.inputs, run_id=run_id, tags=tags)
        )
    if body.queue is not None:
        try:
            await a.state.engine.submit(
                plan, body.inputs, queue=body.queue, run_id=run_id, tags=tags
            )
        except RunError as exc:  # a queue name that is not one
            raise ApiError(422, str(exc), "invalid_request_error", param="queue") from None
        except (FlowError, StoreError) as exc:
            raise _erpoz_error(exc) from exc
        return JSONResponse(
            {"run_id": run_id, "status": "queued", "queue": body.queue},
            status_code=202,
            headers={"Location": f"/api/runs/{run_id}"},
        )
    return await a.drive(
        run_id,
        lambda: a.state.engine.run(plan, body.inputs, run_id=run_id, tags=tags),
        body.wait,
        body.timeout_s,
        new=True,
    )


async def _started_before(
    a: _Api, body: StartRun, plan: Plan, tags: dict[str, str], caller: Caller
) -> Response | None:
    """A start that names an existing run (an idempotent start): that run as it stands, or
    ``None`` when there is none yet. Another tenant's run id is simply taken."""
    assert body.run_id is not None
    taken = await a.state.store.get_run(body.run_id)
    if taken is None or taken.run_id != body.run_id:
        return None
    if taken.tenant != caller.tenant:  # says nothing of another tenant's run
        raise ApiError(409, f"run id {body.run_id!r} is taken", "conflict")
    if a.state.driving(body.run_id):
        return JSONResponse(
            {"run_id": body.run_id, "status": "running"},
            status_code=202,
            headers={"Location": f"/api/runs/{body.run_id}"},
        )
    if body.queue is None:
        return None  # the engine answers with the run (its result once finished)
    try:  # submitted before: the same run, as it stands
        await a.state.engine.submit(
            plan, body.inputs, queue=body.queue, run_id=body.run_id, tags=tags
        )
    except (RunError, FlowError, StoreError) as exc:
        raise _erpoz_error(exc) from exc
    return JSONResponse({"run_id": body.run_id, "status": taken.status, "queue": taken.queue})


@_runs.get("/runs", summary="List the tenant's runs, newest first")
async def list_runs(
    a: ApiDep,
    caller: CallerDep,
    status: Status | None = None,
    flow: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    q: Annotated[str | None, Query(max_length=200, description="In run id, flow or error")] = None,
) -> dict[str, Any]:
    v = a.view(caller)
    needle = (q or "").strip().lower()
    try:
        infos = await v.list_runs(
            status=status, flow=flow or None, limit=_MAX_RUNS if needle else limit
        )
    except StoreError as exc:
        raise _store_error(exc) from exc
    if needle:
        infos = [
            i
            for i in infos
            if needle in i.run_id.lower()
            or needle in i.flow.lower()
            or needle in (i.error or "").lower()
        ][:limit]
    return {"runs": [run_json(i) for i in infos]}


@_runs.get("/runs/{run_id}", summary="One run: status, inputs, output, step timeline")
async def get_run(a: ApiDep, run_id: RunId, caller: CallerDep) -> dict[str, Any]:
    v = a.view(caller)
    found = await a.find(v, run_id)
    try:  # the run and its events in one snapshot
        info, events = await v.run_with_events(found.run_id)
    except StoreError as exc:
        raise _store_error(exc) from exc
    if info is None:
        raise _no_run(run_id)
    return {
        **run_json(info),
        "steps": timeline(events),
        "waiting_steps": list(pending_reviews(events)),
        "driven_here": a.state.driving(info.run_id),
    }


@_runs.get("/runs/{run_id}/events", summary="A run's event log")
async def run_events(
    a: ApiDep,
    run_id: RunId,
    caller: CallerDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> dict[str, Any]:
    v = a.view(caller)
    info = await a.find(v, run_id)
    events = await v.events(info.run_id, after)
    if kind:
        events = [e for e in events if e.kind == kind]
    more = limit is not None and len(events) > limit
    if more:
        events = events[:limit]
    return {
        "run_id": info.run_id,
        "status": info.status,
        "events": [event_json(e) for e in events],
        "more": more,
    }


@_runs.get(
    "/runs/{run_id}/follow",
    summary="Follow a run live (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def follow(
    a: ApiDep,
    run_id: RunId,
    caller: CallerDep,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    tokens: Annotated[
        bool, Query(description="Also the model tokens its steps stream (event: token).")
    ] = False,
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> StreamingResponse:
    info = await a.find(a.view(caller), run_id)
    start = after
    if start is None and last_event_id is not None and last_event_id.strip().isdigit():
        start = int(last_event_id.strip())
    return _event_stream(follow_run(a.state, info.run_id, start or 0, tokens=tokens))


@_runs.post("/runs/{run_id}/resume", summary="Continue a crashed or interrupted run")
async def resume(
    a: ApiDep, run_id: RunId, caller: CallerDep, body: Drive | None = None
) -> Response:
    body = body or Drive()
    v = a.view(caller)
    info = await a.find(v, run_id)
    if info.status in TERMINAL:
        raise ApiError(409, f"run {info.run_id} already {info.status}", "conflict")
    if pending_reviews(await v.events(info.run_id)):
        raise ApiError(
            409,
            f"run {info.run_id} is waiting for review; decide with POST "
            f"/api/reviews/{info.run_id}/approve, /reject or /edit",
            "conflict",
        )
    plan = _plan_of(a.state, info)
    return await a.drive(
        info.run_id,
        lambda: a.state.engine.resume(info.run_id, plan),
        body.wait,
        body.timeout_s,
        new=False,
    )


@_runs.post("/runs/{run_id}/fork", summary="Fork a run: other inputs, or again from a step")
async def fork(a: ApiDep, run_id: RunId, body: ForkRun, caller: CallerDep) -> Response:
    from ..engine import new_run_id

    info = await a.find(a.view(caller), run_id)
    plan = _plan_of(a.state, info)
    new_id = new_run_id()

    async def go() -> RunResult:
        return await a.state.engine.fork(
            info.run_id,
            body.from_step,
            inputs=body.inputs,
            flow=plan,
            tags={"tenant": caller.tenant},
            run_id=new_id,
        )

    return await a.drive(new_id, go, body.wait, body.timeout_s, new=True)


@_runs.post("/runs/{run_id}/messages", summary="Send a message to a run (ctx.recv)")
async def send_message(
    a: ApiDep, run_id: RunId, body: SendMessage, caller: CallerDep
) -> dict[str, Any]:
    info = await a.find(a.view(caller), run_id)
    try:
        message_id = await a.state.engine.send(info.run_id, body.topic, body.value)
    except RunError as exc:
        if "already" in str(exc):  # the run has ended: nothing would read it
            raise ApiError(409, str(exc), "conflict") from None
        raise ApiError(422, str(exc), "invalid_request_error") from None
    except StoreError as exc:
        raise _store_error(exc) from exc
    return {"run_id": info.run_id, "topic": body.topic, "message_id": message_id}


@_runs.get("/runs/{run_id}/published/{key}", summary="An event a run published (set_event)")
async def published(
    a: ApiDep,
    run_id: RunId,
    key: Annotated[str, Path(min_length=1, max_length=200)],
    caller: CallerDep,
    timeout_s: Annotated[float, Query(ge=0, le=300)] = 0.0,
) -> dict[str, Any]:
    info = await a.find(a.view(caller), run_id)
    try:
        value = await a.state.engine.get_event(info.run_id, key, timeout=timeout_s)
    except StoreError as exc:
        raise _store_error(exc) from exc
    return {"run_id": info.run_id, "key": key, "set": value is not None, "value": value}


@_runs.post("/runs/{run_id}/cancel", summary="Cancel a run")
async def cancel(a: ApiDep, run_id: RunId, caller: CallerDep) -> dict[str, Any]:
    info = await a.find(a.view(caller), run_id)
    try:
        outcome = await a.state.engine.cancel(info.run_id)
    except (RunError, StoreError) as exc:
        raise _erpoz_error(exc) from None
    return {"run_id": info.run_id, "cancel": outcome}


@_runs.get("/runs/{run_id}/lineage/{step}", summary="Where a step's output came from")
async def run_lineage(
    a: ApiDep,
    run_id: RunId,
    step: Annotated[str, Path(min_length=1, max_length=500)],
    caller: CallerDep,
) -> dict[str, Any]:
    from ..audit import UnknownStep, lineage

    v = a.view(caller)
    info = await a.find(v, run_id)
    try:
        plan = a.state.flows.get(info.flow)
        same = plan is not None and plan.fingerprint == info.fingerprint
        # the exposed flow when it is the one that ran, else the source the run recorded
        lin = await lineage(as_store(v), info.run_id, step, flow=plan if same else None)
    except UnknownStep as exc:
        raise ApiError(404, str(exc), "not_found", steps=list(exc.steps)) from None
    except RunError as exc:
        raise _no_run(run_id) from exc
    return {**lin.to_json(), "source": public_source(lin.source)}


@_runs.get("/runs/{run_id}/version", summary="The flow version a run started on, and goes on on")
async def run_version(a: ApiDep, run_id: RunId, caller: CallerDep) -> dict[str, Any]:
    """The fingerprint, version and patches the run started with, the plans it was resumed on,
    and the plan this server would resume it on now (``goes_on``), or why it cannot."""
    from ..engine import version_report

    v = a.view(caller)
    found = await a.find(v, run_id)
    try:
        info, events = await v.run_with_events(found.run_id)
    except StoreError as exc:
        raise _store_error(exc) from exc
    if info is None:
        raise _no_run(run_id)
    plan, why = _code_plan(a.state, info)
    report = version_report(info.run_id, events, plan)
    if plan is None:
        report["goes_on"] = {"plan": None, "error": why}
    return {**report, "flow": info.flow, "source": public_source(info.source)}


def _code_plan(state: ServerState, info: RunInfo) -> tuple[Plan | None, str]:
    """The plan this server would resume ``info`` with: the exposed flow of its name when it is
    the one the run started on, else the source the run recorded, loaded (as a resume does)."""
    from ..flow import load_flow

    try:
        plan = _plan_of(state, info)
        if plan is None and info.source:
            plan = load_flow(info.source).compile()
    except ApiError as exc:
        return None, exc.message
    except (ErpozError, OSError) as exc:
        return None, f"cannot load the flow the run recorded: {exc}"
    return plan, ""


# --- reviews ------------------------------------------------------------------------------
@_reviews.get("/reviews", summary="The steps waiting for review, oldest first")
async def reviews(a: ApiDep, caller: CallerDep) -> dict[str, Any]:
    v = a.view(caller)
    items: list[dict[str, Any]] = []
    for info in await v.list_runs(status="waiting", limit=_MAX_RUNS):
        items.extend(review_items(info, await v.events(info.run_id)))
    items.sort(key=lambda i: i["requested_at"])
    return {"reviews": items}


@_reviews.get("/reviews/{run_id}", summary="What a waiting run asks its reviewers")
async def run_reviews(a: ApiDep, run_id: RunId, caller: CallerDep) -> dict[str, Any]:
    v = a.view(caller)
    info = await a.find(v, run_id)
    return {
        "run_id": info.run_id,
        "status": info.status,
        "reviews": review_items(info, await v.events(info.run_id)),
    }


async def decide(
    a: _Api, action: str, run_id: str, body: ReviewDecision, caller: Caller
) -> Response:
    v = a.view(caller)
    info = await a.find(v, run_id)
    if action == "edit" and "output" not in body.model_fields_set:
        raise ApiError(
            422,
            "body.output: the corrected output is required to edit",
            "invalid_request_error",
            param="output",
        )
    waiting = pending_reviews(await v.events(info.run_id))
    if not waiting:
        raise ApiError(409, f"run {info.run_id} has no step waiting for review", "conflict")
    if body.step is not None and body.step not in waiting:
        raise ApiError(
            422,
            f"step: {body.step!r} is not waiting for review (waiting: {', '.join(waiting)})",
            "invalid_request_error",
            param="step",
        )
    if body.step is None and len(waiting) > 1:
        raise ApiError(
            422,
            f"step: several steps wait for review ({', '.join(waiting)}); name one",
            "invalid_request_error",
            param="step",
        )
    decision = Decision(
        action,
        output=body.output if action == "edit" else None,
        reviewer=(body.reviewer or "").strip() or caller.name,
        comment=body.comment,
        step=body.step,
    )
    plan = _plan_of(a.state, info)

    async def resume() -> RunResult:
        try:
            return await a.state.engine.resume(info.run_id, plan, decision=decision)
        except InvalidOutput as exc:
            raise ApiError(422, f"output: {exc}", "invalid_request_error", param="output") from None

    return await a.drive(info.run_id, resume, body.wait, body.timeout_s, new=False)


@_reviews.post("/reviews/{run_id}/approve", summary="Approve the proposal; the run goes on")
async def approve(
    a: ApiDep, run_id: RunId, caller: CallerDep, body: ReviewDecision | None = None
) -> Response:
    return await decide(a, "approve", run_id, body or ReviewDecision(), caller)


@_reviews.post("/reviews/{run_id}/reject", summary="Reject the proposal; the run fails")
async def reject(
    a: ApiDep, run_id: RunId, caller: CallerDep, body: ReviewDecision | None = None
) -> Response:
    return await decide(a, "reject", run_id, body or ReviewDecision(), caller)


@_reviews.post("/reviews/{run_id}/edit", summary="Replace the proposal with a corrected output")
async def edit(a: ApiDep, run_id: RunId, body: ReviewDecision, caller: CallerDep) -> Response:
    return await decide(a, "edit", run_id, body, caller)


# --- audit --------------------------------------------------------------------------------
@_audit.get("/audit/verify", summary="Recompute the hash chains of the tenant's runs")
async def audit_verify(
    a: ApiDep,
    caller: CallerDep,
    run: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> dict[str, Any]:
    from ..audit import verify

    v = a.view(caller)
    run_id = (await a.find(v, run)).run_id if run is not None else None
    report = await verify(as_store(v), run_id)
    return {"run": run_id, **report.to_json()}


@_audit.get(
    "/audit/export",
    summary="The tenant's audit records as JSON lines",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def audit_export(
    a: ApiDep,
    caller: CallerDep,
    since: Since = None,
) -> StreamingResponse:
    from ..audit import export

    cutoff = _since(since) or 0.0
    records = await export(as_store(a.view(caller)), since=cutoff)

    async def lines() -> AsyncIterator[str]:
        for record in records:
            yield json.dumps(record, ensure_ascii=False, default=str) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# --- models, flows, statistics ------------------------------------------------------------
@_info.get("/models", summary="The models and routers of the project")
async def models(a: ApiDep, caller: CallerDep) -> dict[str, Any]:
    return models_json(a.state.hub())


@_info.get("/limits", summary="Every limit, with its use now: models, queues, slots")
async def limits(a: ApiDep, caller: CallerDep) -> dict[str, Any]:
    """The project's model limits (erpoz.yaml) and every limit the store keeps (workers'
    ``--rate`` and ``--max-running``), each with what it allows, its use in its window now and
    its room. Limits are shared by every tenant: each sees them all."""
    from ..models import limits_overview

    try:
        rows = await limits_overview(a.state.store, getattr(a.state.hub(), "specs", {}))
    except StoreError as exc:
        raise _store_error(exc) from exc
    return {"limits": rows}


@_info.get("/flows", summary="The flows this server runs, with inputs and graph")
async def flows(a: ApiDep, caller: CallerDep) -> dict[str, Any]:
    return {"flows": [flow_json(name, plan) for name, plan in sorted(a.state.flows.items())]}


@_info.get("/stats/models", summary="Per model: calls, errors, tokens, cost, latency")
async def stats_models(
    a: ApiDep,
    caller: CallerDep,
    since: Since = None,
    bucket: Bucket = None,
) -> dict[str, Any]:

    cutoff = _since(since)
    v = a.view(caller)
    runs = await _runs_since(v, cutoff)
    found: list[tuple[float, Mapping[str, Any]]] = []
    for info in runs:
        for e in await v.events(info.run_id):
            if e.kind == "model_called" and (cutoff is None or e.ts >= cutoff):
                found.append((e.ts, e.data))
    out: dict[str, Any] = {
        "since": since,
        "cutoff_ts": cutoff,
        "runs": len(runs),
        "models": model_stats([d for _, d in found]),
    }
    size = _bucket(bucket, cutoff, min((t for t, _ in found), default=None))
    if size is not None:
        groups: dict[float, list[Mapping[str, Any]]] = {}
        for ts, d in found:
            groups.setdefault(math.floor(ts / size) * size, []).append(d)
        out["bucket_s"] = size
        out["series"] = [
            {"ts": ts, **row} for ts in sorted(groups) for row in model_stats(groups[ts])
        ]
    return out


@_info.get("/stats/quality", summary="Guard pass rates per model, step and guard")
async def stats_quality(
    a: ApiDep,
    caller: CallerDep,
    since: Since = None,
    window: Annotated[int, Query(ge=1, le=100_000)] = 50,
    threshold: Annotated[float, Query(ge=0.0, le=1.0)] = 0.8,
    min_samples: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    by: Annotated[str, Query(max_length=40)] = "model,step,guard",
    bucket: Bucket = None,
) -> dict[str, Any]:
    from ..observe import DIMENSIONS, guard_checks, quality_events, quality_stats

    dims = tuple(d.strip() for d in by.split(",") if d.strip())
    if not dims or any(d not in DIMENSIONS for d in dims):
        raise ApiError(
            422,
            f"by: choose from {', '.join(DIMENSIONS)} (comma-separated), not {by!r}",
            "invalid_request_error",
            param="by",
        )
    cutoff = _since(since)
    by_run = await quality_events(as_store(a.view(caller)), since=cutoff, max_runs=_MAX_RUNS)
    report = quality_stats(
        by_run, window=window, threshold=threshold, min_samples=min_samples, by=dims
    )
    out: dict[str, Any] = {"since": since, "cutoff_ts": cutoff, **report.to_json()}
    checks = [c for evs in by_run.values() for c in guard_checks(evs)]
    size = _bucket(bucket, cutoff, min((c.ts for c in checks), default=None))
    if size is not None:
        acc: dict[tuple[Any, ...], list[int]] = {}
        for c in checks:
            key = (
                math.floor(c.ts / size) * size,
                *(getattr(c, d) if d in dims else None for d in DIMENSIONS),
            )
            tally = acc.setdefault(key, [0, 0])
            tally[0] += 1
            tally[1] += c.passed
        out["bucket_s"] = size
        out["series"] = [
            {
                "ts": key[0],
                **dict(zip(DIMENSIONS, key[1:], strict=True)),
                "checks": n,
                "passes": p,
                "pass_rate": round(p / n, 4),
            }
            for key, (n, p) in sorted(
                acc.items(), key=lambda kv: (kv[0][0], *(str(x or "") for x in kv[0][1:]))
            )
        ]
    return out


@_info.get("/whoami", summary="The tenant (and key name) of the presented key")
async def whoami(a: ApiDep, caller: CallerDep) -> dict[str, Any]:
    return {"tenant": caller.tenant, "name": caller.name, "auth": a.state.tenants is not None}


@_info.get("/health", summary="Is the server up (no key needed)")
async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


def _plan_of(state: ServerState, info: RunInfo) -> Plan | None:
    """The exposed flow a run was started from (when the server has it), else ``None``: the
    engine then loads the flow from the source the run recorded."""
    plan = state.flows.get(info.flow)
    if plan is not None and plan.fingerprint == info.fingerprint:
        return plan
    if info.source:
        return None
    if plan is not None:
        return plan  # no source to load: the exposed flow is the only way to go on
    raise ApiError(
        409,
        f"run {info.run_id} was started from flow {info.flow!r}, which this server does not "
        "expose and which recorded no source to load it from",
        "conflict",
    )
