"""The runs API on the wire: the request bodies the server reads and the answers it writes, as
pydantic models that the server (:mod:`erpoz.server.api`) and its Python client
(:mod:`erpoz.client`) share. Plain pydantic: it imports without the ``server`` extra.

Requests forbid unknown fields (a typo is a 422 naming it). Answers allow them: the server may
add fields (``docs/server.md`` promises that shapes are stable and fields may be added), and a
client of an older release still reads the ones it knows; ``model_extra`` holds the others.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import RunError, StepFailed, WaitingForReview

__all__ = [
    "Drive",
    "EndOfTurn",
    "EventOut",
    "EventPage",
    "FlowInfo",
    "FlowInput",
    "Health",
    "LiveEvent",
    "ModelStats",
    "ModelStatsRow",
    "QualityStats",
    "ReviewDecision",
    "ReviewItem",
    "RunDetail",
    "RunInfoOut",
    "RunOutcome",
    "StartRun",
    "StepRow",
    "TokenChunk",
    "VerifyProblem",
    "VerifyReport",
    "WhoAmI",
]

RunStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]

Timeout = Annotated[
    float | None,
    Field(gt=0, le=86_400, description="With wait: answer 202 after this many seconds."),
]


# --- requests --------------------------------------------------------------------------------
class StartRun(BaseModel):
    """``POST /api/runs``."""

    model_config = ConfigDict(extra="forbid")

    flow: str = Field(min_length=1, max_length=200, description="An exposed flow's name.")
    inputs: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(
        default_factory=dict, description="Recorded with the run; 'tenant' is the key's."
    )
    wait: bool = Field(True, description="Wait for the run to succeed, fail or wait for review.")
    timeout_s: Timeout = None
    queue: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Submit the run to this queue for a worker (erpoz worker) instead of "
        "running it in the server: answers 202 at once, with status 'queued'.",
    )
    stream: bool = Field(
        False,
        description="Answer with server-sent events instead of JSON: the run's events as they "
        "are recorded, the model tokens its steps stream (event: token), then event: end.",
    )
    run_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="Start the run under this id; when the tenant has a run with it, answer "
        "with that run (an idempotent start; other inputs are a 409).",
    )


class Drive(BaseModel):
    """``POST /api/runs/{id}/resume``."""

    model_config = ConfigDict(extra="forbid")

    wait: bool = True
    timeout_s: Timeout = None


class ForkRun(BaseModel):
    """``POST /api/runs/{id}/fork``."""

    model_config = ConfigDict(extra="forbid")

    from_step: str | None = Field(
        None, max_length=500, description="Run this step and what follows it again."
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Inputs that change (the others are the run's)."
    )
    wait: bool = True
    timeout_s: Timeout = None


class SendMessage(BaseModel):
    """``POST /api/runs/{id}/messages``."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=128, description="What the run waits for.")
    value: Any = Field(None, description="The message (JSON data).")


class ReviewDecision(BaseModel):
    """``POST /api/reviews/{run_id}/approve|reject|edit``."""

    model_config = ConfigDict(extra="forbid")

    step: str | None = Field(None, max_length=500, description="Which step, when several wait.")
    reviewer: str | None = Field(None, max_length=200, description="Default: the key's name.")
    comment: str = Field("", max_length=10_000)
    output: Any = Field(None, description="edit: the corrected output (checked against the type)")
    wait: bool = True
    timeout_s: Timeout = None


# --- answers ---------------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RunOutcome(_Out):
    """How a run ended its turn (200 of ``POST /api/runs``, resume and the review decisions), or
    that it goes on (202: ``status`` ``running`` or ``queued``, only ``run_id`` and ``status``
    set)."""

    run_id: str
    status: RunStatus
    output: Any = None
    error: str | None = None
    failed_step: str | None = None
    waiting_steps: list[str] = Field(default_factory=list)
    queue: str | None = None
    wake_at: float | None = None
    """When a run that sleeps (``ctx.sleep``, a ``recv`` timeout) is due."""
    wake_on: str | None = None
    """What wakes it sooner: ``msg:TOPIC`` or ``event:RUN:KEY``."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def done(self) -> bool:
        """Whether this turn of the run is over (succeeded, failed, cancelled or waiting)."""
        return self.status not in ("running", "queued")

    def unwrap(self) -> Any:
        """The output; else ``StepFailed`` (a step failed), ``WaitingForReview`` (the run
        waits for a reviewer) or ``RunError`` (failed otherwise, cancelled, still going)."""
        if self.status == "succeeded":
            return self.output
        if self.status == "waiting" and self.wake_at is not None:
            raise RunError(
                f"run {self.run_id} sleeps until {self.wake_at:.3f} (epoch seconds); it goes on "
                "then (a worker, or POST /api/runs/RUN/resume)",
                run_id=self.run_id,
            )
        if self.status == "waiting":
            raise WaitingForReview(
                f"run {self.run_id} waits for review of {', '.join(self.waiting_steps) or '?'}; "
                f"approve it (POST /api/reviews/{self.run_id}/approve) and it goes on",
                run_id=self.run_id,
                steps=tuple(self.waiting_steps),
            )
        if self.status == "failed" and self.failed_step is not None:
            raise StepFailed(
                f"run {self.run_id} failed at step '{self.failed_step}': {self.error}",
                run_id=self.run_id,
                step=self.failed_step,
            )
        raise RunError(
            f"run {self.run_id} {self.status}: {self.error or ''}".rstrip(": "), run_id=self.run_id
        )


class RunInfoOut(_Out):
    """RUN_INFO: a run as ``GET /api/runs`` lists it."""

    tenant: str
    run_id: str
    flow: str
    source: str | None = None
    status: RunStatus
    created: float
    updated: float
    parent_run_id: str | None = None
    replay_from: str | None = None
    inputs: Any = None
    output: Any = None
    error: str | None = None
    waiting_step: str | None = None
    events: int
    head_hash: str
    fingerprint: str
    queue: str | None = None
    claims: int = 0
    wake_at: float | None = None
    wake_on: str | None = None


class StepRow(_Out):
    """STEP: one step execution in a run's timeline."""

    step: str
    top: str
    status: str
    attempts: int
    started: float | None = None
    ended: float | None = None
    ms: float | None = None
    error: str | None = None
    cached: bool = False
    copied_from: str | None = None
    review: str | None = None


