"""The schedules API under ``/api/schedules``: cron-style schedules that start runs of an
exposed flow, fired once per tick by the workers (``erpoz worker``) that share the store.

With API keys configured, a schedule belongs to the tenant whose key made it: a tenant sees and
manages only its own (another tenant's is answered like one that does not exist, 404), and the
runs its ticks start belong to it. Without keys, the schedules are the project's (those of
``erpoz schedule`` and ``erpoz.yaml`` too). Shapes are in ``docs/schedules.md``.
"""

from __future__ import annotations

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
    shown_name,
    stored_name,
    tick_to_json,
)
from ..errors import ConfigError, FlowError, StoreError
from ..store import ScheduleBook, ScheduleRow, Tick
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


def _shown(row: ScheduleRow) -> dict[str, Any]:
    return {**schedule_to_json(row), "name": shown_name(row)}


def _tick_shown(t: Tick, name: str) -> dict[str, Any]:
    return {**tick_to_json(t), "schedule": name}


class _Scope:
    """The schedules one caller may see: its tenant's (``-``: the project's)."""

    def __init__(self, book: ScheduleBook, tenant: str) -> None:
        self.book = book
        self.tenant = tenant

    def key(self, name: str) -> str:
        return stored_name(self.tenant, name)

    async def one(self, name: str) -> ScheduleRow:
        rows = await self.book.list_schedules([self.key(name)])
        if not rows or rows[0].tenant != self.tenant:
            raise ApiError(404, f"no schedule {name!r}", "not_found")
        return rows[0]


def router(state: ServerState) -> APIRouter:
    api = APIRouter(prefix="/api/schedules", tags=["schedules API"])

    def scope(caller: Caller = Depends(caller_of)) -> _Scope:
        if not isinstance(state.store, ScheduleBook):
            raise ApiError(501, f"the store {state.store.url} keeps no schedules", "store_error")
        return _Scope(state.store, caller.tenant)

    @api.get("", summary="The schedules, by name")
    async def list_schedules(sc: _Scope = Depends(scope)) -> JSONResponse:
        try:
            rows = await sc.book.list_schedules()
        except StoreError as exc:
            raise ApiError(503, str(exc), "store_error") from exc
        mine = [_shown(r) for r in rows if r.tenant == sc.tenant]
        return JSONResponse({"schedules": sorted(mine, key=lambda r: str(r["name"]))})

    @api.post("", summary="Add a schedule of an exposed flow", status_code=201)
    async def create(body: NewSchedule, sc: _Scope = Depends(scope)) -> JSONResponse:
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
            tenant=sc.tenant,
        )
        try:
            row = await add_schedule(
                state.store, spec, origin="api", replace=body.replace, plan=plan
            )
        except (ConfigError, FlowError) as exc:
            status = 409 if "exists" in str(exc) and not body.replace else 422
            message = str(exc).replace(f"'{spec.key}'", f"'{spec.name}'")
            raise ApiError(status, message, "invalid_request_error") from exc
        return JSONResponse(
            _shown(row),
            status_code=201,
            headers={"Location": f"/api/schedules/{body.name}"},
        )

    @api.get("/{name}", summary="A schedule and its last ticks")
    async def show(
        name: str = Name,
        limit: int = Query(20, ge=1, le=1000),
        sc: _Scope = Depends(scope),
    ) -> JSONResponse:
        row = await sc.one(name)
        ticks = await sc.book.schedule_ticks(row.name, limit)
        return JSONResponse({**_shown(row), "ticks": [_tick_shown(t, name) for t in ticks]})

    @api.delete("/{name}", summary="Remove a schedule (its runs and ticks stay on record)")
    async def remove(name: str = Name, sc: _Scope = Depends(scope)) -> JSONResponse:
        row = await sc.one(name)
        if not await sc.book.delete_schedule(row.name):
            raise ApiError(404, f"no schedule {name!r}", "not_found")
        return JSONResponse({"name": name, "removed": True})

    @api.post("/{name}/pause", summary="Pause a schedule: no tick fires")
    async def pause(name: str = Name, sc: _Scope = Depends(scope)) -> JSONResponse:
        row = await sc.one(name)
        return JSONResponse(_shown(await pause_schedule(state.store, row.name, True)))

    @api.post("/{name}/resume", summary="Resume a schedule from its next tick after now")
    async def resume(name: str = Name, sc: _Scope = Depends(scope)) -> JSONResponse:
        row = await sc.one(name)
        return JSONResponse(_shown(await pause_schedule(state.store, row.name, False)))

    return api
