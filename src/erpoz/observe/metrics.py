"""Prometheus metrics folded from the event log.

:class:`MetricsCollector` reads runs' events and adds them up into counters and histograms in
its own ``prometheus_client`` registry (never the global one, so two servers, or two tests, do
not share counts):

- ``erpoz_runs_started_total{flow}``, ``erpoz_runs_total{flow,status}`` (succeeded, failed,
  cancelled, waiting: a run that waits and then succeeds counts under both);
- ``erpoz_steps_total{flow,step,status}`` (succeeded, cached, copied, reviewed, failed,
  retried, skipped) and the histogram ``erpoz_step_duration_seconds{flow,step}``;
- ``erpoz_model_calls_total{model,status}`` (ok, error, refused), the histogram
  ``erpoz_model_latency_seconds{model}``, ``erpoz_model_tokens_total{model,type}`` (input,
  output), ``erpoz_model_cost_usd_total{model}``;
- ``erpoz_tool_calls_total{tool,status}``;
- ``erpoz_guard_decisions_total{checkpoint,action}``,
  ``erpoz_guard_findings_total{checkpoint,data_class,action}``;
- ``erpoz_reviews_total{decision}``;
- gauges read from the store at each scrape: ``erpoz_runs_current{status}`` (queued,
  running, waiting), ``erpoz_run_queue_depth{queue}`` and
  ``erpoz_run_queue_oldest_age_seconds{queue}`` (runs submitted for workers, not yet taken),
  ``erpoz_review_queue_depth``, ``erpoz_review_oldest_age_seconds``.

``step`` is the step id with map items and loop iterations folded together (``shout[*]``,
``revise#*``) so the number of series stays bounded; sub-flow steps keep their path.

Where the counts come from: :meth:`MetricsCollector.listen` is an engine listener that only
notes which runs moved; :meth:`MetricsCollector.update` (every scrape) reads the new events of
those runs (and of runs known to be unfinished) from the store, so every count is derived from
the log and an event is never counted twice. The first update backfills every run in the
store, so a restarted server's counters include history (counters are cumulative over the
store's life, not the process's: a restart does not reset them). Runs that another process
drives against the same store are read when a scrape finds them running or waiting (and at
the next backfill): a run another process starts and finishes between two scrapes is counted
after the server restarts. The gauges read the store itself at every scrape.

``prometheus_client`` is needed (``pip install 'erpoz[server]'``).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..engine import pending_reviews
from ..store import Event, RunInfo, Store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Metric
    from prometheus_client.registry import Collector

__all__ = ["DURATION_BUCKETS", "MetricsCollector", "step_label"]

DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Histogram buckets (seconds) of step durations and model latencies; ``+Inf`` is added."""

_ITEM = re.compile(r"\[\d+\]")
_ITERATION = re.compile(r"#\d+")
_ENDS = {
    "run_succeeded": "succeeded",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_waiting": "waiting",
}
_FINAL = frozenset({"succeeded", "failed", "cancelled"})
_DONE_KEPT = 100_000
_ALL = 10**9


def _le(bound: float) -> str:
    """A bucket's ``le`` label, as Prometheus writes it."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def step_label(step_id: str) -> str:
    """The ``step`` label of a step execution: ``shout[3]`` → ``shout[*]``, ``revise#2`` →
    ``revise#*``, ``sub/inner`` stays."""
    return _ITERATION.sub("#*", _ITEM.sub("[*]", step_id))


@dataclass(slots=True)
class _Run:
    flow: str
    seq: int = 0
    status: str = "running"


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...] = ()


