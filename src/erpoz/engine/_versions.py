"""Which plan a run goes on with when the flow's code changed while it was in flight.

A run records, when it starts, its flow's fingerprint (the shape of its graph and the versions
of its steps), its ``version`` (``Flow(version=…)``) and the ``patches`` the flow declared.
When it is resumed (after a crash, a review, by another worker), the engine picks:

1. the plan it started with, when this code still has it: the flow itself (unchanged), or one
   of ``Flow(previous=[…])``, older versions kept to finish their runs;
2. else the new plan, when the change is declared safe: the run's version is this flow's, or
   is in ``Flow(compatible=[…])`` — the steps tell old runs from new ones with
   ``ctx.patched("name")`` (true only for runs started with that patch declared);
3. a flow with no version at all goes on on the new plan, as before (the change recorded);
4. otherwise a ``RunError`` saying which version the run needs and how to resume it.
"""

from __future__ import annotations

from typing import Any

from ..errors import RunError
from ..flow import Plan
from ..store import Event

SAME, PREVIOUS, COMPATIBLE, CHANGED = "same", "previous", "compatible", "changed"


def choose_plan(plan: Plan, events: list[Event], run_id: str) -> tuple[Plan, str]:
    """The plan ``run_id`` goes on with, and why (``same``, ``previous``, ``compatible``,
    ``changed``); ``RunError`` when no plan of this code may run it."""
    started = events[0].data if events else {}
    fingerprint = started.get("fingerprint")
    version = started.get("version")
    if fingerprint == plan.fingerprint:
        return plan, SAME
    for old in plan.previous:
        if old.fingerprint == fingerprint:
            return old, PREVIOUS
    if version is None and plan.version is None:
        return plan, CHANGED
    if version is not None and (version == plan.version or version in plan.compatible):
        return plan, COMPATIBLE
    kept = ", ".join(p.version or p.fingerprint[:12] for p in plan.previous) or "none"
    raise RunError(
        f"run {run_id} started on flow '{plan.name}' version {version or 'unversioned'} "
        f"(fingerprint {str(fingerprint)[:12]}), and this code has version "
        f"{plan.version or 'unversioned'} ({plan.fingerprint[:12]}) and keeps no plan of it "
        f"(previous: {kept}): resume it where that version's code runs, keep that version "
        f"(Flow(previous=[…])), or declare the change safe "
        f"(Flow(version='{plan.version or '2'}', compatible=['{version or '1'}']))",
        run_id=run_id,
    )


def patches_of(events: list[Event]) -> frozenset[str]:
    """The patches a run started with (recorded in its ``run_started`` event)."""
    if not events:
        return frozenset()
    return frozenset(str(p) for p in events[0].data.get("patches", ()))


def version_report(run_id: str, events: list[Event], plan: Plan | None) -> dict[str, Any]:
    """What a run started on (its flow's fingerprint, version and patches), the plans it was
    resumed on so far (its ``run_resumed`` events), and — given this code's ``plan`` — the plan
    it would go on with now and why, or the error that says it cannot (``goes_on``: ``None``
    without a plan). What ``erpoz runs version`` and ``GET /api/runs/{id}/version`` show."""
    started = events[0].data if events else {}
    report: dict[str, Any] = {
        "run_id": run_id,
        "flow": started.get("flow"),
        "fingerprint": started.get("fingerprint"),
        "version": started.get("version"),
        "patches": sorted(str(p) for p in started.get("patches", ())),
        "resumed": [
            {
                "seq": e.seq,
                "ts": e.ts,
                "plan": e.data.get("plan"),
                "fingerprint_changed": bool(e.data.get("fingerprint_changed")),
            }
            for e in events
            if e.kind == "run_resumed"
        ],
        "goes_on": None,
    }
    if plan is None:
        return report
    here: dict[str, Any] = {
        "code_version": plan.version,
        "code_fingerprint": plan.fingerprint,
        "previous": [p.version or p.fingerprint for p in plan.previous],
        "compatible": sorted(plan.compatible),
    }
    try:
        chosen, how = choose_plan(plan, events, run_id)
    except RunError as exc:
        here.update(plan=None, version=None, fingerprint=None, error=str(exc))
    else:
        here.update(plan=how, version=chosen.version, fingerprint=chosen.fingerprint, error=None)
    report["goes_on"] = here
    return report
