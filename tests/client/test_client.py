"""erpoz.client against a real ``erpoz serve`` (a child process): runs, reviews, audit, stats,
errors, following with reconnection after the connection drops, streamed tokens."""

from __future__ import annotations

import asyncio

import pytest

from erpoz import StepFailed
from erpoz.client import (
    ApiError,
    AsyncClient,
    AuthenticationFailed,
    Client,
    Conflict,
    ConnectionFailed,
    EndOfTurn,
    EventOut,
    InvalidRequest,
    NotFound,
    TokenChunk,
    WaitTimedOut,
)
from erpoz.errors import RunError, WaitingForReview

from ._proxy import CuttableProxy
from .conftest import KEY, OTHER_KEY, Served, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def client(served: Served) -> Client:
    with Client(served.url, api_key=KEY) as c:
        yield c  # type: ignore[misc]


def test_a_run_from_start_to_audit(client: Client) -> None:
    assert client.health().status == "ok"
    me = client.whoami()
    assert (me.tenant, me.name, me.auth) == ("acme", "ann", True)
    assert {f.name for f in client.flows()} >= {"echo", "review", "story"}

    outcome = client.run("echo", {"text": "  hello   there "}, tags={"user": "u1"})
    assert outcome.status == "succeeded" and outcome.unwrap() == "HELLO THERE"

    detail = client.get(outcome.run_id)
    assert detail.status == "succeeded" and detail.tenant == "acme"
    assert [s.step for s in detail.steps] == ["shout"] and detail.steps[0].status == "succeeded"
    page = client.events(outcome.run_id)
    kinds = [e.kind for e in page.events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_succeeded"
    assert [e.seq for e in page.events] == list(range(1, len(kinds) + 1))
    assert page.events[-1].payload == "HELLO THERE"
    assert client.events(outcome.run_id, after=len(kinds) - 1).events[0].kind == "run_succeeded"

    assert outcome.run_id in {r.run_id for r in client.runs(flow="echo")}
    report = client.verify()
    assert report.ok and report.runs >= 1 and report.problems == []
    assert client.verify(outcome.run_id).run == outcome.run_id
    records = list(client.export())
    assert any(r["run_id"] == outcome.run_id for r in records)


def test_another_tenant_sees_nothing(served: Served, client: Client) -> None:
    run_id = client.run("echo", {"text": "mine"}).run_id
    with Client(served.url, api_key=OTHER_KEY) as other:
        with pytest.raises(NotFound) as err:
            other.get(run_id)
        assert err.value.status == 404 and err.value.kind == "not_found"
        assert isinstance(err.value, RunError)  # an erpoz error, not an httpx one
        assert run_id not in {r.run_id for r in other.runs()}


def test_errors_carry_status_kind_and_field(served: Served, client: Client) -> None:
    with pytest.raises(NotFound) as nf:
        client.run("no-such-flow")
    assert nf.value.status == 404 and "no flow 'no-such-flow'" in str(nf.value)
    assert "echo" in nf.value.body["flows"]

    with pytest.raises(InvalidRequest) as bad:
        client.run("echo", {"txt": "typo"})
    assert bad.value.status == 422 and bad.value.param == "inputs"

    done = client.run("echo", {"text": "x"})
    with pytest.raises(Conflict) as conflict:
        client.resume(done.run_id)
    assert conflict.value.status == 409 and "already succeeded" in conflict.value.message

    with Client(served.url) as anonymous, pytest.raises(AuthenticationFailed) as e401:
        anonymous.runs()
    assert e401.value.status == 401
    with Client(served.url, api_key="wrong-key-0123456789") as wrong:
        with pytest.raises(AuthenticationFailed) as bad_key:
            wrong.runs()
        assert bad_key.value.status == 401 and bad_key.value.kind == "authentication_error"
        assert wrong.health().status == "ok"  # the only route without a key

    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as nobody:
        with pytest.raises(ConnectionFailed) as down:
            nobody.health()
        assert down.value.status is None and isinstance(down.value, ApiError)


def test_a_failed_run_is_an_outcome_and_unwrap_names_the_step(client: Client) -> None:
    outcome = client.run("fail", {"text": "boom"})
    assert outcome.status == "failed" and outcome.failed_step == "explode"
    assert "ValueError" in (outcome.error or "")
    with pytest.raises(StepFailed) as err:
        outcome.unwrap()
    assert err.value.step == "explode" and err.value.run_id == outcome.run_id
    # the same outcome, waited for instead of answered
    started = client.start("fail", {"text": "again"})
    waited = client.wait(started.run_id, timeout=30)
    assert (waited.status, waited.failed_step) == ("failed", "explode")
    assert "ValueError" in (waited.error or "")


def test_review_wait_edit_approve(client: Client) -> None:
    outcome = client.run("review", {"name": "Ann"})
    assert outcome.status == "waiting" and outcome.waiting_steps == ["draft"]
    with pytest.raises(WaitingForReview) as waiting:
        outcome.unwrap()
    assert waiting.value.steps == ("draft",) and waiting.value.run_id == outcome.run_id

    [item] = client.reviews(outcome.run_id)
    assert item.step == "draft" and item.proposal == "Dear Ann, your refund is approved."
    assert outcome.run_id in {r.run_id for r in client.reviews()}

    with pytest.raises(InvalidRequest) as bad:
        client.edit(outcome.run_id, {"not": "a string"})
    assert bad.value.param == "output"
    assert client.get(outcome.run_id).status == "waiting"  # still waiting, nothing lost

    done = client.edit(outcome.run_id, "Dear Ann, approved.", comment="shorter")
    assert done.status == "succeeded" and done.output == "sent: Dear Ann, approved."
    with pytest.raises(Conflict):
        client.approve(outcome.run_id)  # waits for nothing any more
    decided = [e for e in client.events(outcome.run_id).events if e.kind == "review_resolved"]
    assert decided[0].data is not None and decided[0].data["reviewer"] == "ann"

    rejected = client.run("review", {"name": "Bob"})
    assert client.reject(rejected.run_id, comment="no").status == "failed"


def test_wait_times_out_and_the_run_goes_on(served: Served, client: Client) -> None:
    gate = served.workdir / "gate-timeout"
    started = client.start("gated", {"gate": str(gate)})
    with pytest.raises(WaitTimedOut) as err:
        client.wait(started.run_id, timeout=0.5)
    assert err.value.run_id == started.run_id and isinstance(err.value, RunError)
    gate.touch()
    assert client.wait(started.run_id, timeout=30).output == "opened and done"


def _received(items: list[object]) -> list[EventOut]:
    return [i for i in items if isinstance(i, EventOut)]


def test_follow_reconnects_after_the_connection_drops(served: Served) -> None:
    """The connection is cut while the run waits at its gate (the moment is picked from the
    events received: `first` recorded); the client reconnects with Last-Event-ID and gets
    every event exactly once, in order, hashes as recorded."""
    gate = served.workdir / "gate-sync"
    port = int(served.url.rsplit(":", 1)[1])
    with CuttableProxy(port) as proxy, Client(proxy.url, api_key=KEY) as c:
        run_id = c.start("gated", {"gate": str(gate)}).run_id
        items: list[object] = []
        cut = 0
        for item in c.follow(run_id):
            items.append(item)
            if (
                not cut
                and isinstance(item, EventOut)
                and item.kind == "step_succeeded"
                and item.step == "first"
            ):
                cut = proxy.cut()
                gate.touch()
        assert cut >= 1
        assert isinstance(items[-1], EndOfTurn) and items[-1].status == "succeeded"
        got = _received(items)
        recorded = c.events(run_id).events
        assert [(e.seq, e.hash) for e in got] == [(e.seq, e.hash) for e in recorded]
        resumed = [h for h in proxy.heads if b"last-event-id:" in h.lower()]
        assert resumed, "the reconnection did not name the last event"


def test_async_follow_reconnects_and_waits(served: Served) -> None:
    gate = served.workdir / "gate-async"
    port = int(served.url.rsplit(":", 1)[1])

    async def main() -> tuple[list[object], list[EventOut], str | None]:
        with CuttableProxy(port) as proxy:
            async with AsyncClient(proxy.url, api_key=KEY) as c:
                run_id = (await c.start("gated", {"gate": str(gate)})).run_id
                items: list[object] = []
                async for item in c.follow(run_id):
                    items.append(item)
                    first_done = isinstance(item, EventOut) and item.step == "first"
                    if first_done and item.kind == "step_succeeded" and not gate.exists():
                        proxy.cut()
                        gate.touch()
                recorded = (await c.events(run_id)).events
                outcome = await c.wait(run_id, timeout=30)
                return items, recorded, outcome.output

    items, recorded, output = asyncio.run(main())
    assert [(e.seq, e.hash) for e in _received(items)] == [(e.seq, e.hash) for e in recorded]
    assert output == "opened and done"


def test_follow_gives_up_when_the_server_is_gone(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    gate = served.workdir / "gate-gone"
    with CuttableProxy(port) as proxy, Client(proxy.url, api_key=KEY, max_reconnects=2) as c:
        run_id = c.start("gated", {"gate": str(gate)}).run_id
        with pytest.raises(ConnectionFailed) as err:
            for item in c.follow(run_id):
                if isinstance(item, EventOut) and item.step == "first":
                    proxy.close()  # no new connection is accepted either
        assert "gave up after 2 reconnections" in err.value.message
    gate.touch()


def test_stream_tokens_as_the_step_streams(served: Served, client: Client) -> None:
    items = list(client.stream("story", {"topic": "a kettle"}))
    tokens = [i for i in items if isinstance(i, TokenChunk)]
    end = items[-1]
    assert isinstance(end, EndOfTurn) and end.status == "succeeded"
    run_id = end.run_id
    assert len(tokens) > 3 and {t.step for t in tokens} == {"tell"}
    assert all(t.delivery is True and t.run_id == run_id for t in tokens)
    output = client.get(run_id).output
    assert (
        "".join(t.text for t in tokens)
        == output
        == "echo: Tell a story about a story about a kettle"
    )
    # tokens came while the step ran: before its success was recorded
    first_token = items.index(tokens[0])
    told = next(
        i
        for i, x in enumerate(items)
        if isinstance(x, EventOut) and x.kind == "step_succeeded" and x.step == "tell"
    )
    assert first_token < told
    # the log records the output once, not the tokens
    log = client.events(run_id).events
    assert not any(e.kind == "token" for e in log)
    [called] = [e for e in log if e.kind == "model_called"]
    assert called.data is not None and called.data["model"] == "writer"
    assert called.data["status"] == "ok" and called.data["cost_usd"] > 0


def test_async_stream_and_follow_with_tokens(served: Served) -> None:
    async def main() -> tuple[list[object], str]:
        async with AsyncClient(served.url, api_key=KEY) as c:
            items = [i async for i in c.stream("story", {"topic": "tea"})]
            end = items[-1]
            assert isinstance(end, EndOfTurn)
            return items, (await c.get(end.run_id)).output

    items, output = asyncio.run(main())
    assert "".join(i.text for i in items if isinstance(i, TokenChunk)) == output


def test_stream_refuses_a_queue_and_bad_input(client: Client) -> None:
    with pytest.raises(InvalidRequest) as err:
        list(client.stream("story", {"nope": 1}))
    assert err.value.status == 422 and err.value.param == "inputs"


def test_gateway_streams_a_flows_tokens_to_the_openai_sdk(served: Served) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    stream = sdk.chat.completions.create(
        model="story", messages=[{"role": "user", "content": "owls"}], stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(pieces)
    assert text == "echo: Tell a story about a story about owls"
    assert len([p for p in pieces if p]) > 3  # token by token, not one chunk
    with Client(served.url, api_key=KEY) as c:
        [run] = [r for r in c.runs(flow="story") if r.inputs == {"topic": "owls"}]
        assert run.output == text and run.tenant == "acme"


def test_answers_are_declared_in_the_wire_models(client: Client) -> None:
    """Every field the server answers is a field of the shared model (no drift between the
    server and the models its client reads)."""
    outcome = client.run("echo", {"text": "w"})
    assert outcome.model_extra == {}
    detail = client.get(outcome.run_id)
    assert detail.model_extra == {}
    assert all(s.model_extra == {} for s in detail.steps)
    assert all(e.model_extra == {} for e in client.events(outcome.run_id).events)
    assert all(r.model_extra == {} for r in client.runs(limit=5))
    assert client.verify().model_extra == {}
    assert all(f.model_extra == {} for f in client.flows())
    stats = client.model_stats(bucket="1h")
    assert stats.model_extra == {} and all(r.model_extra == {} for r in stats.models)
    assert client.quality_stats().model_extra == {}
    waiting = client.run("review", {"name": "Wire"})
    assert all(r.model_extra == {} for r in client.reviews(waiting.run_id))
    client.reject(waiting.run_id)
    started = client.start("echo", {"text": "202"})
    assert started.model_extra == {} and started.status in ("running", "succeeded")


def test_the_client_needs_no_server_extra() -> None:
    """Importing the client brings no FastAPI (its models are plain pydantic)."""
    import subprocess
    import sys

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, erpoz.client; "
            "print('fastapi' in sys.modules or 'starlette' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False"