_METRICS = (
    _Metric("erpoz_runs_started", "counter", "Runs started.", ("flow",)),
    _Metric(
        "erpoz_runs",
        "counter",
        "Runs that reached a status (succeeded, failed, cancelled, or waiting for review; a "
        "run that waits and then succeeds counts under both).",
        ("flow", "status"),
    ),
    _Metric(
        "erpoz_steps",
        "counter",
        "Step executions by outcome (succeeded, cached, copied, reviewed, failed, retried, "
        "skipped).",
        ("flow", "step", "status"),
    ),
    _Metric(
        "erpoz_step_duration_seconds",
        "histogram",
        "Duration of the step executions that succeeded (not cached, copied or reviewed).",
        ("flow", "step"),
    ),
    _Metric(
        "erpoz_model_calls",
        "counter",
        "Model calls (status: ok, error, refused).",
        ("model", "status"),
    ),
    _Metric(
        "erpoz_model_latency_seconds",
        "histogram",
        "Latency of the model calls that were sent (answered or failed).",
        ("model",),
    ),
    _Metric(
        "erpoz_model_tokens",
        "counter",
        "Tokens of model calls (type: input, output).",
        ("model", "type"),
    ),
    _Metric("erpoz_model_cost_usd", "counter", "Cost of model calls in USD.", ("model",)),
    _Metric("erpoz_tool_calls", "counter", "Tool calls (status: ok, error).", ("tool", "status")),
    _Metric(
        "erpoz_guard_decisions",
        "counter",
        "Guard decisions at checkpoints, by the action taken.",
        ("checkpoint", "action"),
    ),
    _Metric(
        "erpoz_guard_findings",
        "counter",
        "Guard findings by checkpoint, data class (pii.email, injection.…) and action.",
        ("checkpoint", "data_class", "action"),
    ),
    _Metric("erpoz_reviews", "counter", "Review decisions (approve, edit, reject).", ("decision",)),
    _Metric(
        "erpoz_runs_current",
        "gauge",
        "Runs in the store now with this status (queued, running, waiting).",
        ("status",),
    ),
    _Metric(
        "erpoz_run_queue_depth",
        "gauge",
        "Runs submitted to a queue that no worker has taken yet.",
        ("queue",),
    ),
    _Metric(
        "erpoz_run_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest run of a queue that no worker has taken yet (since it was created).",
        ("queue",),
    ),
    _Metric(
        "erpoz_review_queue_depth",
        "gauge",
        "Review requests waiting for a decision (in runs that wait).",
    ),
    _Metric(
        "erpoz_review_oldest_age_seconds",
        "gauge",
        "Age of the oldest review request waiting for a decision (0 when none waits).",
    ),
)

Labels = tuple[str, ...]


