"""Reading a run's server-sent events, and what following one remembers across reconnections.

Both clients (sync and async) feed lines to one :class:`Follower`; it parses them, turns each
message into a typed item and keeps the last durable sequence number, so that a reconnection
asks for exactly the events after it (``Last-Event-ID``): none is lost, none comes twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..server.wire import EndOfTurn, EventOut, LiveEvent, TokenChunk
from ._errors import ApiError

__all__ = ["FollowItem", "Follower"]

#: What following a run yields: a recorded event, a live notice, a streamed token, the end.
FollowItem = EventOut | LiveEvent | TokenChunk | EndOfTurn


@dataclass
class Follower:
    """The state of following one run: where it is (``after``: the last event received), what
    it asks for (``tokens``), whether it is over, and the message being read."""

    run_id: str
    after: int = 0
    tokens: bool = False
    ended: EndOfTurn | None = None
    _event: str = "message"
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def request(self, reconnect: bool) -> tuple[str, dict[str, Any], dict[str, str]]:
        """Path, query and headers of the next ``GET .../follow``. A reconnection names the
        last event received in ``Last-Event-ID``, as a browser's EventSource does."""
        params: dict[str, Any] = {"tokens": "true"} if self.tokens else {}
        headers: dict[str, str] = {"Accept": "text/event-stream"}
        if reconnect:
            headers["Last-Event-ID"] = str(self.after)
        else:
            params["after"] = self.after
        return f"/api/runs/{self.run_id}/follow", params, headers

    def feed(self, line: str) -> FollowItem | None:
        """One line of the stream; the item a message makes once its blank line arrives."""
        if line == "":
            item = self._message()
            self._event, self._data, self._id = "message", [], None
            return item
        if line.startswith(":"):
            return None  # a comment: the server's ping
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def _message(self) -> FollowItem | None:
        if not self._data:
            return None
        try:
            data = json.loads("\n".join(self._data))
        except ValueError as exc:
            raise self._bad(f"data is not JSON ({exc})") from None
        try:
            return self._item(self._event, data)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise self._bad(f"an {self._event!r} message that does not fit: {exc}") from None

    def _item(self, event: str, data: Any) -> FollowItem | None:
        if event == "event":
            e = EventOut.model_validate(data)
            self.after = max(self.after, e.seq)
            return e
        if event == "live":
            return LiveEvent.model_validate(data)
        if event == "token":
            return TokenChunk.model_validate(data)
        if event == "end":
            self.ended = EndOfTurn.model_validate(data)
            return self.ended
        if event == "error":
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise ApiError(
                f"run {self.run_id}: {error.get('message', data)}",
                status=None,
                kind=str(error.get("type", "server_error")),
                body=error if isinstance(error, dict) else {},
            )
        return None  # an event type of a later server: skipped

    def _bad(self, what: str) -> ApiError:
        return ApiError(f"following run {self.run_id}: {what}", status=None, kind="bad_response")
