"""``erpoz runs diff A B``: what differs between two runs, read from their event logs: inputs,
each step (status, attempts, time, output), the models called (calls, tokens, cost), the
output and the total cost. Made for comparing a run with its replay (``erpoz runs replay``)
or two runs of a changed flow. Mounted through ``lazy.py`` under ``erpoz runs``."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..engine import top_step
from ..errors import RunError, StoreError
from ..observe.stats import model_stats
from ..store import Event, RunInfo, Store
from ._console import EXIT_RUN, EXIT_STORE, JsonOpt, StoreOpt, fail, open_or_fail, out

__all__ = ["diff_runs", "runs_diff"]

_ENDS = {"step_succeeded": "succeeded", "step_failed": "failed", "step_skipped": "skipped"}
_SHOWN = 60  # characters of an output shown in the table


def _steps(events: Sequence[Event]) -> dict[str, dict[str, Any]]:
    """Per top-level step: status, attempts, ms, and its output (JSON text, top-level steps
    only; ``None`` for a step that failed, was skipped or has items)."""
    steps: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.step is None or not e.kind.startswith(("step_", "review_")):
            continue
        top = top_step(e.step)
        row = steps.setdefault(
            top, {"status": "pending", "attempts": 0, "ms": None, "output": None, "copied": False}
        )
        if e.step != top:  # a map item, loop iteration or sub-flow step: counted in its step
            continue
        if e.kind == "step_started":
            row["attempts"] = max(row["attempts"], e.attempt)
            row["status"] = "running"
        elif e.kind == "review_requested":
            row["status"] = "waiting"
        elif e.kind in _ENDS:
            row["status"] = _ENDS[e.kind]
            if e.kind == "step_succeeded":
                row["ms"] = e.data.get("ms")
                row["output"] = e.payload
                row["copied"] = bool(e.data.get("copied_from"))
    return steps


def _same(a: str | None, b: str | None) -> bool:
    """Whether two recorded JSON texts hold the same value (whatever their spacing)."""
    if a is None or b is None:
        return a is b
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return a == b


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def _shown(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _cost(events: Sequence[Event]) -> float:
    return round(
        sum(float(e.data.get("cost_usd") or 0.0) for e in events if e.kind == "model_called"), 9
    )


def diff_runs(
    a: RunInfo, a_events: Sequence[Event], b: RunInfo, b_events: Sequence[Event]
) -> dict[str, Any]:
    """The differences between two runs, as JSON data (``same``: nothing differs but ids,
    times and hashes)."""
    inputs_a, inputs_b = json.loads(a.inputs), json.loads(b.inputs)
    inputs = [
        {"name": k, "a": inputs_a.get(k), "b": inputs_b.get(k)}
        for k in sorted(set(inputs_a) | set(inputs_b))
        if inputs_a.get(k) != inputs_b.get(k) or (k in inputs_a) != (k in inputs_b)
    ]
    steps_a, steps_b = _steps(a_events), _steps(b_events)
    order = list(steps_a) + [s for s in steps_b if s not in steps_a]
    steps = []
    for sid in order:
        sa, sb = steps_a.get(sid), steps_b.get(sid)
        same_output = sa is not None and sb is not None and _same(sa["output"], sb["output"])
        steps.append(
            {
                "step": sid,
                "a": None if sa is None else {**sa, "output": _digest(sa["output"])},
                "b": None if sb is None else {**sb, "output": _digest(sb["output"])},
                "same_status": sa is not None and sb is not None and sa["status"] == sb["status"],
                "same_output": same_output,
            }
        )
    by_model: dict[str, dict[str, Any]] = {}
    for side, events in (("a", a_events), ("b", b_events)):
        for row in model_stats([e.data for e in events if e.kind == "model_called"]):
            by_model.setdefault(row["model"], {"model": row["model"], "a": None, "b": None})
            by_model[row["model"]][side] = {
                k: row[k] for k in ("calls", "errors", "input_tokens", "output_tokens", "cost_usd")
            }
    models = [by_model[m] for m in sorted(by_model)]
    cost_a, cost_b = _cost(a_events), _cost(b_events)
    same_output = _same(a.output, b.output)
    same = (
        not inputs
        and a.flow == b.flow
        and a.status == b.status
        and same_output
        and all(s["same_status"] and s["same_output"] for s in steps)
    )
    return {
        "a": _run(a, cost_a),
        "b": _run(b, cost_b),
        "same": same,
        "flow_changed": a.fingerprint != b.fingerprint,
        "inputs": inputs,
        "steps": steps,
        "models": models,
        "output": {"same": same_output, "a": _shown(a.output), "b": _shown(b.output)},
        "cost_usd": {"a": cost_a, "b": cost_b, "delta": round(cost_b - cost_a, 9)},
    }


def _run(info: RunInfo, cost: float) -> dict[str, Any]:
    return {
        "run_id": info.run_id,
        "flow": info.flow,
        "fingerprint": info.fingerprint,
        "status": info.status,
        "error": info.error,
        "parent_run_id": info.parent_run_id,
        "replay_from": info.replay_from,
        "cost_usd": cost,
    }


async def _both(store: Store, a: str, b: str) -> tuple[RunInfo, list[Event], RunInfo, list[Event]]:
    try:
        found = []
        for ref in (a, b):
            info = await store.get_run(ref)
            if info is None:
                raise RunError(f"no run {ref!r} in {store.url}")
            found.append((info, await store.events(info.run_id)))
        return found[0][0], found[0][1], found[1][0], found[1][1]
    finally:
        await store.close()


def _brief(value: Any) -> str:
    text = "–" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _print(d: Mapping[str, Any]) -> None:
    a, b = d["a"], d["b"]
    out.print(
        f"A [bold]{a['run_id']}[/] {a['status']} · B [bold]{b['run_id']}[/] {b['status']} · "
        f"flow {escape(a['flow'])}"
        + ("" if a["flow"] == b["flow"] else f" / {escape(b['flow'])}")
        + (" (changed between them)" if d["flow_changed"] else ""),
        highlight=False,
    )
    if b["parent_run_id"] == a["run_id"]:
        out.print(f"B replays A from step {b['replay_from']}", highlight=False)
    if d["same"]:
        out.print("[green]same[/]: inputs, steps, outputs and status alike", highlight=False)
    out.print("inputs: the same" if not d["inputs"] else "inputs:", highlight=False)
    for i in d["inputs"]:
        out.print(f"  {escape(i['name'])}: {escape(_brief(i['a']))} → {escape(_brief(i['b']))}")
    table = Table(title="steps", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("step", "A", "B", "ms A", "ms B", "output"):
        table.add_column(col, overflow="fold")
    for s in d["steps"]:
        sa, sb = s["a"] or {}, s["b"] or {}

        def status(x: Mapping[str, Any]) -> str:
            if not x:
                return "–"
            tries = f" ×{x['attempts']}" if x.get("attempts", 0) > 1 else ""
            return f"{x['status']}{' (copied)' if x.get('copied') else ''}{tries}"

        output = "same" if s["same_output"] else "[yellow]differs[/]"
        if not sa or not sb or (sa.get("output") is None and sb.get("output") is None):
            output = "–" if s["same_output"] else output
        table.add_row(
            escape(s["step"]),
            status(sa),
            status(sb),
            "" if sa.get("ms") is None else f"{sa['ms']:.1f}",
            "" if sb.get("ms") is None else f"{sb['ms']:.1f}",
            output,
        )
    out.print(table)
    if d["models"]:
        models = Table(title="models", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("model", "calls A", "calls B", "tokens A", "tokens B", "cost A $", "cost B $"):
            models.add_column(col, justify="left" if col == "model" else "right")
        for m in d["models"]:
            ma, mb = m["a"] or {}, m["b"] or {}

            def tokens(x: Mapping[str, Any]) -> str:
                return f"{x['input_tokens']:,}/{x['output_tokens']:,}" if x else "–"

            models.add_row(
                escape(m["model"]),
                str(ma.get("calls", "–")),
                str(mb.get("calls", "–")),
                tokens(ma),
                tokens(mb),
                f"{ma['cost_usd']:.6f}" if ma else "–",
                f"{mb['cost_usd']:.6f}" if mb else "–",
            )
        out.print(models)
    o = d["output"]
    if o["same"]:
        out.print(f"output: the same ({escape(_brief(o['a']))})", highlight=False)
    else:
        out.print(f"output A: {escape(_brief(o['a']))}", highlight=False)
        out.print(f"output B: {escape(_brief(o['b']))}", highlight=False)
    c = d["cost_usd"]
    out.print(f"cost: A ${c['a']:.6f} · B ${c['b']:.6f} · B−A {c['delta']:+.6f}", highlight=False)


def runs_diff(
    a: Annotated[str, typer.Argument(metavar="A", help="A run id (a unique prefix works).")],
    b: Annotated[str, typer.Argument(metavar="B", help="The run to compare it with.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two runs: inputs, each step (status, attempts, time, output), the models called
    (calls, tokens, cost), the output and the total cost.

    Exit 0 whether or not they differ (--json says "same"); 5 when a run does not exist.

    [dim]Example:[/] erpoz runs diff RUN REPLAY --json
    """
    st = open_or_fail(store)
    try:
        ra, ea, rb, eb = asyncio.run(_both(st, a, b))
    except RunError as exc:
        fail(str(exc), EXIT_RUN)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    d = diff_runs(ra, ea, rb, eb)
    if as_json:
        out.print_json(data=d)
        return
    _print(d)
