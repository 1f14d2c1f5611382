"""``erpoz trace RUN``: a run's OpenTelemetry spans, derived from its event log; exported over
OTLP/HTTP when an endpoint is given (``--otlp URL`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import StoreError
from ..observe.tracing import SpanData, otlp_endpoint, spans_of
from ..store import RunInfo, Store
from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_RUN,
    EXIT_STORE,
    JsonOpt,
    StoreOpt,
    err,
    fail,
    open_or_fail,
    out,
)


async def _read(store: Store, run_id: str) -> tuple[RunInfo, list[SpanData]]:
    try:
        info = await store.get_run(run_id)
        if info is None:
            raise LookupError(f"no run {run_id!r} in {store.url}")
        return info, spans_of(await store.events(info.run_id))
    finally:
        await store.close()


def _export(spans: list[SpanData], endpoint: str) -> None:
    try:
        from opentelemetry.sdk.trace.export import SpanExportResult

        from ..observe.tracing import otlp_exporter, to_readable
    except ImportError:
        fail("exporting needs the OpenTelemetry SDK: pip install 'erpoz[server]'", EXIT_INVALID)
    exporter = otlp_exporter(endpoint, timeout=10)
    assert exporter is not None
    try:
        result = exporter.export(to_readable(spans))
    finally:
        exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        fail(f"the OTLP endpoint {endpoint} did not take the spans", EXIT_FAILED)


def _depths(spans: list[SpanData]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for s in spans:  # parents come before their children
        depth[s.span_id] = 0 if s.parent_id is None else depth.get(s.parent_id, 0) + 1
    return depth


def _details(s: SpanData) -> str:
    """What a row says about its span, in short."""
    a = s.attributes
    parts: list[str] = []
    if "gen_ai.request.model" in a:
        answered = a.get("gen_ai.response.model")
        if answered and answered != a["gen_ai.request.model"]:
            parts.append(f"answered by {answered}")
        if "gen_ai.usage.input_tokens" in a or "gen_ai.usage.output_tokens" in a:
            tokens_in = a.get("gen_ai.usage.input_tokens", 0)
            parts.append(f"tokens {tokens_in}/{a.get('gen_ai.usage.output_tokens', 0)}")
    elif s.parent_id is None:
        parts.append(str(a.get("erpoz.run.status", "")))
        parts.append(
            f"{a.get('erpoz.model_calls', 0)} model calls, tokens "
            f"{a.get('gen_ai.usage.input_tokens', 0)}/{a.get('gen_ai.usage.output_tokens', 0)}"
        )
    cost = a.get("erpoz.cost_usd")
    if isinstance(cost, float) and cost > 0:
        parts.append(f"${cost:.6f}")
    route = a.get("erpoz.route")
    if isinstance(route, list):
        parts.append("via " + " > ".join(str(r) for r in route))
    if "erpoz.guard.action" in a:
        classes = a.get("erpoz.guard.data_classes")
        found = ", ".join(str(c) for c in classes) if isinstance(classes, list) else ""
        parts.append(f"{a['erpoz.guard.action']} {found}".strip())
    if "erpoz.review.decision" in a:
        who = a.get("erpoz.review.reviewer")
        parts.append(f"{a['erpoz.review.decision']}" + (f" by {who}" if who else ""))
    outcome = a.get("erpoz.step.outcome")
    if outcome and outcome != "succeeded":
        parts.append(str(outcome))
    if s.status_message:
        message = s.status_message
        parts.append(message if len(message) <= 60 else message[:59] + "…")
    return " · ".join(p for p in parts if p)


def _table(info: RunInfo, spans: list[SpanData]) -> Table:
    t0 = spans[0].start if spans else 0.0
    depth = _depths(spans)
    table = Table(
        "span", "start ms", "ms", "status", "details", title=f"run {info.run_id} · {info.flow}"
    )
    for s in spans:
        table.add_row(
            escape("  " * depth[s.span_id] + s.name),
            f"{(s.start - t0) * 1000:.1f}",
            f"{s.duration_ms:.1f}",
            s.status + (" (open)" if s.open else ""),
            escape(_details(s)),
        )
    return table


def trace(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    otlp: Annotated[
        str | None,
        typer.Option(
            "--otlp",
            metavar="URL",
            help="OTLP/HTTP collector to export to (its base URL, or the full /v1/traces URL) "
            "\\[default: $OTEL_EXPORTER_OTLP_ENDPOINT]",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run's OpenTelemetry spans (run, steps, model and tool calls, guards, reviews),
    derived from its event log; export them over OTLP/HTTP when an endpoint is configured.
    The trace id comes from the run id: exporting again gives the same trace.

    [dim]Example:[/] erpoz trace RUN --otlp http://localhost:4318
    """
    if otlp is not None and not otlp.startswith(("http://", "https://")):
        fail(f"--otlp {otlp!r}: give the collector's http:// or https:// URL", EXIT_INVALID)
    st = open_or_fail(store)
    try:
        info, spans = asyncio.run(_read(st, run_id))
    except LookupError as exc:
        fail(str(exc), EXIT_RUN)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    endpoint = otlp_endpoint(otlp)
    if endpoint is not None:
        _export(spans, endpoint)
    if as_json:
        out.print_json(
            data={
                "run_id": info.run_id,
                "trace_id": f"{spans[0].trace_id:032x}" if spans else None,
                "exported_to": endpoint,
                "spans": [s.to_json() for s in spans],
            }
        )
        return
    out.print(_table(info, spans))
    trace_id = f"{spans[0].trace_id:032x}" if spans else "-"
    if endpoint is not None:
        out.print(f"exported {len(spans)} spans to {endpoint} · trace id {trace_id}")
    else:
        err.print(
            f"trace id {trace_id}; nothing exported: no OTLP endpoint "
            "(--otlp URL or OTEL_EXPORTER_OTLP_ENDPOINT)",
            highlight=False,
        )
