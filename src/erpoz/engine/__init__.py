"""Run plans: the scheduler, retries, timeouts, caching, review pauses, resume and replay;
executors (threads, Ray) and workers that take runs from a shared store's queues."""

from ._context import StepContext
from ._engine import (
    Decision,
    Engine,
    Listener,
    Observer,
    RunResult,
    TokenListener,
    check_queue_name,
    new_run_id,
    pending_reviews,
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
    pause_schedule,
    schedule_to_json,
    schedules_from_config,
    sync_schedules,
    tick_run_id,
    tick_to_json,
)
from ._worker import Worker, WorkerStats

__all__ = [
    "CATCHUP",
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
    "new_run_id",
    "pause_schedule",
    "pending_reviews",
    "schedule_to_json",
    "schedules_from_config",
    "sync_schedules",
    "tick_run_id",
    "tick_to_json",
    "top_step",
]
