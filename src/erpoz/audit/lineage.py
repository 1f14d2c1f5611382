"""Lineage: which inputs, models, tools and decisions produced a step's output.

:func:`lineage` reads one run's log and answers for one step: its executions (map items, loop
iterations and sub-flow steps belong to their step), the steps upstream of it, and for each of
them the hash and size of the recorded output, the model calls, routing decisions, tool calls,
policy, guard and review decisions recorded while it ran, plus the run's inputs (names and
hashes) and tags.

Upstream comes from the flow's graph when the flow can be loaded again from the source the run
recorded (as ``erpoz runs resume`` does) and still has the fingerprint that ran; otherwise it
falls back to the recorded order — every step that finished before the step started — and says
so (``graph == "recorded order"`` and ``graph_note``). Values do not appear in a lineage: inputs,
outputs and tool arguments are hashed, guard findings named by kind only, model errors and
reviewers' comments left out (``erpoz events`` and ``erpoz audit export`` have them); a review
request keeps the reason the step gave.

Each step also carries its **provenance** (see :mod:`erpoz.provenance`): ``untrusted`` when
untrusted content entered it (a tool's result, a document handed to an agent: ``sources``) or
when a step it depends on is untrusted (``from_steps``: the label propagates down the graph);
``trusted`` when it read only the run's inputs and configuration. Calls that containment
stopped or let through with untrusted arguments are in ``contained``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..engine import top_step
from ..errors import ErpozError, RunError
from ..flow import Flow, Plan
from ..store import Event, RunInfo, Store
from ..store import kinds as ev

__all__ = ["GRAPH_FLOW", "GRAPH_RECORDED", "Lineage", "StepLineage", "UnknownStep", "lineage"]

GRAPH_FLOW = "flow"
GRAPH_RECORDED = "recorded order"

_MAX_COPY_HOPS = 16  # replays of replays: follow copied_from at most this far


class UnknownStep(ErpozError):
    """The step asked about is neither in the run's flow nor in its log; ``steps`` lists the
    steps that are."""

    def __init__(self, message: str, *, steps: Sequence[str]) -> None:
        super().__init__(message)
        self.steps = tuple(steps)


@dataclass(frozen=True, slots=True)
class StepLineage:
    """What is recorded about one top-level step of a run."""

    step: str
    status: str  # succeeded | failed | skipped | waiting | running | not run
    deps: tuple[str, ...] = ()  # direct dependencies in the flow graph (empty: recorded order)
    executions: tuple[dict[str, Any], ...] = ()
    output_sha256: str | None = None
    output_bytes: int | None = None
    cached: bool = False
    copied_from: str | None = None  # a replay copied this step from that run
    evidence_run: str | None = None  # the run whose events the records below come from
    models: tuple[dict[str, Any], ...] = ()
    routes: tuple[dict[str, Any], ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    policy: tuple[dict[str, Any], ...] = ()
    guards: tuple[dict[str, Any], ...] = ()
    escalations: tuple[dict[str, Any], ...] = ()
    reviews: tuple[dict[str, Any], ...] = ()
    memory: tuple[dict[str, Any], ...] = ()
    label: str = "trusted"  # trusted | untrusted (provenance)
    sources: tuple[str, ...] = ()  # where the untrusted content it read came from
    from_steps: tuple[str, ...] = ()  # untrusted steps upstream that it depends on
    contained: tuple[dict[str, Any], ...] = ()  # calls checked for untrusted arguments

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": self.status,
            "deps": list(self.deps),
            "executions": [dict(x) for x in self.executions],
            "output": None
            if self.output_sha256 is None
            else {"sha256": self.output_sha256, "bytes": self.output_bytes},
            "cached": self.cached,
            "copied_from": self.copied_from,
            "evidence_run": self.evidence_run,
            "models": [dict(x) for x in self.models],
            "routes": [dict(x) for x in self.routes],
            "tools": [dict(x) for x in self.tools],
            "policy": [dict(x) for x in self.policy],
            "guards": [dict(x) for x in self.guards],
            "escalations": [dict(x) for x in self.escalations],
            "reviews": [dict(x) for x in self.reviews],
            "memory": [dict(x) for x in self.memory],
            "provenance": {
                "label": self.label,
                "sources": list(self.sources),
                "from_steps": list(self.from_steps),
                "contained": [dict(x) for x in self.contained],
            },
        }


@dataclass(frozen=True, slots=True)
class Lineage:
    """A step of a run and everything upstream of it that its output came from."""

    run_id: str
    flow: str
    source: str | None
    fingerprint: str
    run_status: str
    graph: str  # GRAPH_FLOW | GRAPH_RECORDED
    graph_note: str | None
    step: StepLineage
    upstream: tuple[StepLineage, ...]
    inputs: tuple[dict[str, Any], ...]
    inputs_sha256: str
    tags: Mapping[str, str] = field(default_factory=dict)
    execution: str | None = None  # set when one execution (``answer[3]``) was asked about

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "run_status": self.run_status,
            "graph": self.graph,
            "graph_note": self.graph_note,
            "execution": self.execution,
            "inputs": [dict(i) for i in self.inputs],
            "inputs_sha256": self.inputs_sha256,
            "tags": dict(self.tags),
            "step": self.step.to_json(),
            "upstream": [s.to_json() for s in self.upstream],
        }


# --- the entry point -------------------------------------------------------------------------
async def lineage(
    store: Store, run_id: str, step: str, *, flow: Flow | Plan | None = None
) -> Lineage:
    """The lineage of ``step`` in run ``run_id`` (a unique prefix works).

    ``step`` is a top-level step id, or one recorded execution of it (``answer[3]``,
    ``revise#2``, ``sub/inner``) to narrow the step's own records to that execution. ``flow``
    gives the graph when the run recorded no loadable source. Raises :class:`RunError` for an
    unknown run and :class:`UnknownStep` for a step the run does not have.
    """
    info = await store.get_run(run_id)
    if info is None:
        raise RunError(f"no run {run_id!r} in {store.url}", run_id=run_id)
    events = await store.events(info.run_id)
    plan, note = _graph_for(info, flow)
    groups = _by_step(events)
    target = top_step(step)
    execution = None if step == target else step
    known = list(plan.by_id) if plan is not None else list(groups)
    if target not in known or (
        execution is not None and execution not in _execution_ids(groups.get(target, []))
    ):
        raise UnknownStep(
            f"run {info.run_id} has no step {step!r} (steps: {', '.join(known) or 'none'})",
            steps=known,
        )
    if plan is not None:
        upstream_ids, deps = _plan_upstream(plan, target)
    else:
        upstream_ids, deps = _recorded_upstream(events, groups, target), {}
    loader = _Loader(store, {info.run_id: events})
    step_lineage = await _step_lineage(
        loader, info.run_id, target, groups.get(target, []), deps.get(target, ()), execution
    )
    upstream = [
        await _step_lineage(loader, info.run_id, sid, groups.get(sid, []), deps.get(sid, ()))
        for sid in upstream_ids
    ]
    upstream, step_lineage = _propagate(upstream, step_lineage, by_graph=plan is not None)
    inputs, inputs_sha = _inputs(info.inputs)
    return Lineage(
        run_id=info.run_id,
        flow=info.flow,
        source=info.source,
        fingerprint=info.fingerprint,
        run_status=info.status,
        graph=GRAPH_FLOW if plan is not None else GRAPH_RECORDED,
        graph_note=note,
        step=step_lineage,
        upstream=tuple(upstream),
        inputs=inputs,
        inputs_sha256=inputs_sha,
        tags=_tags(events),
        execution=execution,
    )


# --- the graph -------------------------------------------------------------------------------
def _graph_for(info: RunInfo, flow: Flow | Plan | None) -> tuple[Plan | None, str | None]:
    """The run's plan, loaded as ``Engine._plan_for`` does, or None and why not."""
    if flow is not None:
        where = "the flow given"
        try:
            plan = flow.compile() if isinstance(flow, Flow) else flow
        except Exception as exc:
            return None, f"{where} does not compile ({type(exc).__name__}: {exc})"
    elif not info.source:
        return None, "the run was started from a flow object and recorded no source"
    else:
        where = info.source
        try:
            from ..flow import load_flow

            plan = load_flow(info.source).compile()
        except Exception as exc:  # user code runs on import: anything may go wrong
            return None, f"cannot load the flow from {info.source} ({type(exc).__name__}: {exc})"
    if plan.fingerprint != info.fingerprint:
        return None, (
            f"{where} has changed since the run (fingerprint {plan.fingerprint}, the run's "
            f"{info.fingerprint})"
        )
    return plan, None


def _plan_upstream(plan: Plan, target: str) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """Transitive dependencies of ``target`` in dependency (plan) order, and each step's
    direct dependencies."""
    start = plan.node(target).index
    seen: set[int] = set()
    todo = list(plan.nodes[start].deps)
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(plan.nodes[i].deps)
    deps = {n.id: tuple(plan.nodes[d].id for d in n.deps) for n in plan.nodes}
    return [plan.nodes[i].id for i in sorted(seen)], deps


def _recorded_upstream(
    events: Sequence[Event], groups: Mapping[str, list[Event]], target: str
) -> list[str]:
    """Without the flow: every step that finished before ``target`` started, in the order
    they finished."""
    mine = groups.get(target, [])
    started = min((e.seq for e in mine), default=None)
    if started is None:
        return []
    finished: dict[str, int] = {}
    for e in events:
        if (
            e.step is not None
            and e.step == top_step(e.step)
            and e.step != target
            and e.kind in (ev.STEP_SUCCEEDED, ev.STEP_SKIPPED)
            and e.seq < started
        ):
            finished[e.step] = e.seq
    return sorted(finished, key=finished.__getitem__)


# --- one step's records ----------------------------------------------------------------------
def _by_step(events: Sequence[Event]) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for e in events:
        if e.step is not None:
            groups.setdefault(top_step(e.step), []).append(e)
    return groups


def _execution_ids(events: Sequence[Event]) -> list[str]:
    ids: dict[str, None] = {}
    for e in events:
        if e.step is not None:
            ids.setdefault(e.step, None)
    return list(ids)


def _belongs(step_id: str | None, execution: str | None) -> bool:
    if execution is None:
        return True
    if step_id is None:
        return False
    return step_id == execution or (
        step_id.startswith(execution) and step_id[len(execution)] in "/[#"
    )


class _Loader:
    """Events of the runs a lineage reads (the run, and the runs a replay copied from)."""

    def __init__(self, store: Store, known: dict[str, list[Event]]) -> None:
        self.store = store
        self.known = known

    async def events(self, run_id: str) -> list[Event]:
        if run_id not in self.known:
            self.known[run_id] = await self.store.events(run_id)
        return self.known[run_id]


async def _step_lineage(
    loader: _Loader,
    run_id: str,
    step: str,
    events: list[Event],
    deps: tuple[str, ...],
    execution: str | None = None,
) -> StepLineage:
    status, final = _status(step, events)
    copied_from = None
    evidence_run, evidence = run_id, events
    if final is not None and final.data.get("copied_from"):
        copied_from = str(final.data["copied_from"])
        source, hops = copied_from, 0
        while hops < _MAX_COPY_HOPS:  # the records are in the run the step was copied from
            found = [e for e in await loader.events(source) if e.step and top_step(e.step) == step]
            _, src_final = _status(step, found)
            evidence_run, evidence = source, found
            parent = src_final.data.get("copied_from") if src_final is not None else None
            if not parent:
                break
            source, hops = str(parent), hops + 1
    scoped = [e for e in evidence if _belongs(e.step, execution)]
    done = final if final is not None and final.kind == ev.STEP_SUCCEEDED else None
    if execution is not None:
        own = [e for e in events if e.step == execution and e.kind == ev.STEP_SUCCEEDED]
        done = own[-1] if own else None
    raw = (done.payload or "null").encode() if done is not None else None
    sources, contained = _provenance(scoped)
    rec = _records(scoped)
    return StepLineage(
        step=step,
        status=status,
        deps=deps,
        executions=tuple(_executions(e for e in events if _belongs(e.step, execution))),
        output_sha256=hashlib.sha256(raw).hexdigest() if raw is not None else None,
        output_bytes=len(raw) if raw is not None else None,
        cached=bool(final is not None and final.data.get("cached")),
        copied_from=copied_from,
        evidence_run=evidence_run if events else None,
        sources=sources,
        contained=contained,
        models=rec["models"],
        routes=rec["routes"],
        tools=rec["tools"],
        policy=rec["policy"],
        guards=rec["guards"],
        escalations=rec["escalations"],
        reviews=rec["reviews"],
        memory=rec["memory"],
    )


def _propagate(
    upstream: list[StepLineage], target: StepLineage, *, by_graph: bool
) -> tuple[list[StepLineage], StepLineage]:
    """Labels down the graph: a step that depends on an untrusted step is untrusted (without
    the graph, the target depends on every step recorded before it)."""
    untrusted: set[str] = set()
    done: list[StepLineage] = []
    for s in upstream:  # dependency order: a step's deps come before it
        s = _labelled(s, tuple(d for d in s.deps if d in untrusted))
        if s.label == "untrusted":
            untrusted.add(s.step)
        done.append(s)
    deps = target.deps if by_graph else tuple(s.step for s in done)
    return done, _labelled(target, tuple(d for d in deps if d in untrusted))


def _labelled(s: StepLineage, from_steps: tuple[str, ...]) -> StepLineage:
    label = "untrusted" if s.sources or from_steps else "trusted"
    return replace(s, label=label, from_steps=from_steps)


def _status(step: str, events: Sequence[Event]) -> tuple[str, Event | None]:
    """The status of a top-level step, and the event that ended it (if it did)."""
    if not events:
        return "not run", None
    status, final = "running", None
    for e in events:
        if e.step != step:
            continue
        if e.kind == ev.STEP_SUCCEEDED:
            status, final = "succeeded", e
        elif e.kind == ev.STEP_SKIPPED:
            status, final = "skipped", e
        elif e.kind == ev.STEP_FAILED:
            status, final = "failed", e
        elif e.kind in (ev.STEP_STARTED, ev.STEP_RETRIED, ev.REVIEW_REQUESTED):
            status, final = "running", None
    if final is None:  # the step or one of its executions may wait for a decision
        pending: set[str | None] = set()
        for e in events:
            if e.kind == ev.REVIEW_REQUESTED:
                pending.add(e.step)
            elif e.kind in (ev.REVIEW_RESOLVED, ev.STEP_SUCCEEDED, ev.STEP_FAILED):
                pending.discard(e.step)
        if pending:
            status = "waiting"
    return status, final


def _executions(events: Any) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        row = rows.setdefault(e.step, {"execution": e.step, "status": "running", "attempts": 0})
        row["attempts"] = max(row["attempts"], e.attempt)
        if e.kind == ev.STEP_SUCCEEDED:
            row["status"] = "succeeded"
        elif e.kind == ev.STEP_SKIPPED:
            row["status"] = "skipped"
        elif e.kind == ev.STEP_FAILED:
            row["status"] = "failed"
        elif e.kind == ev.REVIEW_REQUESTED:
            row["status"] = "waiting"
    return list(rows.values())


def _records(events: Sequence[Event]) -> dict[str, tuple[dict[str, Any], ...]]:
    """Model calls, routes, tool calls and decisions, without any recorded text value."""
    out: dict[str, list[dict[str, Any]]] = {
        "models": [],
        "routes": [],
        "tools": [],
        "policy": [],
        "guards": [],
        "escalations": [],
        "reviews": [],
        "memory": [],
    }
    for e in events:
        d = e.data or {}
        where = {"execution": e.step, "attempt": e.attempt, "seq": e.seq}
        if e.kind == "model_called":
            out["models"].append(
                _pick(
                    d,
                    where,
                    "model",
                    "kind",
                    "status",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "latency_ms",
                )
            )
        elif e.kind == "route_decided":
            out["routes"].append(_pick(d, where, "router", "winner", "reason"))
        elif e.kind == "tool_called":
            row = _pick(
                d, where, "tool", "status", "result_bytes", "ms", "idempotency_key", "repeat"
            )
            args = d.get("arguments")
            if isinstance(args, Mapping):
                row["arguments"] = sorted(str(k) for k in args)
                row["arguments_sha256"] = _sha(args)
            out["tools"].append(row)
        elif e.kind == "policy_decided":
            out["policy"].append(
                _pick(d, where, "resource", "action", "rule", "approved_by_review")
            )
        elif e.kind == "guard_decided":
            row = _pick(d, where, "checkpoint", "action", "rule", "passed", "model", "tool")
            findings = d.get("findings")
            row["findings"] = sorted(
                {
                    str(f.get("data"))
                    for f in (findings if isinstance(findings, list) else [])
                    if isinstance(f, Mapping) and f.get("data")
                }
            )
            scores = d.get("scores")
            if isinstance(scores, Mapping):
                row["scores"] = {str(k): v for k, v in scores.items()}
            out["guards"].append(row)
        elif e.kind == "memory_written":
            out["memory"].append(
                _pick(
                    d,
                    where,
                    "op",
                    "session",
                    "seq",
                    "role",
                    "covers",
                    "turns",
                    "source",
                    "found",
                    "files",
                    "idempotency_key",
                )
            )
        elif e.kind == "guard_escalated":
            out["escalations"].append(_pick(d, where, "from", "to", "rule", "reasks"))
        elif e.kind == ev.REVIEW_REQUESTED:
            out["reviews"].append({"event": "requested", **_pick(d, where, "reason", "grant")})
        elif e.kind == ev.REVIEW_RESOLVED:
            out["reviews"].append(
                {"event": "resolved", **_pick(d, where, "decision", "reviewer", "grant")}
            )
    return {k: tuple(v) for k, v in out.items()}


def _provenance(events: Sequence[Event]) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    """Where untrusted content entered a step, and the calls checked for untrusted arguments."""
    sources: dict[str, None] = {}
    contained: list[dict[str, Any]] = []
    for e in events:
        d = e.data or {}
        if e.kind == "tool_called" and d.get("result_label") == "untrusted":
            sources.setdefault(f"tool:{d.get('tool')}", None)
        elif e.kind == "provenance_labeled":
            for src in d.get("sources") or ():
                sources.setdefault(str(src), None)
        elif e.kind == "policy_decided" and isinstance(d.get("provenance"), Mapping):
            prov = d["provenance"]
            row = _pick(d, {"execution": e.step, "seq": e.seq}, "resource", "action", "rule")
            row["untrusted"] = sorted(
                str(k) for k, v in (prov.get("arguments") or {}).items() if v == "untrusted"
            )
            row["blocked"] = list(prov.get("blocked") or ())
            contained.append(row)
    return tuple(sources), tuple(contained)


def _pick(data: Mapping[str, Any], where: dict[str, Any], *keys: str) -> dict[str, Any]:
    row = dict(where)
    for k in keys:
        if data.get(k) is not None:
            row[k] = data[k]
    return row


def _sha(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _inputs(inputs_json: str) -> tuple[tuple[dict[str, Any], ...], str]:
    """Each run input's name, the SHA-256 of its JSON and its size; and the hash of all."""
    try:
        values = json.loads(inputs_json or "{}")
    except ValueError:
        values = {}
    rows = []
    for name, value in values.items() if isinstance(values, dict) else []:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        rows.append(
            {
                "name": name,
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "bytes": len(text.encode()),
            }
        )
    return tuple(rows), hashlib.sha256((inputs_json or "{}").encode()).hexdigest()


def _tags(events: Sequence[Event]) -> dict[str, str]:
    if events and events[0].kind == ev.RUN_STARTED:
        tags = (events[0].data or {}).get("tags")
        if isinstance(tags, Mapping):
            return {str(k): str(v) for k, v in tags.items()}
    return {}
