"""Guardrails: the guards that run at each checkpoint and the policy that turns what they find
into an action.

The checkpoints are ``model_input`` (every message a step sends to a model), ``model_output``
(the answer), ``tool_call`` (a tool's arguments), ``tool_result`` (what a tool returned) and
``delivery`` (the output of the step that produces the flow's result). At each one,
:meth:`Guardrails.inspect` runs the guards configured there, asks the policy what to do with
each finding (the first data rule that matches; none: log), and returns a :class:`Verdict`: the
strongest action, the text as it may pass (redacted or pseudonymised), a score per guard and the
findings with the rule that decided each. The callers (``ctx.models``, ``ctx.tools``, the
engine) carry the action out and record the verdict as a ``guard_decided`` event; the finding
texts themselves are never recorded, only their kind, span and score.

A guard that raises is itself a finding (``<guard>.error``): blocked when ``fail_closed``
(the default), logged otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..policy import CHECKPOINTS, DATA_DEFAULT, STRENGTH, Action, Policy, Subject
from ._findings import Finding, Guard


@dataclass(frozen=True, slots=True)
class Check:
    """A guard, the checkpoints it runs at and the name its scores are kept under (the
    guard's own name unless given)."""

    guard: Guard
    at: frozenset[str] = frozenset(CHECKPOINTS)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.guard.name


@dataclass(frozen=True, slots=True)
class Decided:
    """A finding and what the policy decided for it (``path`` locates it in a structured
    value: ``answer`` or ``items[2].text``; empty for a plain text)."""

    finding: Finding
    action: Action
    rule: str
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        f = self.finding
        data: dict[str, Any] = {
            "data": f"{f.detector}.{f.kind}",
            "start": f.start,
            "end": f.end,
            "score": round(f.score, 4),
            "action": self.action,
            "rule": self.rule,
        }
        if self.path:
            data["path"] = self.path
        if f.detail:
            data["detail"] = f.detail
        return data


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one checkpoint decided about one text (or the string leaves of one value)."""

    checkpoint: str
    action: Action
    rule: str | None
    decided: tuple[Decided, ...]
    scores: Mapping[str, float]
    seconds: float
    text: str = ""
    mapping: Mapping[str, str] = field(default_factory=dict)
    max_reasks: int = 1
    to: str | None = None
    masked: str = ""  # review: the text with every finding masked, for the reviewer

    @property
    def passed(self) -> bool:
        """Nothing to act on: clean, or only logged / allowed findings."""
        return self.action in ("allow", "log")

    def feedback(self) -> str:
        """What a model is told when its answer is asked again."""
        why = sorted(
            {
                d.finding.detail or f"{d.finding.detector}: {d.finding.kind}"
                for d in self.decided
                if d.action in ("reask", "escalate")
            }
        )
        return "; ".join(why) or "a guard rejected it"

    def event(self, **extra: Any) -> dict[str, Any]:
        """The data of the ``guard_decided`` event."""
        data: dict[str, Any] = {
            "checkpoint": self.checkpoint,
            "action": self.action,
            "rule": self.rule,
            "passed": self.passed,
            "scores": dict(self.scores),
            "findings": [d.to_json() for d in self.decided],
            "ms": round(self.seconds * 1000.0, 3),
        }
        data.update({k: v for k, v in extra.items() if v is not None})
        return data

    def evidence(self) -> dict[str, Any]:
        """What a reviewer sees: the checkpoint, the findings (kinds, spans, scores, rules) and
        the text with every finding masked."""
        return {
            "checkpoint": self.checkpoint,
            "findings": [d.to_json() for d in self.decided],
            "masked": self.masked or None,
        }

    def grant(self, what: str) -> str:
        """The key a reviewer's approval is stored under: this checkpoint and ``what`` (the
        exact text or call) — an approval holds for that content only."""
        digest = hashlib.sha256(what.encode()).hexdigest()[:24]
        return f"{self.checkpoint}:{digest}"


class Guardrails:
    """The checks of a project and its policy; pass it to the engine as a service (the CLI
    builds it from the ``guards`` and ``policy`` sections of ``erpoz.yaml``)."""

    def __init__(
        self,
        checks: Sequence[Check | Guard] = (),
        policy: Policy | None = None,
        *,
        fail_closed: bool = True,
        alert: QualityAlert | None = None,
    ) -> None:
        self.checks = tuple(c if isinstance(c, Check) else Check(c) for c in checks)
        self.policy = policy if policy is not None else Policy()
        self.fail_closed = fail_closed
        self.monitor = QualityMonitor(alert) if alert is not None else None
        self._at: dict[str, tuple[tuple[str, Guard], ...]] = {
            cp: tuple((c.label, c.guard) for c in self.checks if cp in c.at) for cp in CHECKPOINTS
        }
        self._blocking = {
            cp: any(
                getattr(g, "uses_sources", False) or getattr(g, "blocking", False) for _, g in gs
            )
            for cp, gs in self._at.items()
        }

    def active(self, checkpoint: str) -> bool:
        """Whether any guard runs at ``checkpoint``."""
        return bool(self._at.get(checkpoint))

    def slow(self, checkpoint: str) -> bool:
        """Whether a guard at ``checkpoint`` is slow enough to run off the event loop."""
        return self._blocking.get(checkpoint, False)

    # --- inspecting ---------------------------------------------------------------------------
    def inspect(
        self,
        checkpoint: str,
        text: str,
        subject: Subject,
        *,
        model: str = "-",
        sources: Sequence[str] = (),
        names: Placeholders | None = None,
    ) -> Verdict:
        """Run the guards of ``checkpoint`` over ``text`` and decide. ``names`` keeps
        pseudonym placeholders unique across the texts of one call."""
        t0 = time.perf_counter()
        decided, scores = self._decide(checkpoint, text, subject, model, sources, "")
        return self._verdict(checkpoint, decided, scores, text, time.perf_counter() - t0, names)

    def inspect_value(
        self,
        checkpoint: str,
        value: Any,
        subject: Subject,
        *,
        model: str = "-",
    ) -> tuple[Verdict, Any]:
        """Run the guards over every string inside ``value`` (str, lists, dicts, dataclasses,
        pydantic models); returns the verdict and the value as it may pass (string leaves
        redacted when the action is ``redact``)."""
        t0 = time.perf_counter()
        decided: list[Decided] = []
        scores: dict[str, float] = {}
        masked: dict[str, str] = {}
        for path, text in _leaves(value, ""):
            found, s = self._decide(checkpoint, text, subject, model, (), path)
            for k, v in s.items():
                scores[k] = min(v, scores.get(k, 1.0))
            if found:
                decided.extend(found)
                masked[path] = _mask(text, [d for d in found if d.action == "redact"])[0]
        verdict = self._verdict(checkpoint, decided, scores, "", time.perf_counter() - t0)
        if verdict.action == "redact" and masked:
            value = _rebuild(value, "", masked)
        return verdict, value

    def _decide(
        self,
        checkpoint: str,
        text: str,
        subject: Subject,
        model: str,
        sources: Sequence[str],
        path: str,
    ) -> tuple[list[Decided], dict[str, float]]:
        decided: list[Decided] = []
        scores: dict[str, float] = {}
        policy = self.policy
        for label, guard in self._at.get(checkpoint, ()):
            try:
                if getattr(guard, "uses_sources", False):
                    found = guard.check(text, sources=sources)  # type: ignore[call-arg,unused-ignore]
                else:
                    found = guard.check(text)
            except Exception as exc:
                found = (_error_finding(guard.name, text, exc),)
                if not self.fail_closed:
                    decided.append(Decided(found[0], "log", "guards fail open", path))
                    scores[label] = 0.0
                    continue
                decided.append(Decided(found[0], "block", "guards fail closed", path))
                scores[label] = 0.0
                continue
            worst = 0.0
            for f in found:
                worst = max(worst, f.score)
                rule = policy.decide_data(
                    f"{f.detector}.{f.kind}", checkpoint, subject, score=f.score, model=model
                )
                if rule is None:
                    decided.append(Decided(f, "log", DATA_DEFAULT, path))
                else:
                    decided.append(Decided(f, rule.action, rule.name, path))
            scores[label] = round(1.0 - worst, 4)
        return decided, scores

    def _verdict(
        self,
        checkpoint: str,
        decided: Sequence[Decided],
        scores: Mapping[str, float],
        text: str,
        seconds: float,
        names: Placeholders | None = None,
    ) -> Verdict:
        action: Action = "allow"
        rule: str | None = None
        for d in decided:
            if STRENGTH[d.action] > STRENGTH[action]:
                action, rule = d.action, d.rule
        max_reasks, to = 1, None
        if action in ("reask", "escalate") and rule is not None:
            deciding = self.policy.rule(rule)
            if deciding is not None:
                max_reasks, to = deciding.max_reasks, deciding.to
        mapping: dict[str, str] = {}
        masked = ""
        if action in ("redact", "pseudonymize") and text:
            text, mapping = _mask(text, decided, names=names)
        elif action == "review" and text:
            masked = _mask(text, decided, redact_all=True)[0]
        return Verdict(
            checkpoint,
            action,
            rule,
            tuple(decided),
            scores,
            seconds,
            text,
            mapping,
            max_reasks,
            to,
            masked,
        )

    def observe(
        self,
        verdict: Verdict,
        emit: Callable[[str, dict[str, Any]], None],
        *,
        step: str,
        model: str | None = None,
        tool: str | None = None,
    ) -> None:
        """Record ``verdict`` as a ``guard_decided`` event and feed the quality monitor (which
        emits a ``quality_alert`` when a rolling pass rate drops below its threshold)."""
        emit("guard_decided", verdict.event(model=model, tool=tool))
        if self.monitor is not None:
            for alert in self.monitor.add(verdict, step=step, subject=model or tool or "-"):
                emit("quality_alert", alert)


# --- quality monitoring --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QualityAlert:
    """Alert when fewer than ``below`` of the last ``window`` checks by one guard of one
    model (or tool) in one step passed, once at least ``min_samples`` were seen."""

    window: int = 50
    below: float = 0.8
    min_samples: int = 20


class QualityMonitor:
    """Rolling pass rates per (step, model or tool, guard) in this process; an alert fires when
    a rate drops below the threshold and re-arms when it is back above."""

    def __init__(self, alert: QualityAlert) -> None:
        self.alert = alert
        self._windows: dict[tuple[str, str, str], deque[bool]] = {}
        self._firing: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def add(self, verdict: Verdict, *, step: str, subject: str) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        cfg = self.alert
        with self._lock:
            for guard, score in verdict.scores.items():
                key = (step, subject, guard)
                win = self._windows.get(key)
                if win is None:
                    win = self._windows[key] = deque(maxlen=cfg.window)
                win.append(score >= 1.0)
                if len(win) < cfg.min_samples:
                    continue
                rate = sum(win) / len(win)
                if rate < cfg.below and key not in self._firing:
                    self._firing.add(key)
                    alerts.append(
                        {
                            "step": step,
                            "subject": subject,
                            "guard": guard,
                            "checkpoint": verdict.checkpoint,
                            "pass_rate": round(rate, 4),
                            "threshold": cfg.below,
                            "window": len(win),
                        }
                    )
                elif rate >= cfg.below:
                    self._firing.discard(key)
        return alerts


# --- helpers -----------------------------------------------------------------------------------
def _error_finding(name: str, text: str, exc: Exception) -> Finding:
    return Finding(name, "error", 0, len(text), text, 1.0, f"{type(exc).__name__}: {exc}")


class Placeholders:
    """Numbered placeholders (``<EMAIL_1>``) that stay the same for one value across the
    texts of one call (every message of a prompt), so no two values share one."""

    __slots__ = ("counts", "seen")

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}

    def get(self, label: str, value: str) -> tuple[str, bool]:
        key = (label, value)
        placeholder = self.seen.get(key)
        if placeholder is not None:
            return placeholder, False
        self.counts[label] = self.counts.get(label, 0) + 1
        placeholder = self.seen[key] = f"<{label}_{self.counts[label]}>"
        return placeholder, True


def _mask(
    text: str,
    decided: Sequence[Decided],
    *,
    redact_all: bool = False,
    names: Placeholders | None = None,
) -> tuple[str, dict[str, str]]:
    """``text`` with each finding replaced as its own rule says: ``[KIND]`` for ``redact``, a
    numbered placeholder for ``pseudonymize`` (placeholder → original in the mapping); other
    actions leave the text. ``redact_all`` masks every finding as ``[KIND]`` (what a
    reviewer sees)."""
    parts: list[str] = []
    mapping: dict[str, str] = {}
    names = names if names is not None else Placeholders()
    last = 0
    for d in sorted(decided, key=lambda d: (d.finding.start, -d.finding.end)):
        if not redact_all and d.action not in ("redact", "pseudonymize"):
            continue
        f = d.finding
        if f.start < last:  # overlaps the one before: widen it, leak nothing
            if f.end > last:
                last = f.end
            continue
        label = f.kind.upper().replace(":", "_").replace("-", "_").replace(".", "_")
        parts.append(text[last : f.start])
        if d.action == "pseudonymize" and not redact_all:
            placeholder, _ = names.get(label, f.text)
            mapping[placeholder] = f.text
            parts.append(placeholder)
        else:
            parts.append(f"[{label}]")
        last = f.end
    parts.append(text[last:])
    return "".join(parts), mapping


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put pseudonymised values back into ``text``."""
    for placeholder, original in mapping.items():
        text = text.replace(placeholder, original)
    return text


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``value`` with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    elif isinstance(value, BaseModel):
        for k in type(value).model_fields:
            yield from _leaves(getattr(value, k), f"{path}.{k}" if path else k)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for fld in dataclasses.fields(value):
            yield from _leaves(getattr(value, fld.name), f"{path}.{fld.name}" if path else fld.name)


def _rebuild(value: Any, path: str, masked: Mapping[str, str]) -> Any:
    """``value`` with the strings at the paths of ``masked`` replaced."""
    if isinstance(value, str):
        return masked.get(path, value)
    if isinstance(value, Mapping):
        if not isinstance(value, dict):
            return value
        return {k: _rebuild(v, f"{path}.{k}" if path else str(k), masked) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, f"{path}[{i}]", masked) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        items = [_rebuild(v, f"{path}[{i}]", masked) for i, v in enumerate(value)]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, BaseModel):
        return value.model_copy(
            update={
                k: _rebuild(getattr(value, k), f"{path}.{k}" if path else k, masked)
                for k in type(value).model_fields
            }
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{
                f.name: _rebuild(
                    getattr(value, f.name), f"{path}.{f.name}" if path else f.name, masked
                )
                for f in dataclasses.fields(value)
                if f.init
            },
        )
    return value
