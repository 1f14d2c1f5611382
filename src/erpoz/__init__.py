"""erpoz: the orchestration layer for multi-model AI systems.

Define typed steps, wire them into a flow, run it; every run is an append-only, hash-chained
event log that makes it durable, resumable, replayable and auditable.
"""

from ._run import arun, run
from .engine import Decision, Engine, RunResult
from .errors import (
    ErpozError,
    FlowError,
    ReviewRequired,
    RunError,
    StepFailed,
    StoreError,
)
from .flow import Context, Flow, Plan, RetryPolicy, first_of, load_flow, step
from .store import Store, open_store
from .version import __version__

__all__ = [
    "Context",
    "Decision",
    "Engine",
    "ErpozError",
    "Flow",
    "FlowError",
    "Plan",
    "RetryPolicy",
    "ReviewRequired",
    "RunError",
    "RunResult",
    "StepFailed",
    "Store",
    "StoreError",
    "__version__",
    "arun",
    "first_of",
    "load_flow",
    "open_store",
    "run",
    "step",
]