class RunDetail(RunInfoOut):
    """``GET /api/runs/{RUN}``: RUN_INFO, the step timeline, the steps waiting for review."""

    steps: list[StepRow] = Field(default_factory=list)
    waiting_steps: list[str] = Field(default_factory=list)
    driven_here: bool = False


class EventOut(_Out):
    """EVENT: one event of a run's log (``payload`` decoded from its JSON)."""

    run_id: str
    seq: int
    ts: float
    kind: str
    step: str | None = None
    attempt: int = 0
    data: dict[str, Any] | None = None
    payload: Any = None
    prev_hash: str
    hash: str


class EventPage(_Out):
    """``GET /api/runs/{RUN}/events``."""

    run_id: str
    status: RunStatus
    events: list[EventOut]
    more: bool = False


class ReviewItem(_Out):
    """REVIEW: what a waiting run asks its reviewers about one step."""

    run_id: str
    flow: str
    step: str
    reason: str = ""
    evidence: Any = None
    requested_at: float
    waiting_s: float
    proposal: Any = None
    grant: str | None = None


class VerifyProblem(_Out):
    run_id: str
    seq: int | None = None
    what: str
    detail: str = ""


class TreeHeadOut(_Out):
    """The Merkle tree over the log as verify found it (``None`` in a tenant's view)."""

    origin: str | None = None
    size: int
    root: str | None = None


class CheckpointCheck(_Out):
    """How one signed checkpoint fared: signed by the trusted key, and the log extends it."""

    ok: bool
    size: int
    root: str
    time: str
    key_id: str
    detail: str
    consistency_proof: list[str] = Field(default_factory=list)


class VerifyReport(_Out):
    """``GET /api/audit/verify``: the hash chains recomputed."""

    run: str | None = None
    ok: bool
    runs: int
    events: int
    seconds: float
    events_per_second: float | None = None
    heads_digest: str | None = None
    tree: TreeHeadOut | None = None
    checkpoints: list[CheckpointCheck] = Field(default_factory=list)
    problems: list[VerifyProblem] = Field(default_factory=list)


class ModelStatsRow(_Out):
    model: str
    calls: int
    errors: int
    error_rate: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    ts: float | None = None  # in a series: the bucket's start


class ModelStats(_Out):
    """``GET /api/stats/models``."""

    since: str | None = None
    cutoff_ts: float | None = None
    runs: int
    models: list[ModelStatsRow]
    bucket_s: float | None = None
    series: list[ModelStatsRow] = Field(default_factory=list)


class QualityStats(_Out):
    """``GET /api/stats/quality`` (rows as ``erpoz stats quality --json`` gives them)."""

    since: str | None = None
    cutoff_ts: float | None = None
    runs: int = 0
    checks: int = 0
    alerts_recorded: int = 0
    window: int = 0
    threshold: float = 0.0
    min_samples: int = 0
    by: list[str] = Field(default_factory=list)
    unmatched_alerts: int = 0
    rows: list[dict[str, Any]] = Field(default_factory=list)
    bucket_s: float | None = None
    series: list[dict[str, Any]] = Field(default_factory=list)


class FlowInput(_Out):
    name: str
    type: str
    required: bool
    default: Any = None


class FlowInfo(_Out):
    """An exposed flow (``GET /api/flows``): its inputs and graph."""

    name: str
    source: str | None = None
    fingerprint: str
    inputs: list[FlowInput]
    output_type: str
    graph: dict[str, Any]

    @property
    def delivery(self) -> frozenset[str]:
        """The steps whose output becomes the flow's result."""
        return frozenset(n["id"] for n in self.graph.get("nodes", ()) if n.get("delivery"))


class WhoAmI(_Out):
    tenant: str
    name: str
    auth: bool


class Health(_Out):
    status: str
    version: str


# --- what GET /api/runs/{RUN}/follow sends (server-sent events) ------------------------------
class LiveEvent(_Out):
    """``event: live``: an event the moment it was appended, before it is durable."""

    run_id: str
    kind: str
    step: str | None = None
    attempt: int = 0
    data: dict[str, Any] | None = None


class TokenChunk(_Out):
    """``event: token``: a piece of model output a step streams (``ctx.models.stream``). Not an
    event of the log: the log records the step's output once it is done. ``delivery``: the
    step's output becomes the flow's result (``None`` when the server cannot tell)."""

    run_id: str
    step: str
    attempt: int = 1
    text: str
    delivery: bool | None = None


class EndOfTurn(_Out):
    """``event: end``: the run succeeded, failed, was cancelled or waits for review."""

    run_id: str
    status: RunStatus
