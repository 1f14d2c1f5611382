"""An online router that starts from a static router and corrects it where the log disagrees.

:class:`PriorRouter` routes between a cheap model (or a cascade) and a strong one the way a
:class:`~erpoz.routing.learned.ClassifierRouter` does -- the strong model when a classifier's
score of ``label`` (the *prior*: typically a router fitted and tuned on another task) reaches
``threshold`` -- and learns, from the quality signals of the run log (feedback, reviews,
guards, its validators: see :mod:`erpoz.routing.online`), where on *this* traffic the prior is
wrong. Per model, the same Bayesian linear model of quality as :class:`OnlineRouter`'s (a
prompt's kind from its embedding's hyperplane code, and its length). From them, the strong
model's expected gain over the cheap one on the prompt, less its mean gain over the recent
prompts, is weighed against the prior by their precisions: it calls the strong model when
``(1 - w) * (score - threshold) + w * gain >= 0``, with ``w = PRIOR_SD² / (PRIOR_SD² +
(confidence * sd)²)`` (``sd`` the gain's posterior standard deviation). With no evidence ``w``
is near 0 and the router *is* the static router; on a kind of prompt it has seen much of,
this traffic's evidence decides.

What it can observe is kept honest: a grade is only ever told for the model that answered.
Where the prior sends every prompt of a kind to the strong model, the cheap one is never
graded there; ``explore`` (a share of the decisions, default 5%) sends such a prompt to the
cheap model instead -- its cost and its quality are those of a real call, counted like any
other -- so that a prior that overspends can be corrected too. A prior that underspends (the
cheap model fails where it was trusted) is corrected from its own observed failures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, ModelError
from ..models import ChatModel, ChatRequest, Classifier, EmbedModel
from .cascade import Validator
from .online import SHRINK, Choice, OnlineRouter, _query_text

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["PriorRouter"]

#: The prior's own uncertainty about the strong model's gain on a prompt (a standard
#: deviation, in quality): about what ``SHRINK`` signals of a coin-flip grade pin down
#: (0.5 / sqrt(4)). Evidence whose uncertainty is below it outweighs the prior. Set by
#: reasoning, not tuned.
PRIOR_SD = 0.25

#: The exploration budget by default: a share of decisions that may try the cheap model
#: where the prior sends the strong one.
EXPLORE = 0.05


class PriorRouter(OnlineRouter):
    """A chat model: ``cheap`` or ``strong`` by ``classifier``'s score of ``label`` against
    ``threshold`` (the static router it starts as), corrected by what the log says of each
    model on each kind of prompt (see the module). ``confidence`` scales the gain's standard
    deviation when it is weighed against the prior (``PRIOR_SD``); ``explore`` the share of
    decisions that may try ``cheap`` where the corrected prior sends ``strong``; the other
    options are :class:`OnlineRouter`'s."""

    kind: ClassVar[str] = "online"

    def __init__(
        self,
        name: str,
        cheap: ChatModel,
        strong: ChatModel,
        embedder: EmbedModel,
        classifier: Classifier,
        *,
        label: str = "strong",
        threshold: float = 0.5,
        explore: float = EXPLORE,
        bits: int = 32,
        confidence: float = 1.0,
        shrink: float = SHRINK,
        validators: Sequence[Validator] = (),
        validator_weight: float = 1.0,
        store: Store | str | None = None,
        refresh_s: float = 30.0,
        seed: int = 0,
    ) -> None:
        if not isinstance(classifier, Classifier):
            raise ConfigError(
                f"router '{name}' needs a classifier (its prior), not {type(classifier).__name__}"
            )
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ConfigError(f"router '{name}': threshold is between 0 and 1, not {threshold}")
        if not confidence > 0:  # 0 would trust one grade over the prior from the first call
            raise ConfigError(f"router '{name}': confidence > 0, not {confidence}")
        super().__init__(
            name,
            [cheap, strong],
            embedder,
            target=threshold,
            explore=explore,
            bits=bits,
            confidence=confidence,
            shrink=shrink,
            validators=validators,
            validator_weight=validator_weight,
            store=store,
            refresh_s=refresh_s,
            seed=seed,
        )
        self.classifier = classifier
        self.label = label
        self.threshold = threshold
        self.confidence = confidence
        # the prior is part of what makes decisions comparable across processes
        self.space = self.space[:6] + _short(f"{classifier.name}|{label}")

    async def prior(self, request: ChatRequest) -> float:
        """The prior's score of ``label`` for this request's last user message."""
        scores = (await self.classifier.classify(_query_text(request))).scores
        if self.label not in scores:
            raise ModelError(
                f"classifier '{self.classifier.name}' gives no score for label "
                f"'{self.label}' (it gives: {', '.join(sorted(scores)) or 'none'})",
                model=self.name,
            )
        return float(scores[self.label])

    def evidence(self, code: int, tokens: int | None) -> tuple[float, float, Any, Any]:
        """What this traffic says of a prompt: the strong model's expected gain over the cheap
        one there, less its mean gain over the recent prompts; the weight that deserves
        against the prior (its precision over the prior's: 0 with no evidence, towards 1 with
        much); and each model's mean and standard deviation there."""
        import numpy as np

        state = self.state
        phi = state.features([code], [tokens])
        recent = list(state.recent)
        if recent:
            around = state.features([c for c, _ in recent], [t for _, t in recent]).mean(axis=0)
        else:
            around = phi[0]
        mean, sd = state.posterior(np.vstack([phi, around[None, :]]))
        gain = float(mean[0, 1] - mean[0, 0]) - float(mean[1, 1] - mean[1, 0])
        spread = math.hypot(float(sd[0, 0]), float(sd[0, 1]))
        trust = PRIOR_SD**2 / (PRIOR_SD**2 + (self.confidence * spread) ** 2)
        return gain, trust, mean[0], sd[0]

    async def _choose(self, request: ChatRequest, code: int, tokens: int | None) -> Choice:
        prior = await self.prior(request)
        with self.state.lock:
            return self.decide(prior, code, tokens)

    def decide(self, prior: float, code: int, tokens: int | None) -> Choice:
        """The model for a prompt whose prior score is ``prior``, of ``code`` and ``tokens``
        (see the module); the caller holds the state's lock."""
        gain, trust, mean, sd = self.evidence(code, tokens)
        lean = (1.0 - trust) * (prior - self.threshold) + trust * gain
        arm = 1 if lean >= 0 else 0
        low = (float(mean[0] - self.state.z * sd[0]), float(mean[1] - self.state.z * sd[1]))
        table = tuple((low[a], self.state.weight[a]) for a in range(2))
        budget = self.state.explored < self.explore * (self.state.decisions + 1)
        if arm == 1 and self.explore > 0 and budget and self._rng.random() < self.explore:
            return Choice(
                0,
                True,
                f"explored: the cheap model where the prior ({prior:.3f}; learned "
                f"{gain:+.3f} at weight {trust:.2f}) sends the strong one",
                table,
                prior,
            )
        reason = (
            f"prior {prior:.3f} against threshold {self.threshold:.3g}; learned gain "
            f"{gain:+.3f} over the usual at weight {trust:.2f}: {'strong' if arm else 'cheap'}"
        )
        return Choice(arm, False, reason, table, prior)

    def _decision_fields(self) -> dict[str, Any]:
        return {"threshold": self.threshold}


def _short(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:6]
