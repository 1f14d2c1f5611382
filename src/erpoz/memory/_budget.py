"""Context budgeting: what of the system prompt, the conversation and the retrieved passages
fits a model's context window, by priority, and a record of what did not.

Priority: the system prompt first (it must fit), then the conversation from the latest turn
backwards (a turn that does not fit drops it and every older one, so that the conversation
kept has no holes), then passages by score, best first (one that does not fit is dropped and
smaller ones after it may still fit). Tokens are counted with the model's tokenizer when one
is given (:func:`token_counter`), else erpoz's estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..models import Message
from ._errors import ContextBudgetError
from ._models import estimate_tokens
from ._types import Hit

__all__ = ["ContextFit", "Dropped", "fit_context"]

PER_MESSAGE_TOKENS = 4
"""What a chat template adds around each message (role, separators), counted for every turn."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """Something left out, where it was, its size, and why."""

    kind: Literal["turn", "passage"]
    index: int
    """Its position in the list given (``memory_messages`` or ``passages``)."""
    tokens: int
    reason: str
    item: Any = None


@dataclass(frozen=True, slots=True)
class ContextFit:
    """What fits: the system prompt, the turns kept (in order), the passages kept (best
    first), the tokens they take, and what was dropped."""

    system: str | None
    messages: tuple[Any, ...]
    passages: tuple[Any, ...]
    tokens: int
    budget: int
    """The window less the reserve: what the kept items may take."""
    window: int
    reserve: int
    dropped: tuple[Dropped, ...] = field(default_factory=tuple)

    @property
    def dropped_tokens(self) -> int:
        return sum(d.tokens for d in self.dropped)

    def summary(self) -> str:
        turns = sum(d.kind == "turn" for d in self.dropped)
        passages = sum(d.kind == "passage" for d in self.dropped)
        return (
            f"{self.tokens}/{self.budget} tokens used (window {self.window}, reserve "
            f"{self.reserve}); kept {len(self.messages)} turn(s), {len(self.passages)} "
            f"passage(s); dropped {turns} turn(s), {passages} passage(s) "
            f"({self.dropped_tokens} tokens)"
        )


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Message):
        return item.text
    text = getattr(item, "text", None)
    if isinstance(text, str):
        return text
    raise TypeError(f"cannot count the tokens of a {type(item).__name__}: give text")


def _score(item: Any) -> float:
    return float(item.score) if isinstance(item, Hit) else float(getattr(item, "score", 0.0))


def fit_context(
    system: str | None,
    memory_messages: Sequence[Any],
    passages: Sequence[Any],
    window: int,
    reserve: int = 0,
    count_tokens: Callable[[str], int] | None = None,
    *,
    per_message: int = PER_MESSAGE_TOKENS,
) -> ContextFit:
    """Fit ``system``, ``memory_messages`` (oldest first: ``Message``, ``Turn`` or text) and
    ``passages`` (``Hit`` or text; ordered by ``score`` when they have one) into ``window``
    tokens, keeping ``reserve`` free (for the question and the answer).

    Raises :class:`ContextBudgetError` when the system prompt alone does not fit.
    """
    if window <= 0 or reserve < 0:
        raise ContextBudgetError(
            f"window must be > 0 and reserve ≥ 0 tokens, got window {window}, reserve {reserve}"
        )
    count = count_tokens or estimate_tokens
    budget = window - reserve
    if budget <= 0:
        raise ContextBudgetError(
            f"the reserve ({reserve} tokens) takes the whole window ({window}); nothing fits"
        )
    used = 0
    if system:
        used = count(system) + per_message
        if used > budget:
            raise ContextBudgetError(
                f"the system prompt alone has {used} tokens, more than the budget of {budget} "
                f"(window {window} less reserve {reserve}); shorten it or use a model with a "
                "larger window"
            )
    dropped: list[Dropped] = []
    kept_turns: list[Any] = []
    full = False
    for index in range(len(memory_messages) - 1, -1, -1):
        item = memory_messages[index]
        size = count(_text(item)) + per_message
        if not full and used + size <= budget:
            kept_turns.append(item)
            used += size
            continue
        reason = (
            f"did not fit ({size} tokens, {budget - used} left)"
            if not full
            else "older than a turn that did not fit"
        )
        full = True
        dropped.append(Dropped("turn", index, size, reason, item))
    kept_turns.reverse()
    order = sorted(range(len(passages)), key=lambda i: -_score(passages[i]))
    kept_passages: list[Any] = []
    for index in order:
        item = passages[index]
        size = count(_text(item))
        if used + size <= budget:
            kept_passages.append(item)
            used += size
        else:
            reason = f"did not fit ({size} tokens, {budget - used} left)"
            dropped.append(Dropped("passage", index, size, reason, item))
    return ContextFit(
        system=system,
        messages=tuple(kept_turns),
        passages=tuple(kept_passages),
        tokens=used,
        budget=budget,
        window=window,
        reserve=reserve,
        dropped=tuple(dropped),
    )
