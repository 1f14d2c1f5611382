"""Run plans: the scheduler, retries, timeouts, caching, review pauses, resume and replay."""

from ._context import StepContext
from ._engine import (
    Decision,
    Engine,
    Listener,
    Observer,
    RunResult,
    new_run_id,
    pending_reviews,
    top_step,
)
from ._executor import Executor, ThreadExecutor

__all__ = [
    "Decision",
    "Engine",
    "Executor",
    "Listener",
    "Observer",
    "RunResult",
    "StepContext",
    "ThreadExecutor",
    "new_run_id",
    "pending_reviews",
    "top_step",
]
