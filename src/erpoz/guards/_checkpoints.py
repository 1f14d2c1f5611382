"""Carrying out what the guardrails decide, at the places a step's data leaves or arrives:
``ctx.models`` (model input and output, model policy) and ``ctx.tools`` (tool arguments and
results). The engine handles the delivery checkpoint itself.

One :class:`Governed` per step context: the run's subject (flow, step, tenant, user), where its
events go, and which approvals a reviewer has granted in this run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import GuardBlocked, PolicyViolation, ReviewRequired
from ..policy import Subject
from ._rails import Guardrails, Placeholders, Verdict, restore

if TYPE_CHECKING:
    from ..models import ChatRequest, ChatResult, Message

Emit = Callable[[str, dict[str, Any]], None]


class Governed:
    """The guardrails as one step sees them."""

    __slots__ = ("_approved", "_emit", "_names", "rails", "subject")

    def __init__(
        self,
        rails: Guardrails,
        subject: Subject,
        emit: Emit,
        approved: Callable[[str], bool],
    ) -> None:
        self.rails = rails
        self.subject = subject
        self._emit = emit
        self._approved = approved
        self._names = Placeholders()  # one value, one placeholder, for the whole step

    async def _inspect(
        self,
        checkpoint: str,
        text: str,
        *,
        model: str = "-",
        sources: Sequence[str] = (),
        names: Placeholders | None = None,
    ) -> Verdict:
        rails = self.rails
        if rails.slow(checkpoint):
            return await asyncio.to_thread(
                rails.inspect,
                checkpoint,
                text,
                self.subject,
                model=model,
                sources=sources,
                names=names,
            )
        return rails.inspect(
            checkpoint, text, self.subject, model=model, sources=sources, names=names
        )

    def _record(
        self, verdict: Verdict, *, model: str | None = None, tool: str | None = None
    ) -> None:
        self.rails.observe(verdict, self._emit, step=self.subject.step, model=model, tool=tool)

    def _stop(self, verdict: Verdict, what: str, content: str) -> None:
        """Carry out ``review`` (unless approved before) and ``block``."""
        if verdict.action == "review":
            key = verdict.grant(content)
            if self._approved(key):
                return
            raise ReviewRequired(
                f"{what}: needs review ({verdict.rule})",
                evidence=verdict.evidence(),
                grant=key,
            )
        raise GuardBlocked(
            f"{what}: blocked at {verdict.checkpoint} by rule {verdict.rule!r} ({_kinds(verdict)})",
            checkpoint=verdict.checkpoint,
            rule=verdict.rule,
        )

    async def check_text(self, checkpoint: str, text: str) -> str:
        """Guard ``text`` at ``checkpoint`` from inside a step: the text as it may pass."""
        from ..policy import CHECKPOINTS

        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"unknown checkpoint {checkpoint!r} (checkpoints: {CHECKPOINTS})")
        if not text or not self.rails.active(checkpoint):
            return text
        verdict = await self._inspect(checkpoint, text, names=self._names)
        self._record(verdict)
        if verdict.passed:
            return text
        if verdict.action in ("redact", "pseudonymize"):
            return verdict.text
        if verdict.action in ("reask", "escalate"):  # nothing to ask again here: stop
            raise GuardBlocked(
                f"text at {checkpoint}: rule {verdict.rule!r} wants a model re-asked, but "
                "ctx.guard checks text no model wrote",
                checkpoint=checkpoint,
                rule=verdict.rule,
            )
        self._stop(verdict, f"text at {checkpoint}", text)
        return text

    # --- models ---------------------------------------------------------------------------
    def model_allowed(self, model: str) -> None:
        """The policy's model rules (no event when no model rule decides)."""
        policy = self.rails.policy
        if not policy.has_model_rules:
            return
        action, rule = policy.decide_model(model, self.subject)
        if rule.startswith("default:"):
            return
        self._emit(
            "policy_decided",
            {"resource": f"model:{model}", "action": action, "rule": rule, **_who(self.subject)},
        )
        if action == "deny":
            raise PolicyViolation(
                f"model '{model}' denied for step '{self.subject.step}' ({rule})", rule=rule
            )
        if action == "review":
            key = f"model:{model}"
            if not self._approved(key):
                raise ReviewRequired(
                    f"model '{model}' needs approval ({rule})",
                    evidence={"model": model, "rule": rule},
                    grant=key,
                )

    async def model_input(
        self, model: str, messages: tuple[Message, ...]
    ) -> tuple[tuple[Message, ...], dict[str, str]]:
        """Guard every user and tool message; returns the messages as they may be sent and
        the pseudonym mapping to restore in the answer."""
        self.model_allowed(model)
        if not self.rails.active("model_input"):
            return messages, {}
        from ..models import TextPart

        out = list(messages)
        mapping: dict[str, str] = {}
        names = self._names
        for i, m in enumerate(messages):
            if m.role not in ("user", "tool") or not m.content:
                continue
            # a plain message is one text; a message with parts (text beside an image) is
            # guarded part by part
            parts: list[Any] = [m.content] if isinstance(m.content, str) else list(m.content)
            changed = False
            for j, part in enumerate(parts):
                text = part if isinstance(part, str) else getattr(part, "text", None)
                if not isinstance(text, str) or not text:
                    continue
                verdict = await self._inspect("model_input", text, model=model, names=names)
                self._record(verdict, model=model)
                if verdict.passed:
                    continue
                if verdict.action in ("redact", "pseudonymize"):
                    parts[j] = verdict.text if isinstance(part, str) else TextPart(verdict.text)
                    mapping.update(verdict.mapping)
                    changed = True
                    continue
                self._stop(verdict, f"message {i} to model '{model}'", text)
            if changed:
                content = parts[0] if isinstance(m.content, str) else tuple(parts)
                out[i] = replace(m, content=content)
        return tuple(out), mapping

    async def model_output(
        self,
        model: str,
        request: ChatRequest,
        result: ChatResult,
        mapping: Mapping[str, str],
        generate: Callable[[str, ChatRequest], Awaitable[ChatResult]],
    ) -> ChatResult:
        """Guard the answer; re-ask, escalate, redact, review or block as the policy says.
        The guards see the answer as the model wrote it (with placeholders, when the input
        was pseudonymised); the originals are put back afterwards."""
        mapping = dict(mapping)
        if self.rails.active("model_output") and not result.tool_calls:
            # a turn that calls tools is not an answer: its arguments meet the tool_call guards
            result = await self._guard_answer(model, request, result, mapping, generate)
        if mapping:
            result = replace(result, text=restore(result.text, mapping))
        return result

    async def _guard_answer(
        self,
        model: str,
        request: ChatRequest,
        result: ChatResult,
        mapping: dict[str, str],
        generate: Callable[[str, ChatRequest], Awaitable[ChatResult]],
    ) -> ChatResult:
        from ..models import Message

        sources = [
            m.text for m in request.messages if m.role in ("user", "tool", "system") and m.text
        ]
        reasks = 0
        escalated = False
        asked = model
        while True:
            verdict = await self._inspect("model_output", result.text, model=asked, sources=sources)
            self._record(verdict, model=asked)
            action = verdict.action
            if verdict.passed:
                return result
            if action == "redact":
                return replace(result, text=verdict.text)
            if action == "reask" and reasks < verdict.max_reasks:
                reasks += 1
                request = replace(
                    request,
                    messages=(
                        *request.messages,
                        Message.assistant(result.text),
                        Message.user(
                            f"Your answer was rejected ({verdict.feedback()}). "
                            "Answer again, fixing that."
                        ),
                    ),
                )
                result = await generate(asked, request)
                continue
            if action == "escalate" and not escalated and verdict.to is not None:
                escalated = True
                asked = verdict.to
                self._emit(
                    "guard_escalated",
                    {"from": model, "to": asked, "rule": verdict.rule, "reasks": reasks},
                )
                # the stronger model is another resource: its policy and input rules apply
                messages, more = await self.model_input(asked, request.messages)
                mapping.update(more)
                request = replace(request, messages=messages)
                result = await generate(asked, request)
                continue
            self._stop(verdict, f"answer of model '{asked}'", result.text)
            return result  # approved by a reviewer

    # --- tools ----------------------------------------------------------------------------
    async def tool_arguments(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if not self.rails.active("tool_call"):
            return arguments
        verdict, value = self.rails.inspect_value("tool_call", arguments, self.subject)
        self._record(verdict, tool=tool)
        if verdict.passed:
            return arguments
        if verdict.action == "redact":
            return dict(value)
        self._stop(verdict, f"call of tool '{tool}'", _canonical(tool, arguments))
        return arguments

    async def tool_result(self, tool: str, result: Any) -> Any:
        if not self.rails.active("tool_result"):
            return result
        verdict, value = self.rails.inspect_value("tool_result", result, self.subject)
        self._record(verdict, tool=tool)
        if verdict.passed:
            return result
        if verdict.action == "redact":
            return value
        self._stop(verdict, f"result of tool '{tool}'", _canonical(tool, result))
        return result


def _canonical(tool: str, value: Any) -> str:
    return tool + ":" + json.dumps(value, sort_keys=True, default=repr)


def _kinds(verdict: Verdict) -> str:
    kinds = sorted({f"{d.finding.detector}.{d.finding.kind}" for d in verdict.decided})
    return ", ".join(kinds) or "no findings"


def _who(s: Subject) -> dict[str, str]:
    return {"flow": s.flow, "step": s.step, "tenant": s.tenant, "user": s.user}
