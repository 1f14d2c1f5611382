"""Views of a run's event log shared by the CLI (``erpoz runs show``), the server (the run's
timeline in the runs API and the dashboard) and the demo: one row per step, in the order the
steps first appeared."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..store import Event

STEP_STATUS = {
    "step_started": "running",
    "step_succeeded": "succeeded",
    "step_failed": "failed",
    "step_retried": "retrying",
    "step_skipped": "skipped",
    "review_requested": "waiting",
}
"""The status a step shows after each kind of event."""

_ENDS_STEP = frozenset({"step_succeeded", "step_failed", "step_skipped"})


def top_step(step_id: str) -> str:
    """The top-level step of an execution id (``answer[3]``, ``revise#2``, ``sub/inner``: their
    first name), as :func:`erpoz.engine.top_step` says, without importing the engine."""
    for sep in ("/", "[", "#"):
        if sep in step_id:
            step_id = step_id.split(sep, 1)[0]
    return step_id


def timeline(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Each step execution of a run, in the order it first appeared: status, first start and
    end (epoch seconds), duration, attempts, error, and how it ended (cached, copied,
    reviewed)."""
    steps: dict[str, dict[str, Any]] = {}
    status_after = STEP_STATUS.get
    for e in events:
        step, kind = e.step, e.kind
        if step is None:
            continue
        status = status_after(kind)
        if status is None and kind != "review_resolved":
            continue
        row = steps.get(step)
        if row is None:
            row = steps[step] = {
                "step": step,
                "top": top_step(step),
                "status": "pending",
                "attempts": 0,
                "started": None,
                "ended": None,
                "ms": None,
                "error": None,
                "cached": False,
                "copied_from": None,
                "review": None,
            }
        if status is not None:
            row["status"] = status
        if kind == "step_started":
            if e.attempt > row["attempts"]:
                row["attempts"] = e.attempt
            row["ended"] = row["ms"] = None
            if row["started"] is None:
                row["started"] = e.ts
        elif kind in _ENDS_STEP:
            _ended(row, e)
        elif kind == "step_retried":
            row["error"] = (e.data or {}).get("error")
        elif kind == "review_requested":
            row["ended"] = None
            row["review"] = "requested"
            row["attempts"] = max(row["attempts"], e.attempt)
        else:  # review_resolved
            row["review"] = (e.data or {}).get("decision")
    return list(steps.values())


def _ended(row: dict[str, Any], e: Event) -> None:
    """A step execution's end (succeeded, failed or skipped) in its row."""
    data = e.data or {}
    row["ended"] = e.ts
    if row["started"] is None:
        row["started"] = e.ts
    if e.kind == "step_succeeded":
        ms = data.get("ms")
        row["ms"] = ms if isinstance(ms, int | float) else None
        row["cached"] = bool(data.get("cached"))
        row["copied_from"] = data.get("copied_from")
        if data.get("reviewed"):
            row["review"] = data["reviewed"]
        row["error"] = None
    elif e.kind == "step_failed":
        row["error"] = data.get("error")
    if row["ms"] is None and row["started"] is not None:
        row["ms"] = round((e.ts - row["started"]) * 1000.0, 3)


def step_story(events: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per step, in the order they started: status, duration and what happened in
    it (model calls and costs, routing decisions and why, guard findings, reviews)."""
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        step = e.step
        if step is None:
            continue
        row = rows.setdefault(
            step, {"step": step, "status": "running", "ms": None, "cost_usd": 0.0, "notes": []}
        )
        d = e.data or {}
        notes: list[str] = row["notes"]
        if e.kind == "step_succeeded":
            row["status"], row["ms"] = "succeeded", d.get("ms")
        elif e.kind == "step_failed":
            row["status"] = "failed"
            notes.append(f"failed: {d.get('error', '')}")
        elif e.kind == "review_requested":
            row["status"] = "waiting for review"
            notes.append(f"review: {d.get('reason', '')}")
        elif e.kind == "model_called":
            row["cost_usd"] += float(d.get("cost_usd") or 0.0)
            tokens = f", {d['lines']} lines read" if d.get("lines") is not None else ""
            if d.get("input_tokens") is not None:
                tokens = f", {d.get('input_tokens')}→{d.get('output_tokens')} tokens"
            notes.append(
                f"model {d.get('model')} ({d.get('kind', 'chat')}): {d.get('status')}, "
                f"{d.get('latency_ms')} ms{tokens}"
            )
        elif e.kind == "route_decided":
            notes.append(
                f"router {d.get('router')} → {d.get('winner')}: {d.get('reason', '')}".rstrip()
            )
        elif e.kind == "guard_decided" and d.get("action") != "allow":
            acted: dict[str, set[str]] = {}
            for f in d.get("findings", []):
                acted.setdefault(f["action"], set()).add(f["data"])
            said = "; ".join(f"{a} {', '.join(sorted(k))}" for a, k in sorted(acted.items()))
            rule = f" (rule: {d.get('rule')})" if d.get("action") != "log" else ""
            notes.append(f"guard at {d.get('checkpoint')}: {said}{rule}")
        elif e.kind == "retrieved":
            hits = ", ".join(f"{h['id']} {h['score']:.3f}" for h in d.get("hits", []))
            notes.append(f"retrieved ({d.get('mode')}): {hits}")
        elif e.kind == "answer_validated":
            notes.append(f"grounded {d.get('grounded')}, confidence {_num(d.get('confidence'))}")
    return list(rows.values())


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"
