"""Quality statistics as a view over the event log.

Every ``guard_decided`` event records a score per guard (1.0 = clean). Read back in time order,
they give per model (or tool, or ``-``), step and guard: how many checks, how many passed (a
score of 1.0), the mean score, and the rolling pass rate over the last ``window`` checks — with
the moments it crossed below ``threshold``. The crossings follow the live monitor
(:class:`erpoz.guards.QualityMonitor`): once at least ``min_samples`` checks are in the window,
an alert fires when the rolling rate drops below the threshold and re-arms when it is back at
or above it. The ``quality_alert`` events the live monitor recorded are counted too; they may
differ from the computed crossings, since the live monitor counts per process and per step
execution (``answer[3]``), and this view across runs and per top-level step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine import top_step
from ..store import Event, Store

__all__ = [
    "DIMENSIONS",
    "GuardCheck",
    "QualityReport",
    "QualityRow",
    "guard_checks",
    "quality_events",
    "quality_stats",
    "store_quality",
]

DIMENSIONS = ("model", "step", "guard")
"""What rows can be grouped by: the model (or tool, or ``-``), the top-level step, the guard."""

QUALITY_KINDS = frozenset({"guard_decided", "quality_alert"})


@dataclass(frozen=True, slots=True)
class GuardCheck:
    """One guard's score in one ``guard_decided`` event."""

    ts: float
    run_id: str
    seq: int
    model: str  # the model or tool checked, "-" for neither (delivery)
    step: str  # top-level step
    guard: str
    score: float
    checkpoint: str

    @property
    def passed(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True, slots=True)
