"""Every public error of erpoz keeps its fields across processes (pickle: Ray and any process
executor) and into the log (``error_info``), and says whether trying again may help."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

import erpoz.audit
import erpoz.client
import erpoz.integrations.langchain
import erpoz.integrations.mcp
import erpoz.memory
import erpoz.store._copy
import erpoz.tools
from erpoz import client, errors
from erpoz.audit import UnknownStep
from erpoz.audit._proofs import ProofError
from erpoz.audit.bundle import BundleError
from erpoz.audit.checkpoints import CheckpointError
from erpoz.errors import ErpozError, error_info
from erpoz.integrations.langchain import LangChainMissing
from erpoz.integrations.mcp._client import McpToolError
from erpoz.memory import ContextBudgetError, IngestError, MemoryStoreError, QueryError
from erpoz.store._copy import MigrationError, MigrationReport
from erpoz.tools import ToolError

# One example of each public error class, with every field set to something other than its
# default, and whether it is worth retrying.
EXAMPLES: list[tuple[ErpozError, bool]] = [
    (ErpozError("root"), True),
    (errors.FlowError("no such step", step="s1", file="f.yaml", line=3), False),
    (errors.RunError("no run 'x'", run_id="x"), False),
    (errors.StepFailed("run r failed at step 's'", run_id="r", step="s"), False),
    (errors.InvalidOutput("does not fit", step="s", run_id="r"), False),
    (errors.WaitingForReview("run r waits", run_id="r", steps=("check",)), False),
    (client.ApiError("teapot", status=418, kind="teapot", param="p", body={"a": 1}), False),
    (client.AuthenticationFailed("no key", status=401, kind="invalid_api_key"), False),
    (client.NotFound("no run", status=404, kind="not_found"), False),
    (client.Conflict("finished", status=409, kind="conflict"), False),
    (client.InvalidRequest("bad", status=422, kind="invalid_request_error", param="x"), False),
    (client.ServerUnavailable("locked", status=503, kind="store_unavailable"), True),
    (client.ConnectionFailed("refused", status=None, kind="connection_error"), True),
    (client.WaitTimedOut("still running", run_id="r"), False),
    (errors.ExecutorError("the worker died", run_id="r"), True),
    (errors.ResourcesUnavailable("no GPU node", run_id="r"), False),
    (errors.ReviewRequired("look", output={"a": 1}, evidence=["e"], grant="g"), False),
    (errors.GuardBlocked("blocked", checkpoint="model_input", rule="no pii"), False),
    (errors.StoreError("locked", path="/tmp/x.db"), True),
    (errors.RunClaimed("held", run_id="r", owner="h:1:a", path="/tmp/x.db"), True),
    (errors.ConfigError("unknown key", file="erpoz.yaml", line=7), False),
    (errors.ModelError("overloaded", model="m", retryable=True, status=503, code="c"), True),
    (errors.ModelError("bad request", model="m", retryable=False, status=400), False),
    (errors.BudgetExceeded("over budget", model="m"), False),
    (errors.PolicyViolation("denied", rule="r"), False),
    (ToolError("tool 't' raised OSError", tool="t", retryable=True), True),
    (ToolError("unknown tool 'u'", tool="u"), False),
    (McpToolError("server gone", server="calc", tool="add"), True),
    (McpToolError("tool said no", server="calc", tool="add", retryable=False), False),
    (LangChainMissing("pip install 'erpoz[langchain]'", file="erpoz.yaml", line=4), False),
    (ProofError("no tree of 12 leaves in a store of 9"), False),
    (BundleError("the store no longer matches the checkpoint"), False),
    (CheckpointError("cannot append to /var/audit/checkpoints.jsonl"), True),
    (UnknownStep("no step 'z'", steps=["a", "b"]), True),
    (IngestError("/tmp/a.pdf", "encrypted"), True),
    (MemoryStoreError("locked", path="/tmp/m.db"), True),
    (QueryError("k must be >= 1"), False),
    (ContextBudgetError("the system prompt does not fit"), False),
    (
        MigrationError(
            "conflict",
            "runs differ",
            runs=["r1"],
            report=MigrationReport("sqlite:///a", "postgresql://b", copied=2),
        ),
        True,
    ),
]


def _public_error_classes() -> set[type[ErpozError]]:
    """Every subclass of ErpozError that erpoz defines (its modules imported above)."""
    found: set[type[ErpozError]] = set()
    todo: list[type[ErpozError]] = [ErpozError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("erpoz."):
            found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_public_error_class_has_an_example() -> None:
    imported = (erpoz.audit, erpoz.client, erpoz.integrations.mcp, erpoz.memory, erpoz.tools)
    assert imported and erpoz.store._copy  # imported: their classes are known
    missing = _public_error_classes() - {type(e) for e, _ in EXAMPLES}
    assert not missing, f"add an example of {sorted(c.__name__ for c in missing)} to EXAMPLES"


def _fields(exc: BaseException) -> dict[str, Any]:
    return {k: v for k, v in vars(exc).items() if not k.startswith("_")}


@pytest.mark.parametrize(("exc", "retryable"), EXAMPLES, ids=lambda v: type(v).__name__)
def test_round_trips_through_pickle_with_its_fields(exc: ErpozError, retryable: bool) -> None:
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc)
    assert str(again) == str(exc) and again.args == exc.args
    assert _fields(again) == _fields(exc) and _fields(exc) == exc.fields
    assert again.retryable is retryable


@pytest.mark.parametrize(("exc", "retryable"), EXAMPLES, ids=lambda v: type(v).__name__)
def test_error_info_is_what_the_log_records(exc: ErpozError, retryable: bool) -> None:
    info = error_info(exc)
    assert info["type"] == type(exc).__name__ and info["types"][-1] == "ErpozError"
    assert info["message"] == str(exc) and info["retryable"] is retryable
    assert set(info["fields"]) == set(exc.fields)
    assert json.loads(json.dumps(info)) == info  # values that are not JSON are their repr


def test_the_guard_and_policy_fields_that_consumers_read() -> None:
    blocked = error_info(errors.GuardBlocked("x", checkpoint="tool_call", rule="r1"))
    assert blocked["fields"] == {"checkpoint": "tool_call", "rule": "r1"}
    budget = error_info(errors.BudgetExceeded("over", model="m"))
    assert budget["types"] == ["BudgetExceeded", "ModelError", "ErpozError"]
    assert budget["fields"]["retryable"] is False
    plain = error_info(ValueError("bad"))
    assert plain == {
        "type": "ValueError",
        "types": ["ValueError"],
        "message": "bad",
        "retryable": True,
        "fields": {},
    }
