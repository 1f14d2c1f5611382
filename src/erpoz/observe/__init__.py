"""Observability as views over the event log: what the recorded runs say about quality."""

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

__all__ = [
    "DIMENSIONS",
    "GuardCheck",
    "QualityReport",
    "QualityRow",
    "guard_checks",
    "quality_events",
    "quality_stats",
    "store_quality",
]
