"""OpenTelemetry traces derived from the event log: nothing is traced separately.

A run's log already holds everything a trace shows: when each step execution started and
ended, which models and tools it called (with tokens, cost and latency), what the guards
decided, when it waited for a person. :func:`spans_of` reads a run's events and gives one
span per

- run (the root: ``invoke_workflow FLOW``),
- step execution attempt (``step SID``; map items, loop iterations and sub-flow steps are
  children of their step),
- model call (``chat MODEL``, ``embeddings MODEL``, …; a ``model_called`` event's start is its
  time less its latency),
- tool call (``execute_tool TOOL``),
- guard decision (``guard CHECKPOINT``),
- review (``review SID``: from the request to the decision),

with the OpenTelemetry GenAI semantic conventions' attributes (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``, …) and
``erpoz.*`` ones (run id, step, cost, route, guard action). Other events (route and policy
decisions, retries, truncations, reused replies and results, memory writes, your own
``ctx.emit`` kinds) are span events; the effects journal's intents and recorded replies are
left out (the calls have their spans).

Ids are derived from the run id, so exporting a run again gives the same trace: the trace id is
the first 16 bytes of the SHA-256 of the run id, a span id the first 8 bytes of the SHA-256 of
the run id and the span's key (``run``, ``step:SEQ``, ``event:SEQ``, ``review:SEQ``: the
sequence number of the event that opened it).

No prompt, answer, tool argument, output or guard-found text goes into a span: only what the
events record about them (sizes, counts, names, scores).

:func:`spans_of` is plain Python; :func:`export_run`, :func:`to_readable`,
:func:`otlp_exporter` and :class:`RunTraceExporter` need ``opentelemetry-sdk`` (and, for OTLP,
``opentelemetry-exporter-otlp-proto-http``): ``pip install 'erpoz[server]'``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine import top_step
from ..store import Event, Store

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "RunTraceExporter",
    "SpanData",
    "SpanEvent",
    "export_run",
    "otlp_endpoint",
    "otlp_exporter",
    "span_id_of",
    "spans_of",
    "to_readable",
    "trace_id_of",
]

log = logging.getLogger("erpoz.observe")

AttrValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float]

#: ``model_called`` ``kind`` → ``gen_ai.operation.name`` (a chat or stream call has no kind).
OPERATION = {"chat": "chat", "embed": "embeddings", "ocr": "ocr", "classify": "classify"}

_RUN_END = {"run_succeeded": "succeeded", "run_failed": "failed", "run_cancelled": "cancelled"}
_TEXT_LIMIT = 256
_NESTED = re.compile(r"^(.+?)(?:\[\d+\]|#\d+)$")


def trace_id_of(run_id: str) -> int:
    """The trace id of a run: the first 16 bytes of SHA-256(run id), as an integer."""
    value = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big")
    return value or 1


def span_id_of(run_id: str, key: str) -> int:
    """The id of the span ``key`` of a run: the first 8 bytes of SHA-256(run id, key)."""
    value = int.from_bytes(hashlib.sha256(f"{run_id}\x1f{key}".encode()).digest()[:8], "big")
    return value or 1


@dataclass(slots=True)
class SpanEvent:
    """A point in time inside a span (an event of the log that is not a span of its own)."""

    name: str
    ts: float
    attributes: dict[str, AttrValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ts": self.ts, "attributes": dict(self.attributes)}


@dataclass(slots=True)
class SpanData:
    """One span of a run's trace, as read from its events (times in Unix seconds)."""

    name: str
    key: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start: float
    end: float
    kind: str = "internal"  # "internal" | "client"
    status: str = "unset"  # "unset" | "error"
    status_message: str | None = None
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    links: list[tuple[int, int, dict[str, AttrValue]]] = field(default_factory=list)
    open: bool = True
    """Not ended in the log yet (a run still going or waiting); ``end`` is then the time of
    the run's last event."""

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "trace_id": f"{self.trace_id:032x}",
            "span_id": f"{self.span_id:016x}",
            "parent_id": None if self.parent_id is None else f"{self.parent_id:016x}",
            "start": self.start,
            "end": self.end,
            "duration_ms": round(self.duration_ms, 3),
            "kind": self.kind,
            "status": self.status,
            "status_message": self.status_message,
            "open": self.open,
            "attributes": dict(self.attributes),
            "events": [e.to_json() for e in self.events],
            "links": [
                {"trace_id": f"{t:032x}", "span_id": f"{s:016x}", "attributes": dict(a)}
                for t, s, a in self.links
            ],
        }


