"""Send each request to the cheapest model that can take it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from ..errors import ModelError
from ..models import ChatModel, ChatRequest, ChatResult, StreamChunk, count_tokens
from ._decision import Member, cost_field, decided, members_of, recording, routed, routed_chunk

_MODALITY, _LENGTH = "unsupported_modality", "context_length_exceeded"


class CheapestCapableRouter:
    """A chat model that picks, per request, the model with the lowest expected cost among
    those that can take it: every input modality supported, the prompt (plus ``max_tokens``
    when given) within the context window, and the request's tags all among the model's tags.

    Capabilities and prices come from each model's :class:`~erpoz.models.ModelSpec` (models
    from the hub are metered and carry one); a model without a spec (another router) is taken
    as capable, and one that cannot estimate its cost comes after those that can. Ties go to
    the model listed first. It does not fail over: wrap it in a ``FallbackRouter`` for that.
    """

    kind: ClassVar[str] = "cheapest"

    def __init__(self, name: str, models: Sequence[ChatModel]) -> None:
        self.name = name
        self._members = members_of(name, models)
        self.models = tuple(m.model for m in self._members)
        self._need_tokens = any(m.spec is not None for m in self._members)

    @staticmethod
    def _exclusion(
        member: Member, request: ChatRequest, tokens: int, modalities: frozenset[str]
    ) -> tuple[str, str] | None:
        """Why ``member`` cannot take the request: a code for machines and a reason."""
        spec = member.spec
        if spec is None:
            return None
        missing = modalities - spec.modalities
        if missing:
            return _MODALITY, (
                f"cannot take {', '.join(sorted(missing))} input "
                f"(modalities: {', '.join(sorted(spec.modalities))})"
            )
        needed = tokens + (request.max_tokens or 0)
        if needed > spec.context_window:
            out = f" + {request.max_tokens} to generate" if request.max_tokens else ""
            return _LENGTH, (
                f"the prompt (~{tokens} tokens{out}) does not fit its context window "
                f"({spec.context_window})"
            )
        if request.tags and not request.tags <= spec.tags:
            lacking = ", ".join(sorted(request.tags - spec.tags))
            return "missing_tags", f"lacks required tag(s) {lacking}"
        return None

    def choose(self, request: ChatRequest) -> Member:
        """The model this request goes to; ``ModelError`` naming why each was excluded when no
        model can take it. Records the decision in the calling step's run."""
        tokens = count_tokens(request.prompt_text) if self._need_tokens else 0
        modalities = request.modalities
        best: Member | None = None
        best_cost = math.inf
        excluded: dict[str, str] = {}
        codes: set[str] = set()
        costs: dict[str, float | None] = {}
        for m in self._members:
            exclusion = self._exclusion(m, request, tokens, modalities)
            if exclusion is not None:
                codes.add(exclusion[0])
                excluded[m.name] = exclusion[1]
                continue
            cost = m.cost(request, tokens)
            costs[m.name] = cost
            key = math.inf if cost is None else cost
            if best is None or key < best_cost:
                best, best_cost = m, key
        if recording():
            self._record(excluded, costs, best, tokens)
        if best is None:
            what = "; ".join(f"{name}: {why}" for name, why in excluded.items())
            raise ModelError(
                f"no model can take this request: {what}",
                model=self.name,
                code=next(iter(codes)) if len(codes) == 1 else None,
            )
        return best

    def estimate(self, request: ChatRequest) -> float | None:
        """What the cheapest capable model would cost (``None`` when none can take it)."""
        tokens = count_tokens(request.prompt_text) if self._need_tokens else 0
        modalities = request.modalities
        costs = [
            m.cost(request, tokens)
            for m in self._members
            if self._exclusion(m, request, tokens, modalities) is None
        ]
        known = [c for c in costs if c is not None]
        return min(known) if known else None

    async def generate(self, request: ChatRequest) -> ChatResult:
        member = self.choose(request)
        return routed(await member.model.generate(request), self.name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        member = self.choose(request)
        async for chunk in member.model.stream(request):
            yield routed_chunk(chunk, self.name)

    def _record(
        self,
        excluded: dict[str, str],
        costs: dict[str, float | None],
        best: Member | None,
        tokens: int,
    ) -> None:
        candidates: list[dict[str, Any]] = []
        for m in self._members:
            if m.name in excluded:
                why = excluded[m.name]
                candidates.append({"model": m.name, "estimate_usd": None, "excluded": why})
            else:
                candidates.append({"model": m.name, "estimate_usd": cost_field(costs[m.name])})
        if best is None:
            reason = f"no capable model among {len(self._members)}"
        else:
            cost = costs[best.name]
            price = "cost unknown" if cost is None else f"est. ${cost:.6f}"
            capable = len(self._members) - len(excluded)
            reason = f"cheapest of {capable} capable ({price})"
            if excluded:
                reason += f"; {len(excluded)} excluded"
        decided(
            self.name,
            self.kind,
            candidates,
            None if best is None else best.name,
            reason,
            prompt_tokens=tokens,
        )