class MetricsCollector:
    """Counters and histograms over a store's runs, in a registry of its own.

    Register :meth:`listen` as an engine listener; call ``await scrape()`` for the text a
    Prometheus server reads (``GET /metrics`` does this). ``backfill=False`` counts only runs
    that move while this collector listens. The collector is registered in ``registry`` (a new
    ``CollectorRegistry`` unless given); it has no ``_created`` series: its counters count the
    store's history, not this process's."""

    def __init__(
        self,
        store: Store,
        registry: CollectorRegistry | None = None,
        *,
        backfill: bool = True,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.store = store
        self.buckets = tuple(sorted(float(b) for b in buckets if b != math.inf))
        self.counters: dict[str, dict[Labels, float]] = {
            m.name: {} for m in _METRICS if m.kind == "counter"
        }
        self.histograms: dict[str, dict[Labels, list[float]]] = {
            m.name: {} for m in _METRICS if m.kind == "histogram"
        }
        """Per label values: a count per bucket (not cumulative), then ``+Inf``, then the sum."""
        self.gauges: dict[str, dict[Labels, float]] = {
            "erpoz_runs_current": {("queued",): 0.0, ("running",): 0.0, ("waiting",): 0.0},
            "erpoz_run_queue_depth": {},
            "erpoz_run_queue_oldest_age_seconds": {},
            "erpoz_review_queue_depth": {(): 0.0},
            "erpoz_review_oldest_age_seconds": {(): 0.0},
        }
        self._backfill = backfill
        self._backfilled = False
        self._runs: dict[str, _Run] = {}  # runs not finished (or not yet read to their end)
        self._done: OrderedDict[str, None] = OrderedDict()  # runs read to their end
        self._dirty: set[str] = set()
        self._reviews: dict[str, tuple[int, list[float]]] = {}  # waiting run → (head, asked at)
        self._lock = asyncio.Lock()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(cast("Collector", self))

    # --- prometheus_client -----------------------------------------------------------------
    def describe(self) -> list[Metric]:
        return self._families(samples=False)

    def collect(self) -> list[Metric]:
        return self._families(samples=True)

    def _families(self, *, samples: bool) -> list[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        out: list[Metric] = []
        for m in _METRICS:
            labels = list(m.labels)
            if m.kind == "counter":
                counter = CounterMetricFamily(m.name, m.help, labels=labels)
                for values, v in sorted(self.counters[m.name].items()) if samples else ():
                    counter.add_metric(values, v)
                out.append(counter)
            elif m.kind == "gauge":
                gauge = GaugeMetricFamily(m.name, m.help, labels=labels)
                for values, v in sorted(self.gauges[m.name].items()) if samples else ():
                    gauge.add_metric(values, v)
                out.append(gauge)
            else:
                hist = HistogramMetricFamily(m.name, m.help, labels=labels)
                for values, counts in sorted(self.histograms[m.name].items()) if samples else ():
                    cumulative, total = [], 0.0
                    for le, n in zip((*self.buckets, math.inf), counts, strict=False):
                        total += n
                        cumulative.append((_le(le), total))
                    hist.add_metric(values, cumulative, counts[-1])
                out.append(hist)
        return out

    def _inc(self, name: str, labels: Labels, by: float = 1.0) -> None:
        series = self.counters[name]
        series[labels] = series.get(labels, 0.0) + by

    def _observe(self, name: str, labels: Labels, value: float) -> None:
        series = self.histograms[name]
        counts = series.get(labels)
        if counts is None:
            counts = series[labels] = [0.0] * (len(self.buckets) + 2)
        counts[bisect.bisect_left(self.buckets, value)] += 1
        counts[-1] += value

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 when never set): ``value("erpoz_runs",
        flow="support", status="failed")`` (counter names without ``_total``)."""
        m = next(x for x in _METRICS if x.name == name)
        key = tuple(labels[k] for k in m.labels)
        series = self.counters[name] if name in self.counters else self.gauges[name]
        return series.get(key, 0.0)

    # --- sources -------------------------------------------------------------------------
    def listen(
        self,
        run_id: str,
        kind: str,
        step: str | None,
        attempt: int,
        data: Mapping[str, Any] | None,
    ) -> None:
        """An engine listener: notes that ``run_id`` has new events (read at the next
        update). Cheap: called for every event of every run."""
        self._dirty.add(run_id)

    async def update(self) -> None:
        """Fold what is new in the log into the counters, and read the gauges from the store."""
        async with self._lock:
            if self._backfill and not self._backfilled:
                self._dirty.clear()  # the backfill reads these runs whole
                for info in await self.store.list_runs(limit=_ALL):
                    await self._read(info.run_id)
                self._backfilled = True
            running = await self.store.list_runs(status="running", limit=_ALL)
            waiting = await self.store.list_runs(status="waiting", limit=_ALL)
            todo, self._dirty = self._dirty, set()
            # runs that moved without telling this process (another process drives them):
            # running or waiting with new events, or no longer running or waiting
            heads = {info.run_id: info.head_seq for info in (*running, *waiting)}
            for run_id, head in heads.items():
                state = self._runs.get(run_id)
                if head > (state.seq if state else 0):
                    todo.add(run_id)
            todo.update(r for r in self._runs if r not in heads)
            for run_id in sorted(todo):
                await self._read(run_id)
            queued = await self.store.list_runs(status="queued", limit=_ALL)
            await self._gauges(running, waiting, queued)

    async def scrape(self) -> bytes:
        """``update()``, then the registry in the Prometheus text format."""
        from prometheus_client import generate_latest

        await self.update()
        return generate_latest(self.registry)

    async def _read(self, run_id: str) -> None:
        if run_id in self._done:
            return
        state = self._runs.get(run_id)
        events = await self.store.events(run_id, after=state.seq if state else 0)
        self.fold(events)

    # --- the fold ------------------------------------------------------------------------
    def fold(self, events: Sequence[Event]) -> None:
        """Add events (in log order, of any runs) to the counters. Each run's events are taken
        from where the last fold of that run stopped; events already folded are ignored."""
        for e in events:
            state = self._runs.get(e.run_id)
            if state is None:
                if e.run_id in self._done or e.seq != 1:
                    continue
                state = self._runs[e.run_id] = _Run(str(e.data.get("flow", "")))
            if e.seq <= state.seq:
                continue
            state.seq = e.seq
            self._event(state, e)
            if state.status in _FINAL:
                del self._runs[e.run_id]
                self._done[e.run_id] = None
                while len(self._done) > _DONE_KEPT:
                    self._done.popitem(last=False)

    def _event(self, run: _Run, e: Event) -> None:
        kind, data = e.kind, e.data or {}
        if kind == "run_started":
            self._inc("erpoz_runs_started", (run.flow,))
        elif kind in _ENDS:
            run.status = _ENDS[kind]
            self._inc("erpoz_runs", (run.flow, run.status))
        elif kind == "run_resumed":
            run.status = "running"
        elif kind == "step_succeeded" and e.step is not None:
            self._step_succeeded(run, step_label(e.step), data)
        elif kind in ("step_failed", "step_retried", "step_skipped") and e.step is not None:
            self._inc("erpoz_steps", (run.flow, step_label(e.step), kind[5:]))
        elif kind == "model_called":
            self._model(data)
        elif kind == "tool_called":
            self._inc(
                "erpoz_tool_calls", (str(data.get("tool", "")), str(data.get("status", "ok")))
            )
        elif kind == "guard_decided":
            self._guard(data)
        elif kind == "review_resolved":
            self._inc("erpoz_reviews", (str(data.get("decision", "")),))

    def _step_succeeded(self, run: _Run, step: str, data: Mapping[str, Any]) -> None:
        if data.get("cached"):
            outcome = "cached"
        elif data.get("copied_from"):
            outcome = "copied"
        elif data.get("reviewed"):
            outcome = "reviewed"
        else:
            outcome = "succeeded"
            if isinstance(data.get("ms"), int | float):
                seconds = float(data["ms"]) / 1000.0
                self._observe("erpoz_step_duration_seconds", (run.flow, step), seconds)
        self._inc("erpoz_steps", (run.flow, step, outcome))

    def _guard(self, data: Mapping[str, Any]) -> None:
        checkpoint = str(data.get("checkpoint", ""))
        self._inc("erpoz_guard_decisions", (checkpoint, str(data.get("action", ""))))
        findings = data.get("findings")
        for f in findings if isinstance(findings, list) else ():
            if isinstance(f, dict):
                found = (checkpoint, str(f.get("data", "")), str(f.get("action", "")))
                self._inc("erpoz_guard_findings", found)

    def _model(self, data: Mapping[str, Any]) -> None:
        model = str(data.get("model", ""))
        status = str(data.get("status", "ok"))
        self._inc("erpoz_model_calls", (model, status))
        latency = data.get("latency_ms")
        if status != "refused" and isinstance(latency, int | float):
            self._observe("erpoz_model_latency_seconds", (model,), float(latency) / 1000.0)
        for kind in ("input", "output"):
            n = data.get(f"{kind}_tokens")
            if isinstance(n, int) and n > 0:
                self._inc("erpoz_model_tokens", (model, kind), n)
        cost = data.get("cost_usd")
        if isinstance(cost, int | float) and cost > 0:
            self._inc("erpoz_model_cost_usd", (model,), float(cost))

    # --- gauges --------------------------------------------------------------------------
    async def _gauges(
        self, running: Sequence[RunInfo], waiting: Sequence[RunInfo], queued: Sequence[RunInfo]
    ) -> None:
        g = self.gauges
        g["erpoz_runs_current"] = {
            ("queued",): len(queued),
            ("running",): len(running),
            ("waiting",): len(waiting),
        }
        depth: dict[Labels, float] = {}
        oldest: dict[Labels, float] = {}
        now = time.time()
        for info in queued:
            key = (info.queue or "-",)
            depth[key] = depth.get(key, 0.0) + 1
            oldest[key] = max(oldest.get(key, 0.0), now - info.created)
        g["erpoz_run_queue_depth"] = depth
        g["erpoz_run_queue_oldest_age_seconds"] = oldest
        asked: list[float] = []
        known: dict[str, tuple[int, list[float]]] = {}
        for info in waiting:
            cached = self._reviews.get(info.run_id)
            if cached is None or cached[0] != info.head_seq:
                events = await self.store.events(info.run_id)
                cached = (info.head_seq, [e.ts for e in pending_reviews(events).values()])
            known[info.run_id] = cached
            asked.extend(cached[1])
        self._reviews = known
        g["erpoz_review_queue_depth"] = {(): len(asked)}
        age = max(0.0, time.time() - min(asked)) if asked else 0.0
        g["erpoz_review_oldest_age_seconds"] = {(): age}