def _attr(value: Any) -> AttrValue | None:
    """An attribute value: scalars as they are, lists of one scalar type, else JSON text."""
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _TEXT_LIMIT else value[: _TEXT_LIMIT - 1] + "…"
    if isinstance(value, list | tuple) and value:
        for tp in (bool, int, float, str):
            if all(type(v) is tp for v in value):
                return [_attr(v) for v in value]  # type: ignore[return-value]
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return _attr(text)


def _attrs(data: Mapping[str, Any], prefix: str = "", skip: Iterable[str] = ()) -> dict[str, Any]:
    skipped = set(skip)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in skipped:
            continue
        a = _attr(v)
        if a is not None:
            out[prefix + k] = a
    return out


def _num(value: Any) -> float:
    """A number recorded in an event (0 when it is missing or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _items(value: Any) -> list[Any]:
    """A list recorded in an event (empty when it is missing or not a list)."""
    return value if isinstance(value, list) else []


def _error_type(error: Any) -> str:
    """``"ModelError: down"`` → ``"ModelError"``: for logs recorded before events carried the
    error's ``type`` (newer ones do, and that is read first)."""
    text = str(error or "")
    head, sep, _ = text.partition(":")
    return head.strip() if sep and head.strip().isidentifier() else "error"


def _parent_step(sid: str) -> str | None:
    """The step execution a nested one belongs to: ``a[2]`` → ``a``, ``a#3`` → ``a``,
    ``sub/b`` → ``sub``; ``None`` for a top-level step."""
    m = _NESTED.match(sid)
    if m:
        return m.group(1)
    if "/" in sid:
        return sid.rsplit("/", 1)[0]
    return None


