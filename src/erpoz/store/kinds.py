"""The kinds of event the engine writes (``run_started`` …), one constant per kind, for the parts
that write or read the log (``from erpoz.store import kinds as ev``)."""

from ._model import (
    REVIEW_REQUESTED,
    REVIEW_RESOLVED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_RESUMED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    RUN_WAITING,
    STEP_FAILED,
    STEP_RETRIED,
    STEP_SKIPPED,
    STEP_STARTED,
    STEP_SUCCEEDED,
)

__all__ = [
    "REVIEW_REQUESTED",
    "REVIEW_RESOLVED",
    "RUN_CANCELLED",
    "RUN_FAILED",
    "RUN_QUEUED",
    "RUN_RESUMED",
    "RUN_STARTED",
    "RUN_SUCCEEDED",
    "RUN_WAITING",
    "STEP_FAILED",
    "STEP_RETRIED",
    "STEP_SKIPPED",
    "STEP_STARTED",
    "STEP_SUCCEEDED",
]
