"""Define flows: typed steps, wiring, branches, fan-out, map, loops, sub-flows; compile."""

from ._context import Context, Journal
from ._flow import Flow, InputSpec
from ._load import load_flow
from ._plan import LOOP, MAP, SKIPPED, TASK, Plan, PlanNode
from ._refs import Cond, Ref, first_of
from ._step import Resources, RetryPolicy, StepSpec, is_retryable, spec_of, step

__all__ = [
    "LOOP",
    "MAP",
    "SKIPPED",
    "TASK",
    "Cond",
    "Context",
    "Flow",
    "InputSpec",
    "Journal",
    "Plan",
    "PlanNode",
    "Ref",
    "Resources",
    "RetryPolicy",
    "StepSpec",
    "first_of",
    "is_retryable",
    "load_flow",
    "spec_of",
    "step",
]
