"""``GET /metrics``: the Prometheus text format, folded from the event log; and, when an OTLP
endpoint is configured, the traces of the runs this server drives.

Metrics are operator-level, not tenant-scoped: the counts cover every tenant's runs. So when
API keys are configured (``ERPOZ_API_KEYS``), ``/metrics`` needs one (401 without, or for a
key that is not valid), and ``ERPOZ_METRICS_TENANTS`` (tenants separated by commas), when set,
narrows it to the keys of those tenants (403 for others). Without configured keys the server
listens on loopback only and ``/metrics`` is open, like every other route.

:func:`router` attaches, once per engine, a :class:`~erpoz.observe.MetricsCollector` as an
engine listener (or uses one already in ``engine.listeners``), whose backfill from the store
runs when the app starts (or at the first scrape); and, when ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, a
:class:`~erpoz.observe.RunTraceExporter` that exports each run's spans as its turns end
(drained when the app stops).
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder

from ..observe.metrics import MetricsCollector
from ..observe.tracing import RunTraceExporter, otlp_exporter
from ._auth import TenantError, tenant_of
from ._state import ServerState

__all__ = ["collector_of", "metrics_tenants", "router"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_tenants(value: str | None = None) -> frozenset[str] | None:
    """``ERPOZ_METRICS_TENANTS="ops,platform"``: the tenants whose keys may read ``/metrics``;
    ``None`` (any valid key) when unset."""
    raw = value if value is not None else os.environ.get("ERPOZ_METRICS_TENANTS", "")
    names = frozenset(t.strip() for t in raw.split(",") if t.strip())
    return names or None


def collector_of(state: ServerState) -> MetricsCollector:
    """The metrics collector listening to ``state.engine``: the one already among its
    listeners (over the same store), else a new one, added to them."""
    for listen in state.engine.listeners:
        owner = getattr(listen, "__self__", None)
        if isinstance(owner, MetricsCollector) and owner.store is state.store:
            return owner
    collector = MetricsCollector(state.store)
    state.engine.listeners.append(collector.listen)
    state.on_startup.append(collector.update)  # the backfill, before the first scrape
    return collector


def _trace_exporter(state: ServerState) -> RunTraceExporter | None:
    for listen in state.engine.listeners:
        owner = getattr(listen, "__self__", None)
        if isinstance(owner, RunTraceExporter):
            return owner
    exporter = otlp_exporter()
    if exporter is None:
        return None
    traces = RunTraceExporter(state.store, exporter)
    state.engine.listeners.append(traces.listen)

    async def stop() -> None:  # export what is under way, then let the exporter go
        await traces.drain()
        traces.close()

    state.on_shutdown.append(stop)
    return traces


def router(state: ServerState) -> APIRouter:
    collector = collector_of(state)
    _trace_exporter(state)
    allowed = metrics_tenants()
    r = APIRouter(tags=["metrics"])

    @r.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics",
        responses={
            200: {"content": {CONTENT_TYPE: {}}, "description": "The Prometheus text format."},
            401: {"description": "No API key, or one that is not valid (when keys are set)."},
            403: {"description": "The key's tenant may not read metrics."},
        },
    )
    async def metrics(request: Request, tenant: str = Depends(tenant_of)) -> Response:
        """Runs, steps, model calls, tokens, cost, tool calls, guard findings and the review
        queue, in the Prometheus text format (OpenMetrics when the scraper asks for it); not
        tenant-scoped: with API keys configured it needs one, of a tenant in
        ``ERPOZ_METRICS_TENANTS`` when that is set."""
        if state.tenants is not None and allowed is not None and tenant not in allowed:
            raise TenantError(403, "this API key may not read /metrics", "metrics_not_allowed")
        await collector.update()
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(collector.registry), headers={"content-type": content_type})

    return r
