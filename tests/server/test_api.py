"""The runs API over real HTTP (in process), and ``erpoz serve`` as a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from erpoz.engine import Engine
from erpoz.server import ServerState
from erpoz.store import NewRun, open_store

from ._flows import slow
from ._sse import parse_sse, wait_status

Auth = Callable[..., dict[str, str]]
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def start(client: TestClient, headers: dict[str, str], flow: str, **body: Any) -> httpx.Response:
    return client.post("/api/runs", json={"flow": flow, **body}, headers=headers)


# --- starting runs ---------------------------------------------------------------------------
def test_start_waits_for_the_result(client: TestClient, auth: Auth) -> None:
    r = start(client, auth(), "echo", inputs={"text": "  refund   please ", "times": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "succeeded"
    assert body["output"] == "REFUND PLEASE REFUND PLEASE"
    assert body["run_id"].startswith("r") and body["error"] is None
    assert body["waiting_steps"] == [] and body["failed_step"] is None


def test_start_without_waiting_answers_202_and_the_run_goes_on(
    client: TestClient, auth: Auth
) -> None:
    r = start(client, auth(), "slow", inputs={"seconds": 0.2}, wait=False)
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    assert r.json()["status"] == "running"
    assert r.headers["location"] == f"/api/runs/{run_id}"
    # recorded before the answer: the run can be read at once
    assert client.get(f"/api/runs/{run_id}", headers=auth()).status_code == 200
    done = wait_status(client, run_id, auth(), ["succeeded"])
    assert done["output"] == "slept 0.2"


def test_a_wait_that_times_out_answers_202(client: TestClient, auth: Auth) -> None:
    r = start(client, auth(), "slow", inputs={"seconds": 0.5}, timeout_s=0.05)
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert wait_status(client, r.json()["run_id"], auth())["status"] == "succeeded"


def test_a_failing_step_is_a_failed_run_not_an_http_error(client: TestClient, auth: Auth) -> None:
    r = start(client, auth(), "fail", inputs={"text": "x"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed" and body["failed_step"] == "explode"
    assert "ValueError: cannot handle 'x'" in body["error"]


def test_unknown_flow_is_404_listing_the_flows(client: TestClient, auth: Auth) -> None:
    r = start(client, auth(), "nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "not_found"
    assert err["flows"] == ["ask", "echo", "fail", "review", "slow"]
    assert "no flow 'nope'" in err["message"] and "echo" in err["message"]


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({}, "input 'text'"),
        ({"text": "a", "times": "many"}, "input 'times'"),
        ({"text": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_inputs_are_422_naming_the_input(
    client: TestClient, auth: Auth, inputs: dict[str, Any], named: str
) -> None:
    r = start(client, auth(), "echo", inputs=inputs)
    assert r.status_code == 422
    assert named in r.json()["error"]["message"]
    assert client.get("/api/runs", headers=auth()).json()["runs"] == []  # nothing recorded


def test_tags_are_recorded_and_the_tenant_is_the_keys(client: TestClient, auth: Auth) -> None:
    r = start(client, auth(), "echo", inputs={"text": "a"}, tags={"user": "ann"})
    events = client.get(f"/api/runs/{r.json()['run_id']}/events", headers=auth()).json()
    assert events["events"][0]["data"]["tags"] == {"user": "ann", "tenant": "acme"}
    r = start(client, auth(), "echo", inputs={"text": "a"}, tags={"tenant": "globex"})
    assert r.status_code == 422 and "tags.tenant" in r.json()["error"]["message"]


# --- reading runs ----------------------------------------------------------------------------
def test_list_filter_and_search(client: TestClient, auth: Auth) -> None:
    ok = start(client, auth(), "echo", inputs={"text": "a"}).json()["run_id"]
    bad = start(client, auth(), "fail", inputs={"text": "boom"}).json()["run_id"]
    waiting = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]

    def ids(**params: Any) -> list[str]:
        r = client.get("/api/runs", params=params, headers=auth())
        assert r.status_code == 200, r.text
        return [run["run_id"] for run in r.json()["runs"]]

    assert ids() == [waiting, bad, ok]  # newest first
    assert ids(status="failed") == [bad]
    assert ids(flow="review") == [waiting]
    assert ids(limit=1) == [waiting]
    assert ids(q="cannot handle") == [bad]  # in the error
    assert ids(q="REVIEW") == [waiting]  # in the flow, any case
    assert ids(q=ok[-8:]) == [ok]  # in the run id
    assert client.get("/api/runs?status=bogus", headers=auth()).status_code == 422
    assert client.get("/api/runs?limit=0", headers=auth()).status_code == 422


def test_run_detail_has_the_step_timeline(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "slow", inputs={"seconds": 0.05}).json()["run_id"]
    r = client.get(f"/api/runs/{run_id}", headers=auth())
    assert r.status_code == 200
    run = r.json()
    assert run["run_id"] == run_id and run["flow"] == "slow" and run["status"] == "succeeded"
    assert run["tenant"] == "acme" and run["inputs"] == {"seconds": 0.05}
    assert run["output"] == "slept 0.05" and run["events"] == 6
    nap, after = run["steps"]
    assert (nap["step"], after["step"]) == ("nap", "after_nap")
    for s in run["steps"]:
        assert s["status"] == "succeeded" and s["attempts"] == 1
        assert s["started"] <= s["ended"] and s["ms"] is not None
    assert nap["ms"] >= 40 and nap["ended"] <= after["started"]
    assert run["waiting_steps"] == [] and run["driven_here"] is False


def test_a_unique_prefix_finds_the_run(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "echo", inputs={"text": "a"}).json()["run_id"]
    assert client.get(f"/api/runs/{run_id[:-4]}", headers=auth()).json()["run_id"] == run_id
    assert client.get(f"/api/runs/{run_id[:5]}", headers=auth()).status_code == 404  # too short
    r = client.get("/api/runs/r0000000000000000000", headers=auth())
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "no run 'r0000000000000000000'", "type": "not_found"}}


def test_events_after_and_kind(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "echo", inputs={"text": "a"}).json()["run_id"]
    body = client.get(f"/api/runs/{run_id}/events", headers=auth()).json()
    assert body["run_id"] == run_id and body["status"] == "succeeded"
    kinds = [e["kind"] for e in body["events"]]
    assert kinds[0] == "run_started" and kinds[-1] == "run_succeeded"
    assert [e["seq"] for e in body["events"]] == list(range(1, len(kinds) + 1))
    later = client.get(f"/api/runs/{run_id}/events?after=3", headers=auth()).json()["events"]
    assert [e["seq"] for e in later] == list(range(4, len(kinds) + 1))
    done = client.get(f"/api/runs/{run_id}/events?kind=step_succeeded", headers=auth()).json()
    assert [(e["step"], e["payload"]) for e in done["events"]] == [("clean", "a"), ("shout", "A")]
    assert all(len(e["hash"]) == 64 for e in body["events"]) and body["more"] is False
    page = client.get(f"/api/runs/{run_id}/events?after=1&limit=2", headers=auth()).json()
    assert [e["seq"] for e in page["events"]] == [2, 3] and page["more"] is True


# --- following -------------------------------------------------------------------------------
def test_follow_replays_then_ends(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "echo", inputs={"text": "a"}).json()["run_id"]
    r = client.get(f"/api/runs/{run_id}/follow", headers=auth())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    msgs = parse_sse(r.text.splitlines())
    events = [m for m in msgs if m.event == "event"]
    assert [m.id for m in events] == list(range(1, 7))
    assert [m.data["seq"] for m in events] == [m.id for m in events]
    assert msgs[-1].event == "end" and msgs[-1].data == {"run_id": run_id, "status": "succeeded"}
    after = parse_sse(
        client.get(f"/api/runs/{run_id}/follow?after=4", headers=auth()).text.split("\n")
    )
    assert [m.id for m in after if m.event == "event"] == [5, 6]
    resumed = client.get(
        f"/api/runs/{run_id}/follow", headers={**auth(), "Last-Event-ID": "5"}
    ).text.splitlines()
    assert [m.id for m in parse_sse(resumed) if m.event == "event"] == [6]


def test_follow_sees_a_run_live_until_it_ends(client: TestClient, auth: Auth) -> None:
    # the step naps long enough that the follow below subscribes before the run ends, even on a
    # loaded machine (0.4 s was once too short with two test workers on two cores)
    run_id = start(client, auth(), "slow", inputs={"seconds": 3.0}, wait=False).json()["run_id"]
    msgs = parse_sse(client.get(f"/api/runs/{run_id}/follow", headers=auth()).text.splitlines())
    kinds = [m.data["kind"] for m in msgs if m.event == "event"]
    assert kinds == [
        "run_started",
        "step_started",
        "step_succeeded",
        "step_started",
        "step_succeeded",
        "run_succeeded",
    ]
    live = [m.data for m in msgs if m.event == "live"]
    assert live, "events appended while following come through the bus at once"
    assert {"run_id", "kind", "step", "attempt", "data"} <= set(live[0])
    assert msgs[-1].event == "end" and msgs[-1].data["status"] == "succeeded"


def test_follow_of_a_waiting_run_ends_at_its_waiting_event(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    msgs = parse_sse(client.get(f"/api/runs/{run_id}/follow", headers=auth()).text.splitlines())
    assert [m for m in msgs if m.event == "event"][-1].data["kind"] == "run_waiting"
    assert msgs[-1].data == {"run_id": run_id, "status": "waiting"}


def test_follow_pings_while_nothing_happens(make_state: Callable[..., ServerState]) -> None:
    from erpoz.server import create_app
    from erpoz.server.api import follow_run

    state = make_state(ping_s=0.05)
    create_app(state)

    async def go() -> list[str]:
        store = state.store
        writer = await store.create_run(NewRun("r-idle-run-1", "x", "f", "{}"), "owner")
        chunks: list[str] = []
        gen = follow_run(state, "r-idle-run-1", 0)

        async def read() -> None:
            async for chunk in gen:
                chunks.append(chunk)

        task = asyncio.create_task(read())
        await asyncio.sleep(0.8)
        writer.append("run_succeeded", data={})
        await writer.release()
        await asyncio.wait_for(task, 5)
        return chunks

    chunks = asyncio.run(go())
    assert ": ping\n\n" in chunks
    assert chunks[-1].startswith("event: end")


# --- reviews ---------------------------------------------------------------------------------
def test_review_queue_and_approve(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    queue = client.get("/api/reviews", headers=auth()).json()["reviews"]
    assert len(queue) == 1
    item = queue[0]
    assert item["run_id"] == run_id and item["flow"] == "review" and item["step"] == "draft"
    assert item["proposal"] == "Dear Ada, your refund is approved."
    assert item["reason"] == "review required by step" and item["waiting_s"] >= 0
    one = client.get(f"/api/reviews/{run_id[:12]}", headers=auth()).json()
    assert one["run_id"] == run_id and one["status"] == "waiting"
    # the same review, but for how long it has waited: that grows between the two requests
    assert [{**x, "waiting_s": 0} for x in one["reviews"]] == [{**item, "waiting_s": 0}]

    r = client.post(f"/api/reviews/{run_id}/approve", json={"comment": "fine"}, headers=auth())
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"] == "sent: Dear Ada, your refund is approved."
    assert client.get("/api/reviews", headers=auth()).json()["reviews"] == []
    resolved = client.get(f"/api/runs/{run_id}/events?kind=review_resolved", headers=auth()).json()[
        "events"
    ][0]["data"]
    assert resolved["decision"] == "approve" and resolved["comment"] == "fine"
    assert resolved["reviewer"] == "acme"  # the key's name: here its tenant
    again = client.post(f"/api/reviews/{run_id}/approve", headers=auth())
    assert again.status_code == 409 and "no step waiting" in again.json()["error"]["message"]


def test_reject_fails_the_run_naming_the_reviewer(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    r = client.post(
        f"/api/reviews/{run_id}/reject",
        json={"reviewer": "bob", "comment": "wrong customer", "step": "draft"},
        headers=auth(),
    )
    assert r.status_code == 200
    assert r.json()["status"] == "failed" and r.json()["failed_step"] == "draft"
    assert r.json()["error"] == "rejected by reviewer bob: wrong customer"


def test_edit_replaces_the_proposal_checked_against_its_type(
    client: TestClient, auth: Auth
) -> None:
    run_id = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    missing = client.post(f"/api/reviews/{run_id}/edit", json={}, headers=auth())
    assert missing.status_code == 422 and "output" in missing.json()["error"]["message"]
    wrong = client.post(f"/api/reviews/{run_id}/edit", json={"output": {"a": 1}}, headers=auth())
    assert wrong.status_code == 422
    assert wrong.json()["error"]["param"] == "output"
    assert "does not fit its type str" in wrong.json()["error"]["message"]
    assert client.get(f"/api/runs/{run_id}", headers=auth()).json()["status"] == "waiting"
    bad_step = client.post(
        f"/api/reviews/{run_id}/edit", json={"output": "x", "step": "send"}, headers=auth()
    )
    assert bad_step.status_code == 422 and "'send' is not waiting" in bad_step.text
    r = client.post(
        f"/api/reviews/{run_id}/edit", json={"output": "Dear Ada, refund sent."}, headers=auth()
    )
    assert r.status_code == 200 and r.json()["output"] == "sent: Dear Ada, refund sent."


def test_a_decision_can_answer_at_once(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    r = client.post(f"/api/reviews/{run_id}/approve", json={"wait": False}, headers=auth())
    assert r.status_code == 202
    assert wait_status(client, run_id, auth(), ["succeeded"])["output"].startswith("sent: ")


# --- resume, cancel --------------------------------------------------------------------------
def test_resume_an_interrupted_run(client: TestClient, auth: Auth, state: ServerState) -> None:
    path = Path(state.store.url.removeprefix("sqlite:///"))

    async def interrupted() -> str:
        store = open_store(path)
        engine = Engine(store)
        try:
            task = asyncio.create_task(
                engine.run(slow, {"seconds": 0.3}, tags={"tenant": "acme"}, run_id="r-crashed-1")
            )
            await asyncio.sleep(0.1)
            task.cancel()  # as Ctrl-C would: what was recorded stays, the run stays resumable
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await store.close()
        return "r-crashed-1"

    run_id = asyncio.run(interrupted())
    assert client.get(f"/api/runs/{run_id}", headers=auth()).json()["status"] == "running"
    r = client.post(f"/api/runs/{run_id}/resume", headers=auth())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["output"] == "slept 0.3"
    again = client.post(f"/api/runs/{run_id}/resume", headers=auth())
    assert again.status_code == 409 and "already succeeded" in again.json()["error"]["message"]


def test_resume_refuses_a_waiting_run_and_one_this_server_drives(
    client: TestClient, auth: Auth
) -> None:
    waiting = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    r = client.post(f"/api/runs/{waiting}/resume", json={}, headers=auth())
    assert (
        r.status_code == 409 and f"/api/reviews/{waiting}/approve" in r.json()["error"]["message"]
    )
    busy = start(client, auth(), "slow", inputs={"seconds": 0.5}, wait=False).json()["run_id"]
    r = client.post(f"/api/runs/{busy}/resume", headers=auth())
    assert r.status_code == 409 and "being run by this server" in r.json()["error"]["message"]
    wait_status(client, busy, auth())


def test_resume_of_a_run_another_process_holds_is_a_conflict_naming_it(
    client: TestClient, auth: Auth, state: ServerState
) -> None:
    holder = f"{socket.gethostname()}:{os.getpid()}:another-process"  # alive, lease live

    async def held() -> str:
        store = open_store(Path(state.store.url.removeprefix("sqlite:///")))
        plan = slow.compile()
        run = NewRun(
            "r-held-1", plan.name, plan.fingerprint, '{"seconds": 0.1}', tags={"tenant": "acme"}
        )
        await store.create_run(run, holder)
        await store.close()
        return run.run_id

    run_id = asyncio.run(held())
    r = client.post(f"/api/runs/{run_id}/resume", headers=auth())
    assert r.status_code == 409, r.text
    assert r.json()["error"]["type"] == "conflict" and r.json()["error"]["owner"] == holder


def test_cancel(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "slow", inputs={"seconds": 0.3}, wait=False).json()["run_id"]
    r = client.post(f"/api/runs/{run_id}/cancel", headers=auth())
    assert r.status_code == 200 and r.json() == {"run_id": run_id, "cancel": "requested"}
    done = wait_status(client, run_id, auth())
    assert done["status"] == "cancelled"
    assert [s["step"] for s in done["steps"]] == ["nap"]  # the next step never started
    again = client.post(f"/api/runs/{run_id}/cancel", headers=auth())
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    waiting = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    r = client.post(f"/api/runs/{waiting}/cancel", headers=auth())
    assert r.json()["cancel"] == "cancelled"


# --- lineage, audit --------------------------------------------------------------------------
def test_lineage(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth(), "echo", inputs={"text": "a"}).json()["run_id"]
    lin = client.get(f"/api/runs/{run_id}/lineage/shout", headers=auth()).json()
    assert lin["run_id"] == run_id and lin["graph"] == "flow"
    assert lin["step"]["step"] == "shout" and lin["step"]["deps"] == ["clean"]
    assert [u["step"] for u in lin["upstream"]] == ["clean"]
    r = client.get(f"/api/runs/{run_id}/lineage/nope", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["steps"] == ["clean", "shout"]


def test_audit_verify_and_export(client: TestClient, auth: Auth) -> None:
    a = start(client, auth(), "echo", inputs={"text": "a"}).json()["run_id"]
    b = start(client, auth(), "review", inputs={"name": "Ada"}).json()["run_id"]
    report = client.get("/api/audit/verify", headers=auth()).json()
    assert report["ok"] is True and report["runs"] == 2 and report["problems"] == []
    assert report["run"] is None and len(report["heads_digest"]) == 64
    one = client.get(f"/api/audit/verify?run={a[:-3]}", headers=auth()).json()
    assert one["run"] == a and one["runs"] == 1
    r = client.get("/api/audit/export?since=1h", headers=auth())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in r.text.splitlines()]
    assert {rec["run_id"] for rec in records} == {a, b}
    assert {"run_id", "seq", "time", "kind", "hash", "prev_hash"} <= set(records[0])
    future = client.get(f"/api/audit/export?since={time.time() + 60}", headers=auth())
    assert future.text == ""
    bad = client.get("/api/audit/export?since=yesterday", headers=auth())
    assert bad.status_code == 422 and "since" in bad.json()["error"]["message"]


# --- models, flows, stats, health ------------------------------------------------------------
def test_models_and_flows(client: TestClient, auth: Auth) -> None:
    models = client.get("/api/models", headers=auth()).json()
    assert models["models"] == [
        {
            "name": "echo-model",
            "kind": "chat",
            "provider": "test",
            "price_in": 1.0,
            "price_out": 2.0,
            "context_window": 4096,
            "modalities": ["text"],
            "tags": [],
        }
    ]
    assert models["routers"] == [] and models["budget"] is None
    flows = {f["name"]: f for f in client.get("/api/flows", headers=auth()).json()["flows"]}
    assert sorted(flows) == ["ask", "echo", "fail", "review", "slow"]
    echo = flows["echo"]
    assert echo["inputs"] == [
        {"name": "text", "type": "str", "required": True, "default": None},
        {"name": "times", "type": "int", "required": False, "default": 1},
    ]
    assert [n["id"] for n in echo["graph"]["nodes"]] == ["clean", "shout"]
    assert echo["graph"]["edges"] == [{"from": "clean", "to": "shout"}]
    assert flows["review"]["graph"]["nodes"][0]["review"] is True


def test_stats(client: TestClient, auth: Auth) -> None:
    for q in ("why", "how"):
        assert start(client, auth(), "ask", inputs={"question": q}).json()["output"] == q.upper()
    stats = client.get("/api/stats/models?since=1h&bucket=5m", headers=auth()).json()
    assert stats["runs"] == 2
    (row,) = stats["models"]
    assert row["model"] == "echo-model" and row["calls"] == 2 and row["errors"] == 0
    assert row["cost_usd"] > 0 and row["p50_ms"] is not None
    assert stats["bucket_s"] == 300.0
    assert sum(s["calls"] for s in stats["series"]) == 2
    quality = client.get("/api/stats/quality?by=model&bucket=1h", headers=auth()).json()
    assert quality["checks"] == 0 and quality["rows"] == [] and quality["by"] == ["model"]
    assert client.get("/api/stats/quality?by=colour", headers=auth()).status_code == 422
    assert client.get("/api/stats/models?since=30d&bucket=1s", headers=auth()).status_code == 422


def test_health_needs_no_key_and_whoami(client: TestClient, auth: Auth) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    docs = client.get("/docs")  # the OpenAPI UI (FastAPI's page) and the document it shows
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "/api/runs" in client.get("/openapi.json").json()["paths"]
    me = client.get("/api/whoami", headers=auth("globex")).json()
    assert me == {"tenant": "globex", "name": "globex", "auth": True}


def test_shutdown_stops_background_runs_resumably(
    make_state: Callable[..., ServerState], auth: Auth
) -> None:
    from erpoz.server import create_app

    state = make_state()
    with TestClient(create_app(state)) as c:
        run_id = start(c, auth(), "slow", inputs={"seconds": 5}, wait=False).json()["run_id"]
        assert run_id in state.tasks
    assert state.tasks == {} and state.busy == set()
    with TestClient(create_app(state)) as c:
        assert c.get(f"/api/runs/{run_id}", headers=auth()).json()["status"] == "running"


# --- erpoz serve, for real -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_cmd() -> list[str]:
    """``erpoz serve`` once cli.py mounts it; the same command as a module until then."""
    erpoz = Path(sys.executable).parent / "erpoz"
    probe = subprocess.run([str(erpoz), "serve", "--help"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [str(erpoz), "serve"]
    return [sys.executable, "-m", "erpoz.cli.serve"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERPOZ_", "OPENAI_"))}
    env.update(ERPOZ_STORE=str(tmp_path / "unused.db"), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    env.update(extra)
    return env


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            *_serve_cmd(),
            str(HERE / "_flows.py") + ":echo",
            str(HERE / "_flows.py") + ":slow",
            "--port",
            str(port),
            "--store",
            str(tmp_path / "served.db"),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"erpoz serve did not start: {proc.communicate()}")
        time.sleep(0.1)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_erpoz_serve_runs_and_streams_over_a_socket(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    base, proc = served
    with httpx.Client(base_url=base, timeout=10) as http:
        r = http.post("/api/runs", json={"flow": "echo", "inputs": {"text": "hi"}})
        assert r.status_code == 200 and r.json()["output"] == "HI"
        run_id = http.post(
            "/api/runs", json={"flow": "slow", "inputs": {"seconds": 1.0}, "wait": False}
        ).json()["run_id"]
        t0 = time.monotonic()
        first_event_at = None
        lines: list[str] = []
        with http.stream("GET", f"/api/runs/{run_id}/follow") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if first_event_at is None and line.startswith("event: event"):
                    first_event_at = time.monotonic() - t0
                lines.append(line)
        took = time.monotonic() - t0
        assert first_event_at is not None and first_event_at < took - 0.5  # streamed, not buffered
        msgs = parse_sse(lines)
        assert msgs[-1].event == "end" and msgs[-1].data["status"] == "succeeded"
        assert http.get(f"/api/runs/{run_id}").json()["source"].endswith("_flows.py:slow")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    text = " ".join(stderr.split())
    assert "flows: echo, slow" in text
    assert "no API keys: serving on loopback only" in text


@pytest.mark.slow
def test_erpoz_serve_refuses_other_hosts_without_keys(tmp_path: Path) -> None:
    r = subprocess.run(
        [*_serve_cmd(), "--host", "0.0.0.0", "--store", str(tmp_path / "x.db")],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    text = " ".join(r.stderr.split())
    assert "no API keys are configured, so erpoz serve listens on loopback only" in text
    assert "not on 0.0.0.0" in text and "ERPOZ_API_KEYS" in text
    assert not (tmp_path / "x.db").exists()  # refused before anything was opened
