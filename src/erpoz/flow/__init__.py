"""Define flows: typed steps, wiring, branches, fan-out, map, loops, sub-flows; compile."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_getattr
from ._checked import DocMistake, dotted, explain, locate
from ._context import Context, Journal
from ._flow import Flow, InputSpec
from ._load import LOADED_PREFIX, load_flow
from ._plan import LOOP, MAP, SKIPPED, TASK, Plan, PlanNode
from ._refs import Cond, Ref, first_of
from ._step import Resources, RetryPolicy, StepSpec, is_retryable, spec_of, step
from ._types import get_field, type_name
from ._yaml import LineMap, LineSeq, import_object, load_config_yaml, read_text_file

if TYPE_CHECKING:
    from ._file import FlowFile

__all__ = [
    "LOADED_PREFIX",
    "LOOP",
    "MAP",
    "SKIPPED",
    "TASK",
    "Cond",
    "Context",
    "DocMistake",
    "Flow",
    "FlowFile",
    "InputSpec",
    "Journal",
    "LineMap",
    "LineSeq",
    "Plan",
    "PlanNode",
    "Ref",
    "Resources",
    "RetryPolicy",
    "StepSpec",
    "dotted",
    "explain",
    "first_of",
    "get_field",
    "import_object",
    "is_retryable",
    "load_config_yaml",
    "load_flow",
    "locate",
    "read_text_file",
    "spec_of",
    "step",
    "type_name",
]


# the model of a flow file is built when first asked for (reading a YAML flow, erpoz schema):
# a flow written in Python does not pay for it
__getattr__: Callable[[str], Any] = lazy_getattr(__name__, {"FlowFile": "._file"}, globals())
