"""Learned routing: a classifier reads the prompt and a threshold on its score picks the model.

- :class:`LogisticClassifier` is a :class:`~erpoz.models.Classifier`: logistic regression
  (numpy only) on the sentence embeddings of any :class:`~erpoz.models.EmbedModel` (MiniLM
  locally). Fit it on texts labelled ``True`` (needs the strong model) or ``False``; save its
  weights as JSON and load them without refitting.
- :class:`ClassifierRouter` is a router (a chat model): it asks a classifier about the last
  user message and sends the request to ``strong`` when the score of ``label`` is at least
  ``threshold``, else to ``weak``. ``weak`` and ``strong`` are any chat models -- a cascade
  as ``weak`` gives a router that sends hard prompts straight to the strong model and lets
  the cascade judge the rest.

Sweeping ``threshold`` from 1 to 0 trades cost for quality: ``erpoz eval routing`` does that
on recorded answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, ModelError
from ..models import (
    ChatModel,
    ChatRequest,
    ChatResult,
    Classifier,
    ClassifyResult,
    EmbedModel,
    StreamChunk,
)
from ._decision import (
    cost_field,
    decided,
    members_of,
    prompt_tokens,
    recording,
    routed,
    routed_chunk,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

__all__ = ["ClassifierRouter", "LogisticClassifier", "fit_logistic"]


def fit_logistic(
    x: Array, y: Array, *, l2: float = 1.0, max_iter: int = 50, tol: float = 1e-8
) -> tuple[Array, float]:
    """Weights and intercept of an L2-regularised logistic regression of ``y`` (0/1) on the
    rows of ``x``, by Newton's method. ``l2`` is the penalty on the weights (not the
    intercept), scaled like scikit-learn's ``1 / C``."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, float(l2))
    reg[-1] = 0.0
    for _ in range(max_iter):
        z = np.clip(xb @ w, -35.0, 35.0)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1.0 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return w[:-1], float(w[-1])


class LogisticClassifier:
    """A :class:`~erpoz.models.Classifier`: logistic regression on text embeddings.

    ``labels`` names the positive class and the other one (default ``("strong", "weak")``):
    ``classify(text).scores`` is ``{positive: p, other: 1 - p}``. Fit with :meth:`fit`
    (texts, embedded by ``embedder``) or :meth:`fit_vectors` (vectors already made); until
    then ``classify`` fails with a ``ModelError``. ``l2`` is the weight penalty (larger: a
    simpler model).
    """

    def __init__(
        self,
        name: str,
        embedder: EmbedModel,
        *,
        labels: tuple[str, str] = ("strong", "weak"),
        l2: float = 1.0,
    ) -> None:
        if len(labels) != 2 or labels[0] == labels[1]:
            raise ConfigError(f"classifier '{name}': two different labels, not {labels!r}")
        self.name = name
        self.embedder = embedder
        self.labels = labels
        self.l2 = l2
        self.weights: Array | None = None
        self.bias = 0.0

    @property
    def fitted(self) -> bool:
        return self.weights is not None

    def fit_vectors(self, vectors: Any, targets: Sequence[bool] | Any) -> LogisticClassifier:
        """Fit on embedding rows and their labels (``True``: the positive label)."""
        import numpy as np

        x = np.asarray(vectors, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y) or not len(x):
            raise ValueError(f"{len(x)} vectors for {len(y)} labels")
        self.weights, self.bias = fit_logistic(x, y, l2=self.l2)
        return self

    async def fit(self, texts: Sequence[str], targets: Sequence[bool]) -> LogisticClassifier:
        """Embed ``texts`` and fit on them."""
        embedded = await self.embedder.embed(list(texts))
        return self.fit_vectors(embedded.vectors, targets)

    def probabilities(self, vectors: Any) -> Array:
        """The positive label's probability for each embedding row."""
        import numpy as np

        if self.weights is None:
            raise ModelError("the classifier is not fitted yet", model=self.name)
        z = np.asarray(vectors, dtype=np.float64) @ self.weights + self.bias
        out: Array = 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))
        return out

    async def classify(self, text: str) -> ClassifyResult:
        embedded = await self.embedder.embed([text])
        p = float(self.probabilities(embedded.vectors)[0])
        return ClassifyResult({self.labels[0]: p, self.labels[1]: 1.0 - p}, self.name)

    # --- persistence ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        if self.weights is None:
            raise ModelError("the classifier is not fitted yet", model=self.name)
        return {
            "name": self.name,
            "labels": list(self.labels),
            "l2": self.l2,
            "embedder": self.embedder.name,
            "bias": self.bias,
            "weights": [float(w) for w in self.weights],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], embedder: EmbedModel) -> LogisticClassifier:
        import numpy as np

        labels = tuple(doc["labels"])
        model = cls(str(doc["name"]), embedder, labels=(labels[0], labels[1]), l2=doc["l2"])
        model.weights = np.asarray(doc["weights"], dtype=np.float64)
        model.bias = float(doc["bias"])
        return model

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedder: EmbedModel) -> LogisticClassifier:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")), embedder)