class _Builder:
    """Folds one run's events, in order, into spans."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.trace_id = trace_id_of(run_id)
        self.spans: list[SpanData] = []
        self.run: SpanData | None = None
        self.open_steps: dict[str, SpanData] = {}
        self.last_step: dict[str, SpanData] = {}
        self.reviews: dict[str, SpanData] = {}
        self.model_spans: dict[str, list[SpanData]] = {}  # step → its model-call spans
        self.routes: dict[str, list[dict[str, Any]]] = {}  # step → pre-call decisions waiting
        self.last_ts = 0.0
        self.cost = 0.0
        self.tokens_in = 0
        self.tokens_out = 0
        self.calls = 0

    # --- spans ---------------------------------------------------------------------------
    def new(
        self,
        key: str,
        name: str,
        parent: SpanData | None,
        start: float,
        end: float | None = None,
        attributes: Mapping[str, AttrValue] | None = None,
    ) -> SpanData:
        if parent is not None:
            start = max(start, parent.start)  # a child never starts before its parent
        span = SpanData(
            name=name,
            key=key,
            trace_id=self.trace_id,
            span_id=span_id_of(self.run_id, key),
            parent_id=None if parent is None else parent.span_id,
            start=start,
            end=start if end is None else max(end, start),
            attributes={"erpoz.run.id": self.run_id},
            open=end is None,
        )
        if attributes:
            span.attributes.update(attributes)
        self.spans.append(span)
        return span

    def step_span(self, e: Event, sid: str) -> SpanData:
        """A span of one execution (attempt) of step ``sid``, opened by event ``e``."""
        return self.new(
            f"step:{e.seq}",
            f"step {sid}",
            self.step_parent(sid),
            e.ts,
            None,
            {"erpoz.step": sid, "erpoz.step.top": top_step(sid), "erpoz.step.attempt": e.attempt},
        )

    def close(self, span: SpanData, ts: float, error: str | None = None) -> None:
        span.end = max(ts, span.start)
        span.open = False
        if error is not None:
            span.status = "error"
            span.status_message = error

    def root(self, e: Event) -> SpanData:
        if self.run is None:
            flow = str(e.data.get("flow", "")) if e.kind == "run_started" else ""
            self.run = self.new(
                "run",
                f"invoke_workflow {flow}".strip(),
                None,
                e.ts,
                None,
                {"gen_ai.operation.name": "invoke_workflow"},
            )
            if flow:
                self.run.attributes["gen_ai.workflow.name"] = flow
                self.run.attributes["erpoz.flow"] = flow
        return self.run

    def step_parent(self, sid: str) -> SpanData:
        parent = _parent_step(sid)
        while parent is not None:
            span = self.open_steps.get(parent) or self.last_step.get(parent)
            if span is not None:
                return span
            parent = _parent_step(parent)
        assert self.run is not None
        return self.run

    def owner(self, sid: str | None) -> SpanData:
        """The span an event of step ``sid`` belongs to: its open execution, else its last."""
        assert self.run is not None
        if sid is None:
            return self.run
        return self.open_steps.get(sid) or self.last_step.get(sid) or self.step_parent(sid)

    def end_turn(self, ts: float, outcome: str, error: str | None = None) -> None:
        """Close the step spans a turn of the run left open (paused, failed, interrupted)."""
        for span in list(self.open_steps.values()):
            span.attributes["erpoz.step.outcome"] = outcome
            self.close(span, ts, error)
        self.open_steps.clear()

    # --- the fold ------------------------------------------------------------------------
    def add(self, e: Event) -> None:
        run = self.root(e)
        kind, data, sid = e.kind, e.data or {}, e.step
        if kind in _HANDLED:  # the kinds that open or close spans
            getattr(self, "on_" + kind)(e, data, sid, run)
        elif kind in _JOURNAL:
            pass
        elif sid is not None:
            self.owner(sid).events.append(SpanEvent(kind, e.ts, _attrs(data)))
        else:
            run.events.append(SpanEvent(kind, e.ts, _attrs(data)))
        self.last_ts = max(self.last_ts, e.ts)

    def on_run_started(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        tags = data.get("tags") or {}
        a = run.attributes
        if isinstance(tags, dict) and tags.get("tenant"):
            a["erpoz.tenant"] = str(tags["tenant"])
        for k in ("source", "fingerprint", "parent_run_id", "replay_from"):
            if data.get(k):
                a[f"erpoz.run.{k}"] = str(data[k])
        parent_run = data.get("parent_run_id")
        if parent_run:
            link: dict[str, AttrValue] = {
                "erpoz.link": "replay_of",
                "erpoz.replay_from": str(data.get("replay_from")),
            }
            run.links.append(
                (trace_id_of(str(parent_run)), span_id_of(str(parent_run), "run"), link)
            )

    def _run_end(self, e: Event, status: str, error: str | None, run: SpanData) -> None:
        if status == "failed":
            self.end_turn(e.ts, "stopped", "stopped: the run failed")
        else:
            self.end_turn(e.ts, "cancelled" if status == "cancelled" else "unknown")
        for review in self.reviews.values():
            review.attributes["erpoz.review.decision"] = "none"
            self.close(review, e.ts)
        self.reviews.clear()
        run.attributes["erpoz.run.status"] = status
        if error is not None:
            run.attributes["erpoz.run.error"] = _attr(error) or ""
        self.close(run, e.ts, error)

    def on_run_succeeded(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        if "steps_run" in data:
            run.attributes["erpoz.run.steps_run"] = int(_num(data["steps_run"]))
        self._run_end(e, "succeeded", None, run)

    def on_run_failed(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        if data.get("step"):
            run.attributes["erpoz.run.failed_step"] = str(data["step"])
        self._run_end(e, "failed", str(data.get("error") or "failed"), run)

    def on_run_cancelled(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        run.events.append(SpanEvent("run_cancelled", e.ts, _attrs(data)))
        self._run_end(e, "cancelled", None, run)

    def on_run_waiting(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        self.end_turn(e.ts, "paused")
        run.attributes["erpoz.run.status"] = "waiting"
        run.events.append(SpanEvent("run_waiting", e.ts, _attrs(data)))

    def on_run_resumed(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        # steps still open here were in flight when the process stopped (crash, Ctrl-C)
        self.end_turn(self.last_ts, "interrupted", "interrupted: the run's process stopped")
        run.attributes["erpoz.run.status"] = "running"
        run.events.append(SpanEvent("run_resumed", e.ts, _attrs(data)))

    def on_step_started(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        assert sid is not None
        old = self.open_steps.pop(sid, None)
        if old is not None:
            old.attributes["erpoz.step.outcome"] = "restarted"
            self.close(old, e.ts)
        span = self.step_span(e, sid)
        span.attributes.update(_attrs(data, "erpoz.step."))
        self.open_steps[sid] = self.last_step[sid] = span

    def on_step_succeeded(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        assert sid is not None
        span = self.open_steps.pop(sid, None)
        if span is None and "reviewed" in data and sid in self.last_step:
            # the decision of a review is the output: the review span says so
            self.last_step[sid].events.append(SpanEvent("step_succeeded", e.ts, _attrs(data)))
            return
        if span is None:  # cached or copied from an earlier run: no execution, a point
            span = self.last_step[sid] = self.step_span(e, sid)
        span.attributes.update(_attrs(data, "erpoz.step."))
        span.attributes["erpoz.step.outcome"] = "succeeded"
        self.close(span, e.ts)

    def _step_error(self, e: Event, data: Mapping[str, Any], sid: str, outcome: str) -> None:
        span = self.open_steps.pop(sid, None)
        if span is None:
            span = self.last_step[sid] = self.step_span(e, sid)
        error = str(data.get("error") or outcome)
        span.attributes["erpoz.step.outcome"] = outcome
        span.attributes["error.type"] = str(data.get("type") or _error_type(error))
        if "delay_s" in data:
            span.attributes["erpoz.step.retry_delay_s"] = _num(data["delay_s"])
        exc: dict[str, AttrValue] = {
            "exception.type": str(span.attributes["error.type"]),
            "exception.message": _attr(error) or "",
        }
        if data.get("traceback"):
            exc["exception.stacktrace"] = str(data["traceback"])
        span.events.append(SpanEvent("exception", e.ts, exc))
        self.close(span, e.ts, error)

    def on_step_failed(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        self._step_error(e, data, sid, "failed")

    def on_step_retried(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        self._step_error(e, data, sid, "retried")

    def on_step_skipped(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        attrs: dict[str, AttrValue] = {"erpoz.step": sid or ""}
        attrs.update(_attrs(data))
        (self.step_parent(sid) if sid else run).events.append(
            SpanEvent("step_skipped", e.ts, attrs)
        )

    def on_review_requested(
        self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData
    ) -> None:
        assert sid is not None
        step = self.open_steps.pop(sid, None)
        if step is not None:
            step.attributes["erpoz.step.outcome"] = "review_requested"
            self.close(step, e.ts)
        parent = step or self.owner(sid)
        evidence = data.get("evidence")
        findings = evidence.get("findings") if isinstance(evidence, dict) else None
        review = self.new(
            f"review:{e.seq}",
            f"review {sid}",
            parent,
            e.ts,
            None,
            {
                "erpoz.step": sid,
                "erpoz.review.reason": _attr(data.get("reason")) or "",
                "erpoz.review.permission": bool(data.get("grant")),
            },
        )
        if isinstance(findings, list):
            review.attributes["erpoz.review.findings"] = len(findings)
        self.reviews[sid] = review

    def on_review_resolved(
        self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData
    ) -> None:
        review = self.reviews.pop(sid, None) if sid is not None else None
        if review is None:
            self.owner(sid).events.append(SpanEvent("review_resolved", e.ts, _attrs(data)))
            return
        for k in ("decision", "reviewer"):
            if data.get(k):
                review.attributes[f"erpoz.review.{k}"] = str(data[k])
        self.close(review, e.ts)

    def on_model_called(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        parent = self.owner(sid)
        model = str(data.get("model", ""))
        op = OPERATION.get(str(data.get("kind", "chat")), str(data.get("kind", "chat")))
        latency = _num(data.get("latency_ms")) / 1000.0
        span = self.new(f"event:{e.seq}", f"{op} {model}".strip(), parent, e.ts - latency, e.ts)
        span.kind = "client"
        a = span.attributes
        a["gen_ai.operation.name"] = op
        a["gen_ai.request.model"] = model
        if data.get("answered_by"):
            a["gen_ai.response.model"] = str(data["answered_by"])
        if data.get("provider"):
            a["gen_ai.provider.name"] = a["gen_ai.system"] = str(data["provider"])
        for k in ("input_tokens", "output_tokens"):
            if data.get(k) is not None:
                a[f"gen_ai.usage.{k}"] = int(_num(data[k]))
        cost = _num(data.get("cost_usd"))
        a["erpoz.cost_usd"] = cost
        if sid is not None:
            a["erpoz.step"] = sid
        status = str(data.get("status", "ok"))
        a["erpoz.model.status"] = status
        a.update(
            _attrs(
                data,
                "erpoz.model.",
                skip=(
                    "model",
                    "kind",
                    "provider",
                    "answered_by",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "status",
                    "error",
                ),
            )
        )
        if status != "ok":
            error = str(data.get("error") or status)
            a["error.type"] = str(data.get("type") or _error_type(error))
            self.close(span, e.ts, error)
        self.calls += 1
        self.cost += cost
        self.tokens_in += int(_num(data.get("input_tokens")))
        self.tokens_out += int(_num(data.get("output_tokens")))
        if sid is not None:
            self.model_spans.setdefault(sid, []).append(span)
            self._claim_pre(sid, [span])

    # routers: which model calls a route decision led to ------------------------------------
    def on_route_decided(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        self.owner(sid).events.append(
            SpanEvent("route_decided", e.ts, _attrs(data, skip=("candidates",)))
        )
        if sid is None:
            return
        router = str(data.get("router", ""))
        if data.get("kind") in ("fallback", "cascade"):  # recorded after the calls it made
            tried = {
                str(c.get("model"))
                for c in _items(data.get("candidates"))
                if isinstance(c, dict) and c.get("status") not in ("not_tried", "cooling")
            }
            claimed: list[SpanData] = []
            for span in reversed(self.model_spans.get(sid, [])):
                if not tried:
                    break
                head = _route_head(span)
                if head in tried:
                    tried.discard(head)
                    _route_push(span, router, winner=head == data.get("winner"))
                    claimed.append(span)
            self._claim_pre(sid, claimed)
        elif data.get("winner"):  # decided before the call: the next call of the winner
            self.routes.setdefault(sid, []).append(dict(data))

    def _claim_pre(self, sid: str, spans: list[SpanData]) -> None:
        pending = self.routes.get(sid)
        if not pending:
            return
        for span in spans:
            moved = True
            while moved:
                moved = False
                head = _route_head(span)
                for d in pending:
                    if d.get("winner") == head:
                        _route_push(span, str(d.get("router", "")), winner=True)
                        pending.remove(d)
                        moved = True
                        break

    def on_tool_called(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        name = str(data.get("tool", ""))
        ms = _num(data.get("ms")) / 1000.0
        span = self.new(
            f"event:{e.seq}",
            f"execute_tool {name}".strip(),
            self.owner(sid),
            e.ts - ms,
            e.ts,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
        )
        if sid is not None:
            span.attributes["erpoz.step"] = sid
        status = str(data.get("status", "ok"))
        span.attributes["erpoz.tool.status"] = status
        span.attributes.update(
            _attrs(data, "erpoz.tool.", skip=("tool", "arguments", "status", "error"))
        )
        if status != "ok":
            error = str(data.get("error") or status)
            span.attributes["error.type"] = str(data.get("type") or _error_type(error))
            self.close(span, e.ts, error)

    def on_guard_decided(self, e: Event, data: Mapping[str, Any], sid: Any, run: SpanData) -> None:
        checkpoint = str(data.get("checkpoint", ""))
        ms = _num(data.get("ms")) / 1000.0
        findings = [f for f in _items(data.get("findings")) if isinstance(f, dict)]
        span = self.new(
            f"event:{e.seq}",
            f"guard {checkpoint}".strip(),
            self.owner(sid),
            e.ts - ms,
            e.ts,
            {
                "erpoz.guard.checkpoint": checkpoint,
                "erpoz.guard.action": str(data.get("action", "")),
                "erpoz.guard.passed": bool(data.get("passed", True)),
                "erpoz.guard.findings": len(findings),
            },
        )
        a = span.attributes
        if data.get("rule"):
            a["erpoz.guard.rule"] = str(data["rule"])
        classes = sorted({str(f.get("data")) for f in findings if f.get("data")})
        if classes:
            a["erpoz.guard.data_classes"] = classes
        for k in ("model", "tool"):
            if data.get(k):
                a[f"erpoz.guard.{k}"] = str(data[k])
        scores = data.get("scores")
        if isinstance(scores, dict):
            for guard, score in scores.items():
                if isinstance(score, int | float):
                    a[f"erpoz.guard.score.{guard}"] = float(score)
        if sid is not None:
            a["erpoz.step"] = sid

    def finish(self) -> list[SpanData]:
        if self.run is not None:
            a = self.run.attributes
            a["erpoz.cost_usd"] = round(self.cost, 9)
            a["erpoz.model_calls"] = self.calls
            a["gen_ai.usage.input_tokens"] = self.tokens_in
            a["gen_ai.usage.output_tokens"] = self.tokens_out
            a.setdefault("erpoz.run.status", "running")
        for span in self.spans:
            if span.open:
                span.end = max(span.start, self.last_ts)
        return self.spans


_HANDLED = frozenset(
    name[3:] for name in vars(_Builder) if name.startswith("on_") and callable(vars(_Builder)[name])
)

#: The effects journal's own records: the model and tool spans already show those calls (a tool
#: call made again after a crash carries ``erpoz.tool.repeat``).
_JOURNAL = frozenset({"tool_intent", "model_replied"})


def _route_head(span: SpanData) -> str:
    route = span.attributes.get("erpoz.route")
    if isinstance(route, list) and route:
        return str(route[0])
    return str(span.attributes.get("gen_ai.request.model", ""))


def _route_push(span: SpanData, router: str, *, winner: bool) -> None:
    route = span.attributes.get("erpoz.route")
    routers = [str(r) for r in route] if isinstance(route, list) else []
    span.attributes["erpoz.route"] = [router, *routers]
    if not routers:
        span.attributes["erpoz.route.chosen"] = winner


def spans_of(events: Sequence[Event]) -> list[SpanData]:
    """The spans of one run's events (in log order), parents before their children.

    Spans that have not ended in the log (a run still going or waiting for review, a step in
    flight, an open review) have ``open=True`` and end at the run's last event."""
    if not events:
        return []
    builder = _Builder(events[0].run_id)
    for e in events:
        if e.run_id != builder.run_id:
            raise ValueError(f"events of two runs: {builder.run_id} and {e.run_id}")
        builder.add(e)
    return builder.finish()


