"""Schedules: cron-style timetables that start runs of a flow, fired once per tick however
many workers share the store.

A schedule names a flow (a flow file or ``module:attr``, as ``erpoz submit`` takes it), a cron
expression (five fields, or six with seconds last; read by the `croniter` library) in a time
zone, the inputs of every run and the queue it goes to. Every worker runs a
:class:`Scheduler`: when a tick comes due, the workers race to claim it in the store (a
compare-and-swap on the schedule's next tick, see :mod:`erpoz.store`); the one that wins
submits a run whose id is made of the schedule's name and the tick (``s-nightly-
20261208T020000Z``). A worker killed between claiming and submitting leaves the tick claimed;
another worker takes it over and submits the same run id — started once, whoever gets there.

After downtime (no worker running, or the schedule paused) ``catchup`` says what happens to
the ticks missed: ``all`` fires each of them, oldest first; ``latest`` fires the most recent
one and skips the others; ``none`` skips them all, except a tick late by less than ``late_s``
seconds (60: a worker busy for a moment is not downtime). A resumed schedule goes on from the
next tick after now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ..errors import ConfigError, FlowError, RunError, StoreError
from ..flow import Plan
from ..store import ScheduleBook, ScheduleRow, Store, Tick, TickClaim
from ._engine import Engine, check_queue_name

if TYPE_CHECKING:
    from ..models import ProjectConfig

log = logging.getLogger("erpoz.schedules")

CATCHUP = ("all", "latest", "none")
DEFAULT_LATE_S = 60.0
MAX_FIRES_PER_PASS = 100
"""Ticks one schedule fires in one pass of a scheduler (``catchup: all`` drains a backlog
over several passes, a second apart)."""
_COUNT_CAP = 100_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEYS = {"flow", "cron", "inputs", "queue", "catchup", "timezone"}


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a schedule is: which flow to start, when, and with which inputs."""

    name: str
    flow: str
    cron: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    catchup: str = "latest"
    timezone: str = "UTC"
    tenant: str = "-"
    """The tenant it belongs to (``-``: the project's). A tenant's schedule is stored as
    ``TENANT:NAME`` (:func:`stored_name`), so tenants' names never meet, and the runs it starts
    carry the tenant's tag."""

    @property
    def key(self) -> str:
        """The name it is stored under."""
        return stored_name(self.tenant, self.name)


def stored_name(tenant: str, name: str) -> str:
    """The name a schedule of ``tenant`` is stored under: ``name`` for the project's (``-``),
    ``TENANT:NAME`` for a tenant's (the ``:`` no project schedule's name has)."""
    return name if tenant == "-" else f"{tenant}:{name}"


def shown_name(row: ScheduleRow) -> str:
    """A schedule's name as its tenant knows it (without the ``TENANT:`` it is stored under)."""
    prefix = f"{row.tenant}:"
    if row.tenant != "-" and row.name.startswith(prefix):
        return row.name[len(prefix) :]
    return row.name


class Cron:
    """A cron expression in a time zone: the ticks it makes, as epoch seconds."""

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        self.expr, self.timezone = expr, timezone
        self.zone = zone_of(timezone)
        check_cron(expr)

    def _iter(self, at: float) -> croniter:
        return croniter(self.expr, datetime.fromtimestamp(at, self.zone))

    def next_after(self, at: float) -> float:
        """The first tick strictly after ``at``."""
        return float(self._iter(at).get_next(float))

    def latest_until(self, at: float) -> float:
        """The last tick at or before ``at``."""
        nxt = self.next_after(at)
        return float(self._iter(nxt).get_prev(float))

    def count(self, start: float, end: float) -> int:
        """How many ticks lie in ``[start, end)`` (``start`` a tick; at most 100,000)."""
        n, it, t = 0, self._iter(start - 1e-3), 0.0
        while n < _COUNT_CAP:
            t = float(it.get_next(float))
            if t >= end:
                break
            n += 1
        return n


def zone_of(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {timezone!r}: use an IANA name such as UTC or Europe/Paris"
        ) from exc


def check_cron(expr: str) -> None:
    """``ConfigError`` saying why when ``expr`` is not a cron expression croniter reads."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ConfigError(
            f"cron {expr!r}: expected 5 fields (minute hour day month weekday) or 6 (a "
            f"sixth for seconds), got {len(fields)}"
        )
    try:
        croniter(expr, datetime.now(UTC)).get_next(float)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ConfigError(f"cron {expr!r}: {exc}") from None


def tick_run_id(schedule: str, tick: float) -> str:
    """The id of the run a tick starts: the same for every worker that fires it."""
    return f"s-{schedule}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(tick))}"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def schedule_to_json(row: ScheduleRow) -> dict[str, Any]:
    """A schedule as the CLI's ``--json`` and the HTTP API show it."""
    return {
        "name": row.name,
        "flow": row.flow,
        "cron": row.cron,
        "timezone": row.timezone,
        "inputs": json.loads(row.inputs),
        "queue": row.queue,
        "catchup": row.catchup,
        "paused": row.paused,
        "origin": row.origin,
        "next_tick": iso(row.next_tick),
        "fired": row.fired,
        "skipped": row.skipped,
        "created": row.created,
        "tenant": row.tenant,
    }


