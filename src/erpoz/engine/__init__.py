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
    new_run_id,
    pending_reviews,
    top_step,
)
from ._executor import Executor, ThreadExecutor
from ._ray import RayExecutor
from ._remote import RemoteContext
from ._worker import DEFAULT_MAX_CLAIMS, Worker, WorkerStats

__all__ = [
    "DEFAULT_MAX_CLAIMS",
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
    "encode_output",
    "new_run_id",
    "pending_reviews",
    "top_step",
]
