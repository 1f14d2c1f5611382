"""Durable waits through the HTTP API: a run that waits for a message (``POST
/api/runs/{id}/messages``), the event it publishes (``GET /api/runs/{id}/published/{key}``) and
idempotent starts (``run_id`` in ``POST /api/runs``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from erpoz.flow._load import load_flow
from erpoz.server import ServerState, create_app

Auth = Callable[..., dict[str, str]]
WAITS = Path(__file__).resolve().parents[1] / "engine" / "wait_flows.py"


def test_a_run_waits_for_a_message_sent_through_the_api(
    make_state: Callable[..., ServerState], auth: Auth
) -> None:
    flows = {"replier": load_flow(f"{WAITS}:replier").compile()}
    with TestClient(create_app(make_state(flows=flows))) as client:
        r = client.post(
            "/api/runs",
            json={"flow": "replier", "inputs": {"ticket": "T1"}, "run_id": "ticket-1"},
            headers=auth(),
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["run_id"], body["status"]) == ("ticket-1", "waiting")
        assert body["waiting_steps"] == ["wait_reply"] and body["wake_at"] is not None
        got = client.get("/api/runs/ticket-1", headers=auth()).json()
        assert got["status"] == "waiting" and got["wake_on"] == "msg:reply"

        none = client.get("/api/runs/ticket-1/published/answered", headers=auth()).json()
        assert none == {"run_id": "ticket-1", "key": "answered", "set": False, "value": None}

        sent = client.post(
            "/api/runs/ticket-1/messages",
            json={"topic": "reply", "value": {"text": "yes"}},
            headers=auth(),
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["message_id"] >= 1
        done = client.post("/api/runs/ticket-1/resume", json={}, headers=auth()).json()
        assert done["status"] == "succeeded" and done["output"] == "T1: {'text': 'yes'}"
        published = client.get("/api/runs/ticket-1/published/answered", headers=auth()).json()
        assert published["value"] == {"ticket": "T1", "reply": {"text": "yes"}}

        # the same start again: that run, its result; other inputs: a conflict
        again = client.post(
            "/api/runs",
            json={"flow": "replier", "inputs": {"ticket": "T1"}, "run_id": "ticket-1"},
            headers=auth(),
        )
        assert again.status_code == 200 and again.json()["output"] == "T1: {'text': 'yes'}"
        other = client.post(
            "/api/runs",
            json={"flow": "replier", "inputs": {"ticket": "T2"}, "run_id": "ticket-1"},
            headers=auth(),
        )
        assert other.status_code == 409 and "other inputs" in other.text
        # another tenant learns nothing of it
        theirs = client.post(
            "/api/runs",
            json={"flow": "replier", "inputs": {"ticket": "T1"}, "run_id": "ticket-1"},
            headers=auth("globex"),
        )
        assert theirs.status_code == 409 and "T1" not in theirs.text
        assert (
            client.post(
                "/api/runs/ticket-1/messages", json={"topic": "reply"}, headers=auth("globex")
            ).status_code
            == 404
        )

        # a finished run takes no message; a bad topic is bad input
        late = client.post(
            "/api/runs/ticket-1/messages", json={"topic": "reply", "value": 1}, headers=auth()
        )
        assert late.status_code == 409 and "already succeeded" in late.text
        r = client.post(
            "/api/runs",
            json={"flow": "replier", "inputs": {"ticket": "T3"}, "run_id": "ticket-3"},
            headers=auth(),
        )
        bad = client.post(
            "/api/runs/ticket-3/messages", json={"topic": "no spaces", "value": 1}, headers=auth()
        )
        assert bad.status_code == 422 and "topic" in bad.text


def test_a_fork_through_the_api_changes_inputs_and_keeps_its_parent(
    make_state: Callable[..., ServerState], auth: Auth
) -> None:
    flows = {"replier": load_flow(f"{WAITS}:replier").compile()}
    with TestClient(create_app(make_state(flows=flows))) as client:
        client.post(
            "/api/runs",
            json={"flow": "replier", "inputs": {"ticket": "T1"}, "run_id": "first"},
            headers=auth(),
        )
        client.post(
            "/api/runs/first/messages", json={"topic": "reply", "value": "a"}, headers=auth()
        )
        done = client.post("/api/runs/first/resume", json={}, headers=auth()).json()
        assert done["output"] == "T1: a"
        forked = client.post(
            "/api/runs/first/fork", json={"inputs": {"ticket": "T2"}}, headers=auth()
        )
        assert forked.status_code == 200, forked.text
        body = forked.json()
        assert body["status"] == "waiting"  # the fork waits for a reply of its own
        info = client.get(f"/api/runs/{body['run_id']}", headers=auth()).json()
        assert info["parent_run_id"] == "first" and info["inputs"] == {"ticket": "T2"}
        assert info["tenant"] == "acme"
        assert client.post("/api/runs/first/fork", json={}, headers=auth()).status_code == 409
        assert (
            client.post(
                "/api/runs/first/fork", json={"from_step": "wait_reply"}, headers=auth("globex")
            ).status_code
            == 404
        )
