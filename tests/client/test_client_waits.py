"""The Python client and durable waits, against a real ``erpoz serve``: idempotent starts
(``run_id``), messages (``send``), published events and forks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from erpoz.client import Client

from .conftest import KEY, serve, stop

WAITS = Path(__file__).resolve().parents[1] / "engine" / "wait_flows.py"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("waits")
    where, proc = serve(workdir, [f"{WAITS}:replier"], "", f"{KEY}=acme:ann")
    try:
        yield where
    finally:
        stop(proc)


def test_the_client_sends_forks_and_starts_idempotently(url: str) -> None:
    with Client(url, api_key=KEY) as client:
        first = client.run("replier", {"ticket": "T5"}, run_id="c-5")
        assert (first.run_id, first.status) == ("c-5", "waiting")
        assert first.wake_at is not None and first.wake_on == "msg:reply"
        assert client.published("c-5", "answered") is None
        assert client.send("c-5", "reply", "fine") >= 1
        assert client.resume("c-5").output == "T5: fine"
        assert client.published("c-5", "answered") == {"ticket": "T5", "reply": "fine"}
        assert client.run("replier", {"ticket": "T5"}, run_id="c-5").output == "T5: fine"
        forked = client.fork("c-5", inputs={"ticket": "T6"})
        assert forked.status == "waiting" and forked.run_id != "c-5"
        assert client.get(forked.run_id).parent_run_id == "c-5"
