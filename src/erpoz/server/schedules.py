"""The schedules API under ``/api/schedules``: cron-style schedules that start runs of an
exposed flow, fired once per tick by the workers (``erpoz worker``) that share the store.

Schedules belong to the project, not to a tenant: with API keys configured these endpoints
answer 403 (manage schedules with ``erpoz schedule`` then). Shapes are in ``docs/server.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..engine import (
    CATCHUP,
    Schedule,
    add_schedule,
    pause_schedule,
    schedule_to_json,
    tick_to_json,
)
from ..errors import ConfigError, FlowError, StoreError
from ..store import ScheduleBook
from ._auth import caller_of
from ._state import Caller, ServerState
from .api import ApiError

Name = Path(min_length=1, max_length=64, description="The schedule's name.")


class NewSchedule(BaseModel):
    """``POST /api/schedules``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    flow: str = Field(min_length=1, max_length=200, description="An exposed flow's name.")
    cron: str = Field(
        min_length=1,
        max_length=200,
        description="5 fields (minute hour day month weekday), or 6 with seconds last.",
    )
    inputs: dict[str, Any] = Field(default_factory=dict)
    queue: str = Field("default", min_length=1, max_length=64)
    catchup: str = Field("latest", description=f"After downtime: {', '.join(CATCHUP)}.")
    timezone: str = Field("UTC", min_length=1, max_length=64)
    replace: bool = Field(False, description="Change the schedule of that name if there is one.")


def _schedule_book(state: ServerState) -> Callable[..., ScheduleBook]:
    """The dependency of every endpoint: the store's schedules, for the project only."""

    def book(caller: Caller = Depends(caller_of)) -> ScheduleBook:
        if state.tenants is not None:
            raise ApiError(
                403,
                "schedules belong to the project, not to a tenant: manage them with "
                "`erpoz schedule` on a host that reaches the store",
                "permission_denied",
            )
        if not isinstance(state.store, ScheduleBook):
            raise ApiError(501, f"the store {state.store.url} keeps no schedules", "store_error")
        return state.store

    return book


async def _one(b: ScheduleBook, name: str) -> Any:
    rows = await b.list_schedules([name])
    if not rows:
        raise ApiError(404, f"no schedule {name!r}", "not_found")
    return rows[0]


async def _create(state: ServerState, body: NewSchedule) -> JSONResponse:
    plan = state.flows.get(body.flow)
    if plan is None:
        names = sorted(state.flows)
        raise ApiError(
            404,
            f"no flow {body.flow!r} (flows: {', '.join(names) or 'none exposed'})",
            "not_found",
            flows=names,
        )
    spec = Schedule(
        body.name,
        body.flow,
        body.cron,
        body.inputs,
        queue=body.queue,
        catchup=body.catchup,
        timezone=body.timezone,
    )
    try:
        row = await add_schedule(state.store, spec, origin="api", replace=body.replace, plan=plan)
    except (ConfigError, FlowError) as exc:
        status = 409 if "exists" in str(exc) and not body.replace else 422
        raise ApiError(status, str(exc), "invalid_request_error") from exc
    return JSONResponse(
        schedule_to_json(row),
        status_code=201,
        headers={"Location": f"/api/schedules/{row.name}"},
    )


def router(state: ServerState) -> APIRouter:
    api = APIRouter(prefix="/api/schedules", tags=["schedules API"])
    book = _schedule_book(state)

    @api.get("", summary="The schedules, by name")
    async def list_schedules(b: ScheduleBook = Depends(book)) -> JSONResponse:
        try:
            rows = await b.list_schedules()
        except StoreError as exc:
            raise ApiError(503, str(exc), "store_error") from exc
        return JSONResponse({"schedules": [schedule_to_json(r) for r in rows]})

    @api.post("", summary="Add a schedule of an exposed flow", status_code=201)
    async def create(body: NewSchedule, b: ScheduleBook = Depends(book)) -> JSONResponse:
        return await _create(state, body)

    @api.get("/{name}", summary="A schedule and its last ticks")
    async def show(
        name: str = Name,
        limit: int = Query(20, ge=1, le=1000),
        b: ScheduleBook = Depends(book),
    ) -> JSONResponse:
        row = await _one(b, name)
        ticks = await b.schedule_ticks(name, limit)
        return JSONResponse({**schedule_to_json(row), "ticks": [tick_to_json(t) for t in ticks]})

    @api.delete("/{name}", summary="Remove a schedule (its runs and ticks stay on record)")
    async def remove(name: str = Name, b: ScheduleBook = Depends(book)) -> JSONResponse:
        if not await b.delete_schedule(name):
            raise ApiError(404, f"no schedule {name!r}", "not_found")
        return JSONResponse({"name": name, "removed": True})

    @api.post("/{name}/pause", summary="Pause a schedule: no tick fires")
    async def pause(name: str = Name, b: ScheduleBook = Depends(book)) -> JSONResponse:
        await _one(b, name)
        return JSONResponse(schedule_to_json(await pause_schedule(state.store, name, True)))

    @api.post("/{name}/resume", summary="Resume a schedule from its next tick after now")
    async def resume(name: str = Name, b: ScheduleBook = Depends(book)) -> JSONResponse:
        await _one(b, name)
        return JSONResponse(schedule_to_json(await pause_schedule(state.store, name, False)))

    return api
