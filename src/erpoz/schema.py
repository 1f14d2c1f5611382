"""JSON Schemas of erpoz's configuration files — the project file (``erpoz.yaml``), policy files
and YAML flows — so that editors complete and check them (``erpoz schema config|policy|flow``;
the published copies are in the repository's ``schemas/``).

Each schema is made from the pydantic model that checks those files when erpoz reads them,
with errors at file:line: :class:`erpoz.models.ProjectConfig` (``erpoz.yaml``),
:class:`erpoz.policy.PolicyFile` and :class:`erpoz.flow.FlowFile`. What a schema cannot say
(a reference to an unknown step, a rule with two resources) the readers check after the model;
a test holds the schemas to every shipped example.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .flow import FlowFile
from .models import ProjectConfig
from .policy import PolicyFile

__all__ = ["KINDS", "FlowFile", "PolicyFile", "json_schema"]

KINDS = ("config", "policy", "flow")
"""What ``erpoz schema`` describes."""


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
