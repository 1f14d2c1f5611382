"""Observability as views over the event log: what the recorded runs say about quality, their
OpenTelemetry traces and their Prometheus metrics."""

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
