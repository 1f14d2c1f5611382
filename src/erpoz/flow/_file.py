"""The shape of a YAML flow file, as pydantic models: :func:`erpoz.flow.load_flow` checks every
file with :class:`FlowFile` (mistakes at their line), and ``erpoz schema flow`` publishes its
JSON Schema for editors. What a schema cannot say (a reference to an unknown step, a cycle, an
import that fails, a type a step does not take) the reader checks after it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PATTERNS", "FlowFile", "Input", "Loop", "Retry", "Step"]

_REF_PATTERN = r"^\s*\$\{.+\}\s*$"
Ref = Annotated[
    str, Field(pattern=_REF_PATTERN, description="${inputs.NAME}, ${STEP} or ${STEP.FIELD}")
]
#: what each string pattern of these models asks for, in words
PATTERNS = {_REF_PATTERN: "must be a reference like ${step} or ${step.field}"}


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Input(_File):
    type: str = Field("Any", description="str, int, float, bool, bytes, list[int], module:Class …")
    default: Any = None
    description: str = ""


class Retry(_File):
    attempts: int = Field(1, ge=1)
    backoff: float = Field(0.1, ge=0)
    multiplier: float = Field(2.0, ge=1)
    max_backoff: float = Field(30.0, ge=0)
    retry_on: str | list[str] | None = Field(None, description="Exception classes to retry")
    give_up_on: str | list[str] | None = None


class Loop(_File):
    state: str
    init: Any
    max_iterations: int = Field(ge=1, description="Loops are bounded")
    until: str | None = Field(None, description="A field of the output that ends the loop")


class Step(_File):
    """One step: ``uses`` a function (``module:function``) or runs a sub-``flow`` file."""

    id: str = Field(min_length=1)
    uses: str | None = Field(None, description="module:function")
    flow: str | None = Field(None, description="A sub-flow file, relative to this one")
    with_: dict[str, Any] | None = Field(None, alias="with")
    when: str | None = Field(None, description='${ref}, not ${ref}, ${ref} == "value" …')
    retry: int | Retry | None = None
    timeout: float | None = Field(None, gt=0, description="Seconds")
    cache: bool | None = None
    review: bool | None = None
    resources: dict[str, int | float | str] | None = None
    map: Ref | None = None
    item: str | None = None
    concurrency: int | None = Field(None, ge=1)
    loop: Loop | None = None
    description: str | None = None


class FlowFile(_File):
    """A flow in YAML (docs/yaml.md)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="erpoz flow")
    name: str | None = None
    description: str | None = None
    inputs: dict[str, str | Input] | None = None
    steps: list[Step] = Field(min_length=1)
    output: Ref | None = None
