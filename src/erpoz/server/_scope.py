"""One tenant's view of the run store: the only way the API reads runs.

Every read the API (and the audit, lineage and statistics it calls) makes goes through a
:class:`TenantView`, which answers for the tenant's runs and acts as if no other run existed:
another tenant's run is "no such run", exactly like an id nobody ever used. A run id prefix is
resolved among the tenant's runs only.
"""

from __future__ import annotations

from typing import Any

from ..errors import RunError
from ..store import ChainRow, Event, NewRun, RecordedHead, RunInfo, RunWriter, Store

#: A prefix shorter than this is never expanded (as on the command line).
MIN_PREFIX = 6
_ALL = 10**9


class TenantView:
    """A read-only :class:`~erpoz.store.Store` holding one tenant's runs of ``store``."""

    def __init__(self, store: Store, tenant: str) -> None:
        self._store = store
        self.tenant = tenant
        self.url = "this server"
        self._ids: frozenset[str] | None = None

    async def run_ids(self) -> frozenset[str]:
        """The tenant's run ids (read once per view; a view lives for one request)."""
        if self._ids is None:
            runs = await self._store.list_runs(limit=_ALL, tenant=self.tenant)
            self._ids = frozenset(r.run_id for r in runs)
        return self._ids

    # --- reading ----------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> RunInfo | None:
        """The tenant's run with this id, or with this unique prefix (6+ characters) among the
        tenant's runs; ``None`` otherwise (whoever else's run it may be)."""
        if not run_id:
            return None
        info = await self._store.get_run(run_id)
        if (
            info is not None
            and info.tenant == self.tenant
            and (info.run_id == run_id or len(run_id) >= MIN_PREFIX)
        ):
            return info  # exact, or a prefix unique in the whole store
        if len(run_id) < MIN_PREFIX:
            return None
        matches = [i for i in await self.run_ids() if i.startswith(run_id)]
        if len(matches) != 1:
            return None
        return await self._store.get_run(matches[0])

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[RunInfo]:
        return await self._store.list_runs(
            status=status, flow=flow, limit=limit, tenant=self.tenant
        )

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        if run_id not in await self.run_ids():
            return []
        return await self._store.events(run_id, after)

    async def chain_rows(self, run_id: str | None = None) -> list[ChainRow]:
        ids = await self.run_ids()
        if run_id is not None:
            return await self._store.chain_rows(run_id) if run_id in ids else []
        rows: list[ChainRow] = []
        for rid in sorted(ids):
            rows.extend(await self._store.chain_rows(rid))
        return rows

    async def recorded_heads(self) -> list[RecordedHead]:
        ids = await self.run_ids()
        return [h for h in await self._store.recorded_heads() if h[0] in ids]

    async def chain_and_heads(
        self, run_id: str | None = None
    ) -> tuple[list[ChainRow], list[RecordedHead]]:
        """The tenant's runs' rows and heads, read in one snapshot of the store."""
        ids = await self.run_ids()
        if run_id is not None and run_id not in ids:
            return [], [h for h in await self._store.recorded_heads() if h[0] in ids]
        rows, heads = await self._store.chain_and_heads(run_id)
        return [r for r in rows if r[0] in ids], [h for h in heads if h[0] in ids]

    async def run_with_events(self, run_id: str) -> tuple[RunInfo | None, list[Event]]:
        info = await self.get_run(run_id)
        if info is None:
            return None, []
        info, events = await self._store.run_with_events(info.run_id)
        return (info, events) if info is not None and info.tenant == self.tenant else (None, [])

    async def cache_get(self, key: str) -> str | None:
        return None

    # --- writing: not through a view ----------------------------------------------------------
    async def create_run(self, run: NewRun, owner: str) -> RunWriter:
        raise RunError("a tenant's view of the store is read-only")

    async def claim_run(self, run_id: str, owner: str) -> RunWriter:
        raise RunError("a tenant's view of the store is read-only")

    async def request_cancel(self, run_id: str) -> None:
        raise RunError("a tenant's view of the store is read-only")

    async def cache_put(self, key: str, step: str, output: str) -> None:
        raise RunError("a tenant's view of the store is read-only")

    async def close(self) -> None:
        """The view owns nothing; the store stays open."""


def as_store(view: TenantView) -> Store:
    """The view where a :class:`Store` is expected (audit, lineage, statistics)."""
    store: Store = view
    return store


def public_source(source: str | None) -> str | None:
    """Where a flow came from, as a tenant may see it: a file's name without the server's
    directories (``/srv/app/flows/triage.yaml`` -> ``triage.yaml``, ``/srv/app/f.py:flow`` ->
    ``f.py:flow``); a module path (``pkg.flows:triage``) as it is."""
    if not source:
        return source
    head, sep, attr = source.rpartition(":")
    if sep and attr.isidentifier() and head:
        where, suffix = head, sep + attr
    else:
        where, suffix = source, ""
    name = where.replace("\\", "/").rsplit("/", 1)[-1]
    return name + suffix


def run_json(info: RunInfo) -> dict[str, Any]:
    """A run's row as the API shows it to its tenant (the flow's source without its path)."""
    data = info.to_json()
    data["source"] = public_source(info.source)
    return data


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API shows it (``run_started``'s source without its path); the audit
    export keeps events exactly as recorded, so that their hashes verify."""
    data = event.to_json()
    recorded = data.get("data")
    if event.kind == "run_started" and isinstance(recorded, dict) and "source" in recorded:
        data["data"] = {**recorded, "source": public_source(recorded["source"])}
    return data