# --- OpenTelemetry ---------------------------------------------------------------------------
def _resource() -> Resource:
    from opentelemetry.sdk.resources import Resource

    from ..version import __version__

    attributes: dict[str, str] = {"service.version": __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "erpoz"
    return Resource.create(attributes)


def to_readable(spans: Iterable[SpanData], resource: Resource | None = None) -> list[ReadableSpan]:
    """The SDK's ``ReadableSpan`` objects for ``spans``, with their own ids and times (what
    any ``SpanExporter`` takes)."""
    from opentelemetry.sdk.trace import Event as OtelEvent
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from ..version import __version__

    res = resource if resource is not None else _resource()
    scope = InstrumentationScope("erpoz", __version__)
    flags = TraceFlags(TraceFlags.SAMPLED)
    out: list[ReadableSpan] = []
    for s in spans:
        context = SpanContext(s.trace_id, s.span_id, is_remote=False, trace_flags=flags)
        parent = (
            None
            if s.parent_id is None
            else SpanContext(s.trace_id, s.parent_id, is_remote=False, trace_flags=flags)
        )
        attributes: dict[str, AttrValue] = dict(s.attributes)
        if s.open:
            attributes["erpoz.span.open"] = True
        status = (
            Status(StatusCode.ERROR, s.status_message)
            if s.status == "error"
            else Status(StatusCode.UNSET)
        )
        out.append(
            ReadableSpan(
                name=s.name,
                context=context,
                parent=parent,
                resource=res,
                attributes=attributes,
                events=[
                    OtelEvent(ev.name, dict(ev.attributes), timestamp=_ns(ev.ts)) for ev in s.events
                ],
                links=[
                    Link(SpanContext(t, i, is_remote=True, trace_flags=flags), dict(a))
                    for t, i, a in s.links
                ],
                kind=SpanKind.CLIENT if s.kind == "client" else SpanKind.INTERNAL,
                status=status,
                start_time=_ns(s.start),
                end_time=_ns(s.end),
                instrumentation_scope=scope,
            )
        )
    return out


def _ns(ts: float) -> int:
    return round(ts * 1e9)


def otlp_endpoint(url: str | None = None) -> str | None:
    """Where OTLP/HTTP traces go: ``url`` (a collector's base URL, ``/v1/traces`` added unless
    given), else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (as is), else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (plus ``/v1/traces``); ``None`` when none is set, or when
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``."""
    if url:
        url = url.rstrip("/")
        return url if url.endswith("/v1/traces") else url + "/v1/traces"
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    signal = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return signal
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
    return base + "/v1/traces" if base else None


def otlp_exporter(url: str | None = None, *, timeout: float | None = None) -> SpanExporter | None:
    """An OTLP/HTTP (protobuf) span exporter to :func:`otlp_endpoint` (``url``, else the
    ``OTEL_EXPORTER_OTLP_*`` environment), or ``None`` when nothing is configured. Headers,
    compression and certificates come from the usual ``OTEL_EXPORTER_OTLP_*`` variables."""
    endpoint = otlp_endpoint(url)
    if endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


async def export_run(
    store: Store,
    run_id: str,
    exporter: SpanExporter,
    *,
    open_spans: bool = True,
) -> list[SpanData]:
    """Read a run's events, build its spans and hand them to ``exporter`` (in a worker thread:
    exporters block). ``open_spans=False`` leaves out spans that have not ended yet. Returns
    the spans exported; ``RuntimeError`` if the exporter reports a failure, ``LookupError`` for
    an unknown run."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    info = await store.get_run(run_id)
    if info is None:
        raise LookupError(f"no run {run_id!r} in {store.url}")
    spans = spans_of(await store.events(info.run_id))
    if not open_spans:
        spans = [s for s in spans if not s.open]
    if spans:
        result = await asyncio.to_thread(exporter.export, to_readable(spans))
        if result is not SpanExportResult.SUCCESS:
            raise RuntimeError(f"the span exporter could not export run {info.run_id}")
    return spans


_TURN_ENDS = frozenset({"run_succeeded", "run_failed", "run_waiting", "run_cancelled"})
_RUNS_KEPT = 10_000


class RunTraceExporter:
    """Exports runs' spans as their turns end (succeed, fail, wait, are cancelled), in batches,
    off the request path.

    Register :meth:`listen` as an engine listener (``Engine(listeners=[t.listen])`` or
    ``engine.listeners.append(t.listen)``). A span is exported once, when it has ended: a run
    that waits for review exports what has ended so far; when it is resumed and ends, the
    rest (the run's root span is exported when the run is over).

    :meth:`listen` only notes the run (no task, no I/O, no span built on the request's path);
    one worker task, every ``delay_s`` seconds or as soon as ``max_batch`` runs wait, reads
    those runs' events and hands their spans to a worker thread, which builds the OTLP spans
    and exports all of them in one call (one request to the collector), as OpenTelemetry's
    ``BatchSpanProcessor`` does. Failures are logged and counted, never raised into a run. At
    most ``max_pending`` runs wait; beyond that a run's turn is dropped (counted in
    ``dropped``). ``await drain()`` exports what waits now; ``close()`` shuts the exporter
    down."""

    def __init__(
        self,
        store: Store,
        exporter: SpanExporter,
        *,
        max_pending: int = 10_000,
        max_batch: int = 256,
        delay_s: float = 1.0,
    ) -> None:
        self.store = store
        self.exporter = exporter
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.delay_s = delay_s
        self._pending: OrderedDict[str, tuple[str, int]] = OrderedDict()  # run: (kind, tries)
        self._sent: OrderedDict[str, set[int]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="erpoz-otlp")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self.exported = 0
        self.exports = 0
        self.failures = 0
        self.dropped = 0

    def listen(
        self,
        run_id: str,
        kind: str,
        step: str | None,
        attempt: int,
        data: Mapping[str, Any] | None,
    ) -> None:
        if kind not in _TURN_ENDS:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("run %s: no event loop to export its trace from", run_id)
            return
        if run_id not in self._pending and len(self._pending) >= self.max_pending:
            self.dropped += 1
            log.warning(
                "run %s: trace export dropped (%d runs waiting)", run_id, len(self._pending)
            )
            return
        self._pending[run_id] = (kind, 0)
        wake, idle = self._started(loop)
        idle.clear()
        if len(self._pending) >= self.max_batch:
            wake.set()

    def _started(self, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Event, asyncio.Event]:
        """The worker of ``loop`` (started on first use, again on another loop)."""
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
            self._worker = loop.create_task(self._work(), name="erpoz-otlp-batches")
        assert self._wake is not None and self._idle is not None
        return self._wake, self._idle

    async def _work(self) -> None:
        assert self._wake is not None and self._idle is not None
        wake, idle = self._wake, self._idle
        while True:
            if not self._pending:
                idle.set()
            try:
                async with asyncio.timeout(self.delay_s):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            due = len(self._pending)  # what waits now; a run put back waits for the next round
            while due > 0 and self._pending:
                batch: list[tuple[str, str, int]] = []
                while self._pending and len(batch) < min(due, self.max_batch):
                    run_id, (kind, tries) = self._pending.popitem(last=False)
                    batch.append((run_id, kind, tries))
                due -= len(batch)
                await self._export(batch)

    async def _export(self, batch: list[tuple[str, str, int]]) -> None:
        turns: list[tuple[str, str, list[Event], set[int]]] = []
        for run_id, kind, tries in batch:
            try:
                events = await self.store.events(run_id)
            except Exception as exc:
                self.failures += 1
                log.warning("run %s: trace export failed: %s", run_id, exc)
                continue
            ended = any(e.kind == kind for e in reversed(events))
            if not ended and tries < 3 and run_id not in self._pending:
                self._pending[run_id] = (kind, tries + 1)  # not committed yet: next round
                continue
            turns.append((run_id, kind, events, self._sent.pop(run_id, set())))
        if not turns:
            return
        loop = asyncio.get_running_loop()
        try:
            sent = await loop.run_in_executor(self._pool, self._send, turns)
        except Exception as exc:
            self.failures += 1
            log.warning("trace export of %d runs failed: %s", len(turns), exc or type(exc).__name__)
            sent = {run_id: done for run_id, _, _, done in turns}
        for run_id, kind, _, _ in turns:
            if kind == "run_waiting":  # more spans come when the run goes on
                self._sent[run_id] = sent[run_id]
        while len(self._sent) > _RUNS_KEPT:
            self._sent.popitem(last=False)

    def _send(self, turns: list[tuple[str, str, list[Event], set[int]]]) -> dict[str, set[int]]:
        """In the worker thread: the spans of every turn that ended and were not sent yet,
        exported in one call; the span ids now sent, by run."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        fresh: list[SpanData] = []
        sent: dict[str, set[int]] = {}
        for run_id, _, events, done in turns:
            new = [s for s in spans_of(events) if not s.open and s.span_id not in done]
            fresh.extend(new)
            sent[run_id] = done | {s.span_id for s in new}
        if fresh:
            result = self.exporter.export(to_readable(fresh))
            if result is not SpanExportResult.SUCCESS:
                raise RuntimeError("the exporter reported a failure")
            self.exports += 1
            self.exported += len(fresh)
        return sent

    async def drain(self) -> None:
        """Export the runs that wait now (and wait for exports under way)."""
        if self._worker is None or self._wake is None or self._idle is None:
            return
        if self._loop is not asyncio.get_running_loop():
            return
        while self._pending or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()

    def close(self) -> None:
        """Stop the worker and shut the exporter down (runs still waiting are abandoned)."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.exporter.shutdown()