class QualityRow:
    """The checks of one group (model × step × guard, or what ``by`` keeps of it)."""

    model: str | None
    step: str | None
    guard: str | None
    checkpoints: tuple[str, ...]
    checks: int
    passes: int
    mean_score: float
    rolling_pass_rate: float
    rolling_window: int
    below_threshold: bool
    crossings: tuple[dict[str, Any], ...]
    alerts_recorded: int
    first_ts: float
    last_ts: float

    @property
    def pass_rate(self) -> float:
        return self.passes / self.checks if self.checks else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "step": self.step,
            "guard": self.guard,
            "checkpoints": list(self.checkpoints),
            "checks": self.checks,
            "passes": self.passes,
            "pass_rate": round(self.pass_rate, 4),
            "mean_score": round(self.mean_score, 4),
            "rolling_pass_rate": round(self.rolling_pass_rate, 4),
            "rolling_window": self.rolling_window,
            "below_threshold": self.below_threshold,
            "alerts_computed": len(self.crossings),
            "crossings": [dict(c) for c in self.crossings],
            "alerts_recorded": self.alerts_recorded,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Rows worst first (lowest rolling pass rate), and the settings they were computed with."""

    rows: tuple[QualityRow, ...]
    checks: int
    alerts_recorded: int
    window: int
    threshold: float
    min_samples: int
    by: tuple[str, ...]
    runs: int = 0
    unmatched_alerts: int = 0  # recorded alerts of groups with no check in the span

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "checks": self.checks,
            "alerts_recorded": self.alerts_recorded,
            "window": self.window,
            "threshold": self.threshold,
            "min_samples": self.min_samples,
            "by": list(self.by),
            "unmatched_alerts": self.unmatched_alerts,
            "rows": [r.to_json() for r in self.rows],
        }


def guard_checks(events: Iterable[Event]) -> list[GuardCheck]:
    """The guard scores of ``guard_decided`` events, one check per guard."""
    out: list[GuardCheck] = []
    for e in events:
        if e.kind != "guard_decided":
            continue
        d = e.data or {}
        scores = d.get("scores")
        if not isinstance(scores, Mapping):
            continue
        subject = str(d.get("model") or d.get("tool") or "-")
        step = top_step(e.step) if e.step else "-"
        for guard, score in scores.items():
            if isinstance(score, bool) or not isinstance(score, int | float):
                continue
            if math.isnan(score):
                continue
            out.append(
                GuardCheck(
                    e.ts,
                    e.run_id,
                    e.seq,
                    subject,
                    step,
                    str(guard),
                    float(score),
                    str(d.get("checkpoint", "?")),
                )
            )
    return out


def _key(by: Sequence[str], model: str, step: str, guard: str) -> tuple[str | None, ...]:
    values = {"model": model, "step": step, "guard": guard}
    return tuple(values[d] if d in by else None for d in DIMENSIONS)


def quality_stats(
    events_by_run: Mapping[str, Sequence[Event]],
    *,
    window: int = 50,
    threshold: float = 0.8,
    min_samples: int | None = None,
    by: Sequence[str] = DIMENSIONS,
) -> QualityReport:
    """Pass rates, mean scores, rolling pass rates and threshold crossings of the guard checks
    in ``events_by_run`` (run id → that run's events), per group of ``by`` (any of
    ``model``, ``step``, ``guard``). ``min_samples`` (default: 20, at most ``window``) is how
    many checks the window must hold before a crossing counts, as in the live monitor."""
    if window < 1:
        raise ValueError("window must be at least 1")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be between 0 and 1")
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown or not by:
        raise ValueError(
            f"cannot group by {', '.join(unknown) or 'nothing'} (choose from model, step, guard)"
        )
    need = min(20, window) if min_samples is None else max(1, min(min_samples, window))
    checks: list[GuardCheck] = []
    alerts: dict[tuple[str | None, ...], int] = {}
    n_alerts = 0
    for events in events_by_run.values():
        checks.extend(guard_checks(events))
        for e in events:
            if e.kind == "quality_alert":
                d = e.data or {}
                step = d.get("step") or e.step
                key = _key(
                    by,
                    str(d.get("subject") or "-"),
                    top_step(str(step)) if step else "-",
                    str(d.get("guard", "?")),
                )
                alerts[key] = alerts.get(key, 0) + 1
                n_alerts += 1
    checks.sort(key=lambda c: (c.ts, c.run_id, c.seq))
    groups: dict[tuple[str | None, ...], list[GuardCheck]] = {}
    for c in checks:
        groups.setdefault(_key(by, c.model, c.step, c.guard), []).append(c)
    rows = [
        _row(key, seq, window, threshold, need, alerts.get(key, 0)) for key, seq in groups.items()
    ]
    rows.sort(key=lambda r: (r.rolling_pass_rate, r.pass_rate, *(str(k) for k in _row_key(r))))
    return QualityReport(
        rows=tuple(rows),
        checks=len(checks),
        alerts_recorded=n_alerts,
        window=window,
        threshold=threshold,
        min_samples=need,
        by=tuple(d for d in DIMENSIONS if d in by),
        runs=len(events_by_run),
        unmatched_alerts=sum(n for key, n in alerts.items() if key not in groups),
    )


def _row_key(r: QualityRow) -> tuple[str | None, ...]:
    return (r.model, r.step, r.guard)


def _row(
    key: tuple[str | None, ...],
    checks: list[GuardCheck],
    window: int,
    threshold: float,
    min_samples: int,
    recorded: int,
) -> QualityRow:
    win: deque[bool] = deque(maxlen=window)
    firing = False
    crossings: list[dict[str, Any]] = []
    rate = 1.0
    for c in checks:
        win.append(c.passed)
        rate = sum(win) / len(win)
        if len(win) < min_samples:
            continue
        if rate < threshold and not firing:
            firing = True
            crossings.append(
                {"ts": c.ts, "run_id": c.run_id, "seq": c.seq, "pass_rate": round(rate, 4)}
            )
        elif rate >= threshold:
            firing = False
    model, step, guard = key
    return QualityRow(
        model=model,
        step=step,
        guard=guard,
        checkpoints=tuple(sorted({c.checkpoint for c in checks})),
        checks=len(checks),
        passes=sum(c.passed for c in checks),
        mean_score=sum(c.score for c in checks) / len(checks),
        rolling_pass_rate=rate,
        rolling_window=len(win),
        below_threshold=rate < threshold,
        crossings=tuple(crossings),
        alerts_recorded=recorded,
        first_ts=checks[0].ts,
        last_ts=checks[-1].ts,
    )


async def quality_events(
    store: Store,
    *,
    since: float | None = None,
    max_runs: int = 100_000,
    on_run: Callable[[int], None] | None = None,
) -> dict[str, list[Event]]:
    """The ``guard_decided`` and ``quality_alert`` events of the store's runs (those at or
    after ``since``, epoch seconds), by run. ``on_run(total)`` is called once per run read."""
    runs = await store.list_runs(limit=max_runs)
    if since is not None:
        runs = [r for r in runs if r.updated >= since]
    found: dict[str, list[Event]] = {}
    for info in runs:
        found[info.run_id] = [
            e
            for e in await store.events(info.run_id)
            if e.kind in QUALITY_KINDS and (since is None or e.ts >= since)
        ]
        if on_run is not None:
            on_run(len(runs))
    return found


async def store_quality(
    store: Store,
    *,
    since: float | None = None,
    window: int = 50,
    threshold: float = 0.8,
    min_samples: int | None = None,
    by: Sequence[str] = DIMENSIONS,
) -> QualityReport:
    """:func:`quality_stats` over the runs of a store (the events at or after ``since``)."""
    return quality_stats(
        await quality_events(store, since=since),
        window=window,
        threshold=threshold,
        min_samples=min_samples,
        by=by,
    )