def _query_text(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return request.prompt_text


class ClassifierRouter:
    """A chat model that asks ``classifier`` about the request (its last user message) and
    sends it to ``strong`` when the score of ``label`` is at least ``threshold``, else to
    ``weak``. It does not fall back: put it in a fallback router for that.

    Each decision is recorded as ``route_decided`` (kind ``classifier``) with the score, the
    threshold, and each member's expected cost; the classifier's own call is not a
    ``model_called`` event (as with a semantic router's embeddings).
    """

    kind: ClassVar[str] = "classifier"

    def __init__(
        self,
        name: str,
        classifier: Classifier,
        weak: ChatModel,
        strong: ChatModel,
        *,
        label: str = "strong",
        threshold: float = 0.5,
    ) -> None:
        if not isinstance(classifier, Classifier):
            raise ConfigError(
                f"router '{name}' needs a classifier, not {type(classifier).__name__}"
            )
        self.name = name
        self.classifier = classifier
        self._members = members_of(name, [weak, strong])
        self.models = (weak, strong)
        self.label = label
        self.threshold = threshold

    @property
    def weak(self) -> ChatModel:
        return self.models[0]

    @property
    def strong(self) -> ChatModel:
        return self.models[1]

    def estimate(self, request: ChatRequest) -> float | None:
        """What the weak side would cost (the strong side costs more)."""
        return self._members[0].cost(request)

    async def score(self, request: ChatRequest) -> float:
        """The classifier's score of ``label`` for this request."""
        verdict = await self.classifier.classify(_query_text(request))
        try:
            return float(verdict.scores[self.label])
        except KeyError:
            raise ModelError(
                f"classifier '{self.classifier.name}' gave no score for label '{self.label}' "
                f"(labels: {', '.join(verdict.scores)})",
                model=self.name,
            ) from None

    async def choose(self, request: ChatRequest) -> ChatModel:
        """The member this request goes to; records the decision in the calling run."""
        score = await self.score(request)
        index = 1 if score >= self.threshold else 0
        if recording():
            tokens = prompt_tokens(request)
            rows = [
                {
                    "model": m.name,
                    "route": side,
                    "estimate_usd": cost_field(m.cost(request, tokens)),
                }
                for m, side in zip(self._members, ("weak", "strong"), strict=True)
            ]
            cmp = "≥" if index else "<"
            decided(
                self.name,
                self.kind,
                rows,
                self._members[index].name,
                f"{self.label} score {score:.3f} {cmp} threshold {self.threshold:g}",
                score=round(score, 6),
                threshold=self.threshold,
                classifier=self.classifier.name,
            )
        return self.models[index]

    async def generate(self, request: ChatRequest) -> ChatResult:
        model = await self.choose(request)
        return routed(await model.generate(request), self.name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        model = await self.choose(request)
        async for chunk in model.stream(request):
            yield routed_chunk(chunk, self.name)
