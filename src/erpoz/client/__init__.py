"""A Python client of ``erpoz serve``: start runs, wait for them, follow them live (with
reconnection), stream their model tokens, decide reviews, verify the audit chains, read
statistics. Answers are the pydantic models the server writes (:mod:`erpoz.server.wire`);
errors are erpoz errors carrying the HTTP status, never raw httpx errors.

>>> from erpoz.client import Client
>>> with Client("http://127.0.0.1:8000", api_key="...") as c:  # doctest: +SKIP
...     print(c.run("triage", {"ticket": "refund INV-1"}).unwrap())
"""

from ..server.wire import (
    EndOfTurn,
    EventOut,
    EventPage,
    FlowInfo,
    Health,
    LiveEvent,
    ModelStats,
    QualityStats,
    ReviewItem,
    RunDetail,
    RunInfoOut,
    RunOutcome,
    TokenChunk,
    VerifyReport,
    WhoAmI,
)
from ._client import DEFAULT_URL, AsyncClient, Client
from ._errors import (
    ApiError,
    AuthenticationFailed,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    ServerUnavailable,
    WaitTimedOut,
)
from ._sse import FollowItem

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "AsyncClient",
    "AuthenticationFailed",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "EndOfTurn",
    "EventOut",
    "EventPage",
    "FlowInfo",
    "FollowItem",
    "Health",
    "InvalidRequest",
    "LiveEvent",
    "ModelStats",
    "NotFound",
    "QualityStats",
    "ReviewItem",
    "RunDetail",
    "RunInfoOut",
    "RunOutcome",
    "ServerUnavailable",
    "TokenChunk",
    "VerifyReport",
    "WaitTimedOut",
    "WhoAmI",
]
