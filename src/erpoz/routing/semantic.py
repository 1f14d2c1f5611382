"""Send each request to the route whose example prompts it is most like, by embedding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import ConfigError, ModelError
from ..models import ChatModel, ChatRequest, ChatResult, EmbedModel, StreamChunk
from ._decision import decided, recording, routed, routed_chunk

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Match", "SemanticRouter"]

Scoring = Literal["max", "top3"]

#: The route name a ``default`` model (one that is not already a route's) is recorded under.
DEFAULT_ROUTE = "default"


@dataclass(frozen=True, slots=True)
class Match:
    """A routing decision: the route taken, its model, every route's score, and why."""

    route: str
    model: ChatModel
    score: float | None
    scores: Mapping[str, float]
    reason: str


class SemanticRouter:
    """A chat model that sends each request to the route whose example prompts are most like
    it: cosine similarity between the embedding of what the user asked (the last user
    message; the whole prompt when there is none) and each route's examples.

    ``routes`` maps a route name to ``(model, example prompts)``. A route scores the highest
    similarity among its examples (``scoring="max"``) or the mean of its best three
    (``"top3"``, steadier when examples are many and mixed). When no route scores at least
    ``min_score`` the request goes to ``default`` -- a route's name, or a chat model of its
    own (recorded as route ``"default"``) -- or, without one, fails with ``ModelError``.
    Ties go to the route listed first.

    Examples are embedded once, on the first request (or :meth:`warm`); each request then
    costs one embedding of its prompt. Each decision is recorded in the calling step's run
    as ``route_decided``, with every route's score.
    """

    kind: ClassVar[str] = "semantic"

    def __init__(
        self,
        name: str,
        embedder: EmbedModel,
        routes: Mapping[str, tuple[ChatModel, Sequence[str]]],
        *,
        default: str | ChatModel | None = None,
        min_score: float = 0.0,
        scoring: Scoring = "max",
    ) -> None:
        if not isinstance(embedder, EmbedModel):
            raise ConfigError(
                f"router '{name}' needs an embedding model, not {type(embedder).__name__}"
            )
        if not routes:
            raise ConfigError(f"router '{name}' needs at least one route")
        if scoring not in ("max", "top3"):
            raise ConfigError(f"router '{name}': scoring is 'max' or 'top3', not {scoring!r}")
        table: dict[str, tuple[ChatModel, tuple[str, ...]]] = {}
        for route, (model, examples) in routes.items():
            if not isinstance(model, ChatModel):
                raise ConfigError(
                    f"router '{name}': route '{route}' needs a chat model, not "
                    f"{type(model).__name__}"
                )
            if isinstance(examples, str) or not examples:
                raise ConfigError(
                    f"router '{name}': route '{route}' needs a list of example prompts"
                )
            table[route] = (model, tuple(examples))
        self._default = self._default_route(name, table, default)
        try:
            import numpy  # noqa: F401  (similarity needs it: fail at build time, with the hint)
        except ImportError as exc:
            raise ConfigError(
                f"router '{name}': the semantic router needs numpy: pip install 'erpoz[local]'"
            ) from exc
        self.name = name
        self.embedder = embedder
        self.routes = table
        self.min_score = min_score
        self.scoring: Scoring = scoring
        members = [m for m, _ in table.values()]
        if self._default is not None:
            members.append(self._default[1])
        self.models = tuple(
            m for i, m in enumerate(members) if all(m is not o for o in members[:i])
        )
        # Every example's vector (unit rows, route after route) and each route's row span.
        self._examples: npt.NDArray[np.float32] | None = None
        self._spans = _spans(table)

    @staticmethod
    def _default_route(
        name: str,
        routes: Mapping[str, tuple[ChatModel, tuple[str, ...]]],
        default: str | ChatModel | None,
    ) -> tuple[str, ChatModel] | None:
        if default is None:
            return None
        if isinstance(default, str):
            if default not in routes:
                raise ConfigError(
                    f"router '{name}': default route '{default}' is not among its routes "
                    f"({', '.join(routes)})"
                )
            return default, routes[default][0]
        if not isinstance(default, ChatModel):
            raise ConfigError(
                f"router '{name}': default is a route name or a chat model, not "
                f"{type(default).__name__}"
            )
        for route, (model, _) in routes.items():
            if model is default:
                return route, model
        if DEFAULT_ROUTE in routes:
            raise ConfigError(
                f"router '{name}': a route is already called '{DEFAULT_ROUTE}'; give its "
                "name as default, or rename it"
            )
        return DEFAULT_ROUTE, default

    @property
    def default(self) -> str | None:
        """The route taken when no route reaches ``min_score``."""
        return None if self._default is None else self._default[0]

    async def _example_vectors(self) -> npt.NDArray[np.float32]:
        examples = self._examples
        if examples is None:
            texts = [text for _, examples_ in self.routes.values() for text in examples_]
            # Concurrent first requests may both embed the examples; either result serves.
            examples = self._examples = _unit_rows((await self.embedder.embed(texts)).vectors)
        return examples

    async def warm(self) -> None:
        """Embed the examples now (at start-up, say) instead of on the first request."""
        await self._example_vectors()

    async def choose(self, request: ChatRequest) -> Match:
        """The route this request goes to; ``ModelError`` when no route reaches ``min_score``
        and there is no default. Records the decision in the calling step's run."""
        examples = await self._example_vectors()
        text = _query_text(request)
        query = _unit_rows((await self.embedder.embed([text])).vectors)[0]
        sims = examples @ query
        scores: dict[str, float] = {}
        for name, start, end in self._spans:
            part = sims[start:end]
            if self.scoring == "max":
                scores[name] = float(part.max())
            elif len(part) <= 3:
                scores[name] = float(part.mean())
            else:
                scores[name] = float(part[part.argpartition(-3)[-3:]].mean())
        best = max(scores, key=scores.__getitem__)
        best_score = scores[best]
        if best_score >= self.min_score:
            route: str | None = best
            reason = f"most similar: '{best}' ({best_score:.3f})"
            if self.min_score > 0:
                reason += f", min_score {self.min_score:g}"
        elif self._default is not None:
            route = self._default[0]
            reason = (
                f"no route reached min_score {self.min_score:g} (best '{best}' "
                f"{best_score:.3f}); default route"
            )
        else:
            route = None
            reason = (
                f"no route reached min_score {self.min_score:g} (best '{best}' "
                f"{best_score:.3f}) and there is no default"
            )
        model = None if route is None else self._model_of(route)
        if recording():
            self._record(scores, route, model, reason)
        if route is None or model is None:
            raise ModelError(reason, model=self.name)
        return Match(route, model, scores.get(route), scores, reason)

    def _model_of(self, route: str) -> ChatModel:
        if route in self.routes:
            return self.routes[route][0]
        assert self._default is not None and self._default[0] == route
        return self._default[1]

    async def generate(self, request: ChatRequest) -> ChatResult:
        match = await self.choose(request)
        return routed(await match.model.generate(request), self.name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        match = await self.choose(request)
        async for chunk in match.model.stream(request):
            yield routed_chunk(chunk, self.name)

    def _record(
        self,
        scores: Mapping[str, float],
        route: str | None,
        model: ChatModel | None,
        reason: str,
    ) -> None:
        ranked = sorted(scores, key=lambda r: -scores[r])
        candidates: list[dict[str, Any]] = [
            {"route": r, "model": self.routes[r][0].name, "score": round(scores[r], 4)}
            for r in ranked
        ]
        if self._default is not None and self._default[0] not in scores:
            candidates.append(
                {"route": self._default[0], "model": self._default[1].name, "score": None}
            )
        decided(
            self.name,
            self.kind,
            candidates,
            route,
            reason,
            model=None if model is None else model.name,
            embedder=self.embedder.name,
        )


def _spans(routes: Mapping[str, tuple[ChatModel, tuple[str, ...]]]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    start = 0
    for route, (_, examples) in routes.items():
        spans.append((route, start, start + len(examples)))
        start += len(examples)
    return spans


def _query_text(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return request.prompt_text


def _unit_rows(vectors: Sequence[Sequence[float]]) -> npt.NDArray[np.float32]:
    import numpy as np

    m = np.asarray(vectors, dtype=np.float32)
    if m.ndim != 2 or not len(m):
        raise ModelError("the embedding model returned no vectors")
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return m
