"""JSON Schemas of erpoz's configuration files — the project file (``erpoz.yaml``), policy files
and YAML flows — so that editors complete and check them (``erpoz schema config|policy|flow``;
the published copies are in the repository's ``schemas/``).

The project file's schema is its pydantic model (:class:`erpoz.models.ProjectConfig`, which
also checks the file). Flows and policies are checked by their own readers
(``erpoz.flow``, ``erpoz.policy``), which give file:line errors; the models here describe the
same keys for editors, and a test holds them to every shipped example.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import ProjectConfig
from .policy import Checkpoint

__all__ = ["KINDS", "FlowFile", "PolicyFile", "json_schema"]

KINDS = ("config", "policy", "flow")
"""What ``erpoz schema`` describes."""

#: every action of a rule (erpoz.policy's TOOL_ACTIONS, MODEL_ACTIONS and DATA_ACTIONS)
Action = Literal[
    "allow", "block", "deny", "escalate", "log", "pseudonymize", "reask", "redact", "review"
]
Glob = Annotated[str, Field(min_length=1, pattern=r"\S", description="A glob ('*': anything)")]
Ref = Annotated[
    str, Field(pattern=r"^\s*\$\{.+\}\s*$", description="${inputs.NAME}, ${STEP} or ${STEP.FIELD}")
]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(_File):
    """One policy rule: a subject (flow, step, tenant, user), one resource (tool, model or
    data) and an action; the first rule that matches decides."""

    name: str = Field(min_length=1)
    action: Action
    tool: Glob | None = None
    model: Glob | None = None
    data: Glob | None = Field(None, description="A detector ('pii') or 'detector.kind'")
    flow: Glob | None = None
    step: Glob | None = None
    tenant: Glob | None = None
    user: Glob | None = None
    at: Checkpoint | list[Checkpoint] | None = Field(None, description="Data rules only")
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    max_reasks: int = Field(1, ge=1)
    to: str | None = Field(None, min_length=1, description="The model an 'escalate' rule asks")
    untrusted: Literal["deny", "review", "allow"] | None = Field(
        None, description="Tool and model rules: what arguments derived from untrusted content get"
    )
    untrusted_fields: list[str] | None = Field(
        None, description="Tool rules: the arguments that may carry untrusted content"
    )


class PolicyFile(_File):
    """A policy file (or the ``policy`` section of ``erpoz.yaml``)."""

    model_config = ConfigDict(extra="forbid", title="erpoz policy")
    rules: list[Rule]
    untrusted: Literal["deny", "review", "allow"] = Field(
        "deny", description="What tools with side effects get for untrusted arguments"
    )
    spotlight: Literal["delimit", "datamark", "off"] = Field(
        "delimit", description="How untrusted text sent to a model is marked"
    )
    masked_check: bool = Field(
        True, description="Re-ask the model without the user's request before a side effect"
    )
    delivery_untrusted: Literal["deny", "review", "allow"] = Field(
        "allow", description="What happens to a flow's result derived from untrusted content"
    )


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
    max_iterations: int = Field(ge=1)
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

    model_config = ConfigDict(extra="forbid", title="erpoz flow")
    name: str | None = None
    description: str | None = None
    inputs: dict[str, str | Input] | None = None
    steps: list[Step] = Field(min_length=1)
    output: Ref | None = None


class _ProjectFile(ProjectConfig):
    model_config = ConfigDict(title="erpoz.yaml")
    policy: str | PolicyFile | None = Field(
        None, description="The rules, or the path of a policy file"
    )


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of ``config`` (erpoz.yaml), ``policy`` or ``flow`` files."""
    models: dict[str, type[BaseModel]] = {
        "config": _ProjectFile,
        "policy": PolicyFile,
        "flow": FlowFile,
    }
    schema = models[kind].model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
