"""Run plans: the scheduler, retries, timeouts, caching, review pauses, resume and replay;
executors (threads, Ray) and workers that take runs from a shared store's queues."""

from ._codec import encode as encode_output
from ._context import StepContext
from ._engine import (
    Decision,
    Engine,
    Listener,
    Observer,
    RunResult,
    TokenListener,
    check_queue_name,
    check_topic,
    new_run_id,
    pending_reviews,
    result_of,
    review_items,
    top_step,
)
from ._executor import Executor, ThreadExecutor
from ._limits import Rate, RunLimits
from ._ray import RayExecutor
from ._remote import RemoteContext
from ._schedules import (
    CATCHUP,
    Cron,
    Schedule,
    Scheduler,
    Synced,
    add_schedule,
    iso,
    pause_schedule,
    schedule_to_json,
    schedules_from_config,
    shown_name,
    stored_name,
    sync_schedules,
    tick_run_id,
    tick_to_json,
)
from ._versions import version_report
from ._worker import DEFAULT_MAX_CLAIMS, Worker, WorkerStats

__all__ = [
    "CATCHUP",
    "DEFAULT_MAX_CLAIMS",
    "Cron",
    "Decision",
    "Engine",
    "Executor",
    "Listener",
    "Observer",
    "Rate",
    "RayExecutor",
    "RemoteContext",
    "RunLimits",
    "RunResult",
    "Schedule",
    "Scheduler",
    "StepContext",
    "Synced",
    "ThreadExecutor",
    "TokenListener",
    "Worker",
    "WorkerStats",
    "add_schedule",
    "check_queue_name",
    "check_topic",
    "encode_output",
    "iso",
    "new_run_id",
    "pause_schedule",
    "pending_reviews",
    "result_of",
    "review_items",
    "schedule_to_json",
    "schedules_from_config",
    "shown_name",
    "stored_name",
    "sync_schedules",
    "tick_run_id",
    "tick_to_json",
    "top_step",
    "version_report",
]
