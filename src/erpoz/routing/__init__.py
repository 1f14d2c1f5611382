"""Routers: chat models that pick, per request, which configured model answers.

Each router wraps other chat models (normally the hub's metered ones, so every underlying
call is recorded once, as ``model_called``) and records each decision in the calling step's
run as a ``route_decided`` event: the candidates with their expected cost, the winner, why.
"""

from ._decision import Verdict
from .balance import LoadBalanceRouter
from .cascade import CascadeRouter, Validator
from .cheapest import CheapestCapableRouter
from .fallback import FallbackRouter
from .online import OnlineRouter
from .prior import PriorRouter
from .semantic import SemanticRouter

__all__ = [
    "CascadeRouter",
    "CheapestCapableRouter",
    "FallbackRouter",
    "LoadBalanceRouter",
    "OnlineRouter",
    "PriorRouter",
    "SemanticRouter",
    "Validator",
    "Verdict",
]
