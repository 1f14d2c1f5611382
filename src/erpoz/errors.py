"""One exception tree: every error erpoz raises is an :class:`ErpozError`.

Messages say what went wrong, where, and what to do next. Errors from drivers or libraries are
translated at the border (``raise StoreError(...) from exc``) and keep their useful fields.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "ErpozError",
    "ExecutorError",
    "FlowError",
    "GuardBlocked",
    "ModelError",
    "PolicyViolation",
    "ResourcesUnavailable",
    "ReviewRequired",
    "RunError",
    "StepFailed",
    "StoreError",
    "WaitingForReview",
]


class ErpozError(Exception):
    """Root of every error raised by erpoz."""


class FlowError(ErpozError):
    """A flow definition is invalid; found when it is compiled, before anything runs.

    ``step`` names the step at fault; ``file`` and ``line`` point into a YAML flow file.
    """

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


class ExecutorError(RunError):
    """The executor could not carry out a step: the process that ran it died, or its cluster
    went away. Retried like any step error when the step's retry policy allows."""


class ResourcesUnavailable(ExecutorError):
    """No node of the executor's cluster has what a step declares it needs (CPUs, GPUs,
    memory): waiting would never end, so the step fails at once, without retries."""


class ReviewRequired(ErpozError):
    """Raised by a step to hand its proposed output to a human before the run goes on.

    The run becomes ``waiting``; ``erpoz runs resume RUN --approve | --reject | --edit FILE``
    continues it. ``output`` is the proposal the reviewer sees (and approves or edits).
    ``grant`` asks for a permission instead of an output (a tool call, a model answer that a
    guard flagged): approving records the grant and runs the step again, and this time the
    call goes through (``ctx.approved(grant)`` is true); rejecting fails the step.
    """

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

    def __init__(self, message: str, *, checkpoint: str, rule: str | None) -> None:
        self.checkpoint = checkpoint
        self.rule = rule
        super().__init__(message)


class StoreError(ErpozError):
    """The run store cannot be used (locked, corrupt, unreachable, claimed by another process)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{message} ({path})" if path else message)


class ConfigError(ErpozError):
    """The project file (``erpoz.yaml``) or a setting is wrong; names file, line and what was
    expected."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{message}")


class ModelError(ErpozError):
    """A model call failed. ``retryable`` says whether trying again (or another model) may help;
    ``status`` is the provider's HTTP status when there is one."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        retryable: bool = False,
        status: int | None = None,
    ) -> None:
        self.model = model
        self.retryable = retryable
        self.status = status
        super().__init__(f"model '{model}': {message}" if model else message)


class BudgetExceeded(ModelError):
    """A call would go over a cost ceiling; it was refused before anything was sent."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message, model=model, retryable=False)


class PolicyViolation(ErpozError):
    """A policy denied an action (a tool call, …); ``rule`` names the rule that decided."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        self.rule = rule
        super().__init__(message)
