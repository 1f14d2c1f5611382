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
    check_topic,
    new_run_id,
    pending_reviews,
    result_of,
    top_step,
)
from ._executor import Executor, ThreadExecutor
from ._ray import RayExecutor
from ._remote import RemoteContext
from ._worker import Worker, WorkerStats

__all__ = [
    "Decision",
    "Engine",
    "Executor",
    "Listener",
    "Observer",
    "RayExecutor",
    "RemoteContext",
    "RunResult",
    "StepContext",
    "ThreadExecutor",
    "TokenListener",
    "Worker",
    "WorkerStats",
    "check_queue_name",
    "check_topic",
    "new_run_id",
    "pending_reviews",
    "result_of",
    "top_step",
]
