"""One exception tree: every error erpoz raises is an :class:`ErpozError`.

Messages say what went wrong, where, and what to do next. Errors from drivers or libraries are
translated at the border (``raise StoreError(...) from exc``) and keep their useful fields.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "ErpozError",
    "ExecutorError",
    "FlowError",
    "GuardBlocked",
    "InvalidOutput",
    "ModelError",
    "PolicyViolation",
    "ResourcesUnavailable",
    "ReviewRequired",
    "RunClaimed",
    "RunError",
    "StepFailed",
    "StoreError",
    "WaitingForReview",
    "error_info",
]


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An error of class ``cls`` with ``args``, its fields set by pickle afterwards (its
    ``__init__`` is not called again: it takes other arguments than the message it made)."""
    return cls.__new__(cls, *args)


class ErpozError(Exception):
    """Root of every error raised by erpoz.

    ``retryable`` says whether trying again may help (a class's default; some errors set it
    per instance). Every error keeps its fields through pickle (process executors, Ray) and
    into the log (:func:`error_info`).
    """

    retryable: bool = True

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (type(self), self.args), self.__dict__)

    @property
    def fields(self) -> dict[str, Any]:
        """The error's own fields (``status``, ``checkpoint``, ``rule`` …) by name."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class FlowError(ErpozError):
    """A flow definition is invalid; found when it is compiled, before anything runs.

    ``step`` names the step at fault; ``file`` and ``line`` point into a YAML flow file.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.step = step
        self.file = file
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        what = f"step '{self.step}': " if self.step is not None else ""
        return f"{where}{what}{self.message}"

    def at(self, *, file: str | None = None, line: int | None = None) -> FlowError:
        """Return a copy located in a file (used while loading YAML)."""
        return FlowError(
            self.message,
            step=self.step,
            file=file if self.file is None else self.file,
            line=line if self.line is None else self.line,
        )


class RunError(ErpozError):
    """A run cannot proceed (unknown run, wrong state, bad resume request)."""

    retryable = False

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message)


class StepFailed(RunError):
    """A step failed (retries exhausted, rejected by a reviewer …): ``RunResult.unwrap()``."""

    def __init__(self, message: str, *, run_id: str, step: str) -> None:
        self.step = step
        super().__init__(message, run_id=run_id)


class WaitingForReview(RunError):
    """A run stopped to wait for a person's decision on ``steps`` (a step with ``review``, or a
    guard or policy that asked for one): it goes on once a reviewer approves or edits
    (``erpoz review approve RUN``, ``POST /api/reviews/RUN/approve``). Raised where a caller
    wants the run's output now: ``RunOutcome.unwrap()`` of the client, the LangChain
    runnable."""

    def __init__(self, message: str, *, run_id: str, steps: tuple[str, ...] = ()) -> None:
        self.steps = steps
        super().__init__(message, run_id=run_id)


class InvalidOutput(RunError):
    """An output given for a step from outside (a reviewer's edit) does not fit the step's
    declared type; ``step`` names it. The run is left as it was."""

    def __init__(self, message: str, *, step: str, run_id: str | None = None) -> None:
        self.step = step
        super().__init__(message, run_id=run_id)


class ExecutorError(RunError):
    """The executor could not carry out a step: the process that ran it died, or its cluster
    went away. Retried like any step error when the step's retry policy allows."""

    retryable = True


class ResourcesUnavailable(ExecutorError):
    """No node of the executor's cluster has what a step declares it needs (CPUs, GPUs,
    memory): waiting would never end, so the step fails at once, without retries."""

    retryable = False


class ReviewRequired(ErpozError):
    """Raised by a step to hand its proposed output to a human before the run goes on.

    The run becomes ``waiting``; ``erpoz runs resume RUN --approve | --reject | --edit FILE``
    continues it. ``output`` is the proposal the reviewer sees (and approves or edits).
    ``grant`` asks for a permission instead of an output (a tool call, a model answer that a
    guard flagged): approving records the grant and runs the step again, and this time the
    call goes through (``ctx.approved(grant)`` is true); rejecting fails the step.
    """

    retryable = False

    def __init__(
        self,
        reason: str,
        *,
        output: object = None,
        evidence: object = None,
        grant: str | None = None,
    ) -> None:
        self.reason = reason
        self.output = output
        self.evidence = evidence
        self.grant = grant
        super().__init__(reason)


class GuardBlocked(ErpozError):
    """A guard's finding was mapped by policy to ``block`` (or a re-ask / escalation ran out):
    names the checkpoint and the rule. Not retried."""

    retryable = False

    def __init__(self, message: str, *, checkpoint: str, rule: str | None) -> None:
        self.checkpoint = checkpoint
        self.rule = rule
        super().__init__(message)


class StoreError(ErpozError):
    """The run store cannot be used (locked, corrupt, unreachable, claimed by another process)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{message} ({path})" if path else message)


class RunClaimed(StoreError):
    """Another live process holds the run (its lease has not lapsed) or claimed it a moment
    ago: wait for it, or cancel the run. ``owner`` names the holder when it is known."""

    def __init__(
        self, message: str, *, run_id: str, owner: str | None = None, path: str | None = None
    ) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(message, path=path)


class ConfigError(ErpozError):
    """The project file (``erpoz.yaml``) or a setting is wrong; names file, line and what was
    expected."""

    retryable = False

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{message}")


class ModelError(ErpozError):
    """A model call failed. ``retryable`` says whether trying again (or another model) may help;
    ``status`` is the provider's HTTP status when there is one; ``code`` a reason for machines
    when erpoz refused the call itself (``unsupported_modality``, ``context_length_exceeded``)."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        retryable: bool = False,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.model = model
        self.retryable = retryable
        self.status = status
        self.code = code
        super().__init__(f"model '{model}': {message}" if model else message)


class BudgetExceeded(ModelError):
    """A call would go over a cost ceiling; it was refused before anything was sent."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message, model=model, retryable=False)


class PolicyViolation(ErpozError):
    """A policy denied an action (a tool call, …); ``rule`` names the rule that decided."""

    retryable = False

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        self.rule = rule
        super().__init__(message)


def _json_value(value: Any) -> Any:
    """``value`` as the log will read it back (a tuple becomes a list), or its repr."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def error_info(exc: BaseException, *, retryable: bool | None = None) -> dict[str, Any]:
    """What the log records of an error, for consumers to read instead of parsing its text:
    ``type`` (its class), ``types`` (its classes up to ``Exception``, most specific first),
    ``message``, ``retryable`` (as given, else the error's own, else true) and ``fields``
    (the error's attributes, each a JSON value; values that are not JSON become their repr)."""
    mro = type(exc).__mro__
    if isinstance(exc, ErpozError):  # erpoz's own lineage (not a builtin mixed in for callers)
        types = [c.__name__ for c in mro if issubclass(c, ErpozError)]
    else:
        types = [c.__name__ for c in mro if c not in (Exception, BaseException, object)]
    fields = exc.fields if isinstance(exc, ErpozError) else {}
    if retryable is None:
        flag = getattr(exc, "retryable", True)
        retryable = flag if isinstance(flag, bool) else True
    return {
        "type": type(exc).__name__,
        "types": types,
        "message": str(exc),
        "retryable": retryable,
        "fields": {k: _json_value(v) for k, v in fields.items()},
    }
