"""Observability as views over the event log: what the recorded runs say about quality, their
OpenTelemetry traces and their Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from .metrics import DURATION_BUCKETS, MetricsCollector, step_label
    from .quality import (
        DIMENSIONS,
        GuardCheck,
        QualityReport,
        QualityRow,
        guard_checks,
        quality_events,
        quality_stats,
        store_quality,
    )
    from .tracing import (
        RunTraceExporter,
        SpanData,
        SpanEvent,
        export_run,
        otlp_endpoint,
        otlp_exporter,
        span_id_of,
        spans_of,
        to_readable,
        trace_id_of,
    )

_LAZY = {
    "DURATION_BUCKETS": ".metrics",
    "MetricsCollector": ".metrics",
    "step_label": ".metrics",
    "DIMENSIONS": ".quality",
    "GuardCheck": ".quality",
    "QualityReport": ".quality",
    "QualityRow": ".quality",
    "guard_checks": ".quality",
    "quality_events": ".quality",
    "quality_stats": ".quality",
    "store_quality": ".quality",
    "RunTraceExporter": ".tracing",
    "SpanData": ".tracing",
    "SpanEvent": ".tracing",
    "export_run": ".tracing",
    "otlp_endpoint": ".tracing",
    "otlp_exporter": ".tracing",
    "span_id_of": ".tracing",
    "spans_of": ".tracing",
    "to_readable": ".tracing",
    "trace_id_of": ".tracing",
}
"""Each name's module, imported on first use: ``erpoz runs show`` reads the timeline
(``observe.timeline``) without the metrics, quality and tracing modules and the engine."""


__getattr__: Callable[[str], Any] = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "DIMENSIONS",
    "DURATION_BUCKETS",
    "GuardCheck",
    "MetricsCollector",
    "QualityReport",
    "QualityRow",
    "RunTraceExporter",
    "SpanData",
    "SpanEvent",
    "export_run",
    "guard_checks",
    "otlp_endpoint",
    "otlp_exporter",
    "quality_events",
    "quality_stats",
    "span_id_of",
    "spans_of",
    "step_label",
    "store_quality",
    "to_readable",
    "trace_id_of",
]
