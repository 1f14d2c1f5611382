"""What every router shares: its members, seen once at construction; a validator's verdict;
the ``route_decided`` event; and the small result and stream rewrites a router makes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError, ModelError
from ..models import (
    ChatModel,
    ChatRequest,
    ChatResult,
    Metered,
    ModelSpec,
    StreamChunk,
    count_tokens,
    current_recorder,
)

#: The errors that send a router on to another model: a provider's failure and a timeout.
#: ``BudgetExceeded`` is a ``ModelError`` too; routers test for it first and re-raise it.
FALL_THROUGH: tuple[type[BaseException], ...] = (ModelError, TimeoutError)


#: What ``Metered.estimate`` assumes a call generates when the request sets no ``max_tokens``.
DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True, slots=True)
class Verdict:
    """A validator's judgement of an answer: accepted or not, an optional score, and why.

    ``abstained`` says that the validator does not judge answers of this form (a numeric
    check on a multiple-choice answer): the answer passes it, and nothing was learned."""

    ok: bool
    score: float | None = None
    reason: str = ""
    abstained: bool = False

    @classmethod
    def abstain(cls, reason: str) -> Verdict:
        """Not judged here: passes, with no score."""
        return cls(True, None, reason, True)


class Member:
    """A router's model, with what the router needs of it looked up once: its spec (models
    wrapped in ``Metered`` have one, routers do not) and its cost estimate."""

    __slots__ = ("estimate", "model", "name", "price_in", "price_out", "spec")

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.name: str = model.name
        spec = getattr(model, "spec", None)
        self.spec: ModelSpec | None = spec if isinstance(spec, ModelSpec) else None
        est = getattr(model, "estimate", None)
        self.estimate: Callable[[ChatRequest], float | None] | None = est if callable(est) else None
        # A metered model with the default tokenizer: its estimate is plain arithmetic on the
        # prompt's token count, which a router counts once per decision, not once per model.
        self.price_in: float | None = None
        self.price_out = 0.0
        if isinstance(model, Metered) and model._count is count_tokens:
            self.price_in = model.spec.price_in
            self.price_out = model.spec.price_out

    def cost(self, request: ChatRequest, tokens: int | None = None) -> float | None:
        """Expected cost of sending ``request`` here (what ``Metered.estimate`` says), when
        the model can tell; ``tokens`` is the prompt's ``count_tokens``, when already known."""
        if self.price_in is not None and tokens is not None:
            out = request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_TOKENS
            return (tokens * self.price_in + out * self.price_out) / 1e6
        return None if self.estimate is None else self.estimate(request)


def members_of(router: str, models: Sequence[ChatModel]) -> tuple[Member, ...]:
    if not models:
        raise ConfigError(f"router '{router}' needs at least one model")
    out = tuple(Member(m) for m in models)
    seen: set[str] = set()
    for m in out:
        if m.name in seen:
            raise ConfigError(f"router '{router}' lists model '{m.name}' twice")
        seen.add(m.name)
    return out


def prompt_tokens(request: ChatRequest) -> int:
    return count_tokens(request.prompt_text)


def recording() -> bool:
    """Whether a step's run is listening; routers build decision events only then."""
    return current_recorder() is not None


def decided(
    router: str,
    kind: str,
    candidates: list[dict[str, Any]],
    winner: str | None,
    reason: str,
    **extra: Any,
) -> None:
    """Record a ``route_decided`` event in the calling step's run (nothing outside a run)."""
    rec = current_recorder()
    if rec is None:
        return
    data: dict[str, Any] = {
        "router": router,
        "kind": kind,
        "candidates": candidates,
        "winner": winner,
        "reason": reason,
    }
    if extra:
        data.update(extra)
    rec.emit("route_decided", data)


_RESULT_FIELDS = tuple(f.name for f in fields(ChatResult))
_ROUTE = _RESULT_FIELDS.index("route")


def routed(result: ChatResult, router: str) -> ChatResult:
    """The result as the caller sees it: the router's name first on its route.

    (``dataclasses.replace`` does the same at several times the cost, on every call.)
    """
    values = [getattr(result, f) for f in _RESULT_FIELDS]
    values[_ROUTE] = (router, *result.route)
    return ChatResult(*values)


def routed_chunk(chunk: StreamChunk, router: str) -> StreamChunk:
    if chunk.result is None:
        return chunk
    return StreamChunk(chunk.text, routed(chunk.result, router))


def describe(name: str, exc: BaseException) -> str:
    """``name: what went wrong`` without repeating the name a ModelError already carries."""
    if isinstance(exc, ModelError) and exc.model:
        return str(exc) if exc.model == name else f"{name}: {exc}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = f"timed out{': ' + str(exc) if str(exc) else ''}"
    return f"{name}: {text}"


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or (isinstance(exc, ModelError) and exc.retryable)


def cost_field(value: float | None) -> float | None:
    return None if value is None else round(value, 9)


async def aclose(it: AsyncIterator[Any]) -> None:
    """Close an abandoned stream so that its provider releases the connection now."""
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()