def tick_to_json(t: Tick) -> dict[str, Any]:
    """A tick as the CLI's ``--json`` and the HTTP API show it (``at``: the tick, ISO 8601)."""
    return {**t.to_json(), "at": iso(t.tick)}


def plan_claim(
    row: ScheduleRow, now: float, owner: str, lease_s: float, late_s: float = DEFAULT_LATE_S
) -> TickClaim | None:
    """What a scheduler claims for ``row`` at ``now`` by its catch-up rule (``None``: nothing
    is due)."""
    if row.paused or row.next_tick > now:
        return None
    cron = Cron(row.cron, row.timezone)
    claim = TickClaim(row.name, row.next_tick, 0.0, owner, now + lease_s)
    if row.catchup == "all":
        return _with_tick(claim, row.next_tick, cron.next_after(row.next_tick), 0)
    latest = cron.latest_until(now)
    missed = cron.count(row.next_tick, latest)
    after = cron.next_after(now)
    if row.catchup == "none" and now - latest > late_s:
        return TickClaim(row.name, row.next_tick, after, owner, now + lease_s, skipped=missed + 1)
    return _with_tick(claim, latest, after, missed)


def _with_tick(claim: TickClaim, tick: float, after: float, skipped: int) -> TickClaim:
    return TickClaim(
        claim.schedule,
        claim.expect_next,
        after,
        claim.owner,
        claim.lease_until,
        tick=tick,
        run_id=tick_run_id(claim.schedule, tick),
        skipped=skipped,
    )


def book_of(store: Store) -> ScheduleBook:
    if not isinstance(store, ScheduleBook):
        raise StoreError(f"the store {store.url} keeps no schedules", path=store.url)
    return store


def check_schedule(s: Schedule) -> None:
    """``ConfigError`` naming what is wrong with ``s`` (its flow is checked by
    :func:`add_schedule`, which loads it)."""
    if not _NAME.match(s.name):
        raise ConfigError(
            f"schedule name {s.name!r}: use letters, digits, '_', '-' or '.' (at most 64, "
            "starting with a letter or digit)"
        )
    if s.tenant != "-" and not _NAME.match(s.tenant):
        raise ConfigError(
            f"tenant {s.tenant!r}: a tenant's schedules need a tenant name of letters, digits, "
            "'_', '-' or '.' (it is part of the ids of the runs they start)"
        )
    Cron(s.cron, s.timezone)
    if s.catchup not in CATCHUP:
        raise ConfigError(f"catchup {s.catchup!r}: expected one of {', '.join(CATCHUP)}")
    try:
        check_queue_name(s.queue)
    except RunError as exc:
        raise ConfigError(str(exc)) from None


def _row(s: Schedule, source: str, inputs: str, origin: str, now: float) -> ScheduleRow:
    return ScheduleRow(
        name=s.key,
        flow=source,
        cron=s.cron,
        timezone=s.timezone,
        inputs=inputs,
        queue=s.queue,
        catchup=s.catchup,
        paused=False,
        origin=origin,
        created=now,
        updated=now,
        next_tick=Cron(s.cron, s.timezone).next_after(now),
        tenant=s.tenant,
    )


def _checked_row(s: Schedule, origin: str, now: float, plan: Plan | None = None) -> ScheduleRow:
    """The row of ``s``, its flow loaded (unless ``plan`` is given: the compiled flow) and its
    inputs bound (``FlowError`` / ``ConfigError`` when either is wrong): a schedule that could
    never start a run is refused when it is made, not at its first tick."""
    from ..flow import load_flow

    check_schedule(s)
    if plan is None:
        plan = load_flow(s.flow).compile()
    if not plan.source:
        raise FlowError(f"flow '{plan.name}' has no source a worker could load it from")
    try:
        plan.bind_inputs(dict(s.inputs))
    except (FlowError, RunError) as exc:
        raise ConfigError(f"schedule '{s.name}': inputs of flow '{plan.name}': {exc}") from None
    return _row(s, plan.source, json.dumps(dict(s.inputs), sort_keys=True), origin, now)


async def add_schedule(
    store: Store,
    schedule: Schedule,
    *,
    origin: str = "python",
    replace: bool = False,
    now: float | None = None,
    plan: Plan | None = None,
) -> ScheduleRow:
    """Store ``schedule`` (checked first); it fires from its first tick after ``now``. A
    schedule of that name is an error unless ``replace`` (then it keeps where it stands,
    unless its cron or time zone changed). ``plan``: the flow, compiled already (the server's
    exposed flows); its ``source`` is what workers load."""
    book = book_of(store)
    row = _checked_row(schedule, origin, time.time() if now is None else now, plan)
    if not replace and await book.list_schedules([schedule.key]):
        raise ConfigError(
            f"a schedule named '{schedule.name}' exists; remove it first (erpoz schedule rm) "
            "or replace it (--replace)"
        )
    return await book.put_schedule(row)


@dataclass(frozen=True, slots=True)
class Synced:
    """What :func:`sync_schedules` changed, by schedule name."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k)) for k in ("added", "changed", "removed", "kept")}


async def sync_schedules(
    store: Store, schedules: Sequence[Schedule], *, origin: str = "config"
) -> Synced:
    """Make the store's schedules of ``origin`` be ``schedules``: new ones added, changed ones
    changed (keeping where they stand unless their timing changed), the others of that origin
    removed. Every worker of a project does this on start: doing it twice changes nothing."""
    book = book_of(store)
    now = time.time()
    rows = [_checked_row(s, origin, now) for s in schedules]
    before = {r.name: r for r in await book.list_schedules()}
    added: list[str] = []
    changed: list[str] = []
    kept: list[str] = []
    for row in rows:
        old = before.get(row.name)
        if old is not None and old.origin != origin:
            raise ConfigError(
                f"schedule '{row.name}' exists already, made by {old.origin}; remove it "
                "(erpoz schedule rm) or rename one of them"
            )
        stored = await book.put_schedule(row)
        bucket = added if old is None else kept if stored == old else changed
        bucket.append(row.name)
    names = {r.name for r in rows}
    removed = [n for n, r in before.items() if r.origin == origin and n not in names]
    for name in removed:
        await book.delete_schedule(name)
    return Synced(tuple(added), tuple(changed), tuple(removed), tuple(kept))


async def pause_schedule(store: Store, name: str, paused: bool = True) -> ScheduleRow:
    """Pause a schedule (no tick fires), or resume it from its next tick after now (the ticks
    of the pause are not caught up)."""
    book = book_of(store)
    rows = await book.list_schedules([name])
    if not rows:
        raise ConfigError(f"no schedule named '{name}' (erpoz schedule ls)")
    row = rows[0]
    # resumed: from the next tick after now, never back before where it stood (a backfill)
    nxt = (
        None if paused else max(row.next_tick, Cron(row.cron, row.timezone).next_after(time.time()))
    )
    await book.pause_schedule(name, paused, nxt)
    return (await book.list_schedules([name]))[0]


def schedules_from_config(cfg: ProjectConfig) -> list[Schedule]:
    """The ``schedules:`` section of a project file, checked; ``ConfigError`` with the file and
    line of what is wrong."""
    section = cfg.schedules
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise cfg.error("schedules: expected a mapping of schedule names", "schedules")
    return [_from_config(cfg, str(name), spec) for name, spec in section.items()]


def _from_config(cfg: ProjectConfig, name: str, spec: Any) -> Schedule:
    if not isinstance(spec, Mapping):
        raise cfg.error(
            f"schedule '{name}': expected a mapping with flow and cron", "schedules", name, key=True
        )
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise cfg.error(
            f"schedule '{name}': unknown key '{unknown[0]}' (expected {', '.join(sorted(_KEYS))})",
            "schedules",
            name,
            unknown[0],
            key=True,
        )
    for key in ("flow", "cron"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise cfg.error(
                f"schedule '{name}': '{key}' is required (a string)", "schedules", name, key=True
            )
    inputs = spec.get("inputs", {})
    if not isinstance(inputs, Mapping):
        raise cfg.error(
            f"schedule '{name}': inputs is a mapping of input names to values",
            "schedules",
            name,
            "inputs",
        )
    s = Schedule(
        name=name,
        flow=spec["flow"],
        cron=spec["cron"],
        inputs={str(k): v for k, v in inputs.items()},
        queue=str(spec.get("queue", "default")),
        catchup=str(spec.get("catchup", "latest")),
        timezone=str(spec.get("timezone", "UTC")),
    )
    try:
        check_schedule(s)
    except ConfigError as exc:
        where = _blame(exc.message)
        raise cfg.error(
            f"schedule '{name}': {exc.message}", "schedules", name, *where, key=not where
        ) from None
    return s


def _blame(message: str) -> tuple[str, ...]:
    """Which key of a schedule an error of :func:`check_schedule` is about."""
    for key, start in (
        ("cron", "cron "),
        ("timezone", "unknown time zone"),
        ("catchup", "catchup "),
        ("queue", "queue name"),
    ):
        if message.startswith(start):
            return (key,)
    return ()


class Scheduler:
    """Fires the due ticks of a store's schedules: every ``poll_s`` seconds, claims each due
    tick (one worker wins it), submits its run, and takes over ticks whose claimer died.

    Run one in every worker (``erpoz worker`` does): any number share the work, each tick
    fires once."""

    def __init__(
        self,
        engine: Engine,
        *,
        poll_s: float = 1.0,
        late_s: float = DEFAULT_LATE_S,
        lease_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.late_s = late_s
        self.lease_s = (
            lease_s if lease_s is not None else float(getattr(engine.store, "lease_s", 30.0))
        )
        self.fired = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Fire due ticks until :meth:`stop`; a store error is logged and tried again."""
        self._stop = asyncio.Event()
        while not self._stop.is_set():
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("schedules: %s (trying again in %.1f s)", exc, self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)

    async def run_once(self, now: float | None = None) -> list[Tick]:
        """One pass as of ``now`` (default: the clock): take over abandoned ticks, then fire
        what is due. Returns the ticks this pass fired."""
        book = book_of(self.engine.store)
        owner = self.engine.owner
        done: list[Tick] = []
        while (stale := await book.reclaim_tick(owner, self.lease_s)) is not None:
            log.info("schedule %s: taking over tick %s", stale.schedule, iso(stale.tick))
            done.append(await self._fire(book, stale))
        for row in await book.list_schedules():
            done.extend(await self._due(book, row, time.time() if now is None else now))
        self.fired += len(done)
        return done

    async def _due(self, book: ScheduleBook, row: ScheduleRow, now: float) -> list[Tick]:
        done: list[Tick] = []
        for _ in range(MAX_FIRES_PER_PASS):
            try:
                claim = plan_claim(row, now, self.engine.owner, self.lease_s, self.late_s)
            except ConfigError as exc:  # stored by an erpoz whose cron library read it
                log.error("schedule %s: %s", row.name, exc)
                return done
            if claim is None or not await book.claim_tick(claim):
                return done  # nothing due, or another worker moved it first
            if claim.skipped:
                log.info(
                    "schedule %s: %d tick(s) skipped (catchup: %s)",
                    row.name,
                    claim.skipped,
                    row.catchup,
                )
            if claim.tick is not None and claim.run_id is not None:
                tick = Tick(
                    row.name,
                    claim.tick,
                    claim.run_id,
                    "claimed",
                    claim.owner,
                    claim.lease_until,
                    now,
                )
                done.append(await self._fire(book, tick, row))
            rows = await book.list_schedules([row.name])
            if not rows:
                return done
            row = rows[0]
        return done

    async def _fire(self, book: ScheduleBook, tick: Tick, row: ScheduleRow | None = None) -> Tick:
        """Submit the tick's run (unless it exists: a retried fire) and record the tick fired;
        a flow that cannot be loaded or inputs it refuses fail the tick, saying why."""
        store, owner = self.engine.store, self.engine.owner
        error: str | None = None
        try:
            if await store.get_run(tick.run_id) is None:
                if row is None:
                    rows = await book.list_schedules([tick.schedule])
                    if not rows:
                        raise RunError(f"schedule '{tick.schedule}' was removed before it fired")
                    row = rows[0]
                await self._submit(row, tick)
        except (FlowError, RunError, ConfigError) as exc:
            error = str(exc)
            log.error("schedule %s: tick %s not fired: %s", tick.schedule, iso(tick.tick), exc)
        await book.finish_tick(tick.schedule, tick.tick, owner, error)
        return Tick(
            tick.schedule,
            tick.tick,
            tick.run_id,
            "failed" if error else "fired",
            owner,
            None,
            tick.claimed,
            time.time(),
            tick.claims,
            error,
        )

    async def _submit(self, row: ScheduleRow, tick: Tick) -> None:
        plan = self.engine._plan_for(row.flow, None, tick.run_id, cache=True)
        tags = {"schedule": row.name, "tick": iso(tick.tick)}
        if row.tenant != "-":  # the run belongs to the schedule's tenant
            tags["tenant"] = row.tenant
        try:
            await self.engine.submit(
                plan, json.loads(row.inputs), queue=row.queue, run_id=tick.run_id, tags=tags
            )
        except StoreError:
            if await self.engine.store.get_run(tick.run_id) is None:
                raise
            # another process submitted it between our look and our submit: fired once
