"""Tenant isolation: one tenant never sees or touches another's runs, reviews or audit records,
and another tenant's run is answered exactly like a run that does not exist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from erpoz.engine import Engine
from erpoz.server import ServerState, Tenants, create_app
from erpoz.store import open_store

from ._flows import echo, review
from ._sse import wait_status

Auth = Callable[..., dict[str, str]]


def start(client: TestClient, headers: dict[str, str], flow: str, **inputs: Any) -> str:
    r = client.post("/api/runs", json={"flow": flow, "inputs": inputs}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["run_id"])


def ghost_of(ref: str) -> str:
    """An id (or prefix) of the same length that no run has (ids are time-ordered hex)."""
    return "r" + "f" * (len(ref) - 1)


def same_as_missing(r: httpx.Response, ref: str, ghost: httpx.Response, ghost_ref: str) -> None:
    """``r`` (asked about ``ref``) says exactly what ``ghost`` (asked about an id no run has)
    says, the id aside."""
    assert r.status_code == ghost.status_code == 404, (r.text, ghost.text)
    assert r.json() == json.loads(ghost.text.replace(ghost_ref, ref))
    assert r.json() == {"error": {"message": f"no run {ref!r}", "type": "not_found"}}
    assert set(r.headers) == set(ghost.headers)


# every way of touching one run: (method, path template, json body)
TOUCH: list[tuple[str, str, Any]] = [
    ("GET", "/api/runs/{id}", None),
    ("GET", "/api/runs/{id}/events", None),
    ("GET", "/api/runs/{id}/follow", None),
    ("GET", "/api/runs/{id}/lineage/draft", None),
    ("POST", "/api/runs/{id}/resume", {}),
    ("POST", "/api/runs/{id}/cancel", None),
    ("GET", "/api/reviews/{id}", None),
    ("POST", "/api/reviews/{id}/approve", {"comment": "not mine"}),
    ("POST", "/api/reviews/{id}/reject", {"comment": "not mine"}),
    ("POST", "/api/reviews/{id}/edit", {"output": "hijacked"}),
    ("GET", "/api/audit/verify?run={id}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), TOUCH, ids=[f"{m} {p}" for m, p, _ in TOUCH])
@pytest.mark.parametrize("prefix", [False, True], ids=["full id", "prefix"])
def test_another_tenants_run_is_a_run_that_does_not_exist(
    client: TestClient, auth: Auth, method: str, path: str, body: Any, prefix: bool
) -> None:
    run_id = start(client, auth("acme"), "review", name="Ada")  # waits for review
    ref = run_id[:10] if prefix else run_id
    ghost = ghost_of(ref)
    r = client.request(method, path.format(id=ref), json=body, headers=auth("globex"))
    g = client.request(method, path.format(id=ghost), json=body, headers=auth("globex"))
    same_as_missing(r, ref, g, ghost)
    # and the run is as it was: still waiting, nothing appended
    mine = client.get(f"/api/runs/{run_id}", headers=auth("acme")).json()
    assert mine["status"] == "waiting" and mine["events"] == 4
    assert client.request(
        method, path.format(id=ref), json=body, headers=auth("acme")
    ).status_code in (
        200,
        409,
    )


def test_lists_queues_audit_and_stats_hold_only_the_tenants_runs(
    client: TestClient, auth: Auth
) -> None:
    a_echo = start(client, auth("acme"), "echo", text="acme secret")
    a_review = start(client, auth("acme"), "review", name="Ada")
    a_ask = start(client, auth("acme"), "ask", question="acme question")
    g_review = start(client, auth("globex"), "review", name="Gus")

    def runs(tenant: str, **params: Any) -> set[str]:
        r = client.get("/api/runs", params=params, headers=auth(tenant))
        return {run["run_id"] for run in r.json()["runs"]}

    assert runs("acme") == {a_echo, a_review, a_ask}
    assert runs("globex") == {g_review}
    assert runs("globex", q="acme") == set() and runs("globex", flow="echo") == set()
    assert runs("globex", q=a_echo[-8:]) == set()

    def queue(tenant: str) -> list[str]:
        return [
            i["run_id"] for i in client.get("/api/reviews", headers=auth(tenant)).json()["reviews"]
        ]

    assert queue("acme") == [a_review] and queue("globex") == [g_review]

    a_audit = client.get("/api/audit/verify", headers=auth("acme")).json()
    g_audit = client.get("/api/audit/verify", headers=auth("globex")).json()
    assert (a_audit["runs"], g_audit["runs"]) == (3, 1)
    assert a_audit["heads_digest"] != g_audit["heads_digest"]

    exported = client.get("/api/audit/export", headers=auth("globex")).text
    assert {json.loads(line)["run_id"] for line in exported.splitlines()} == {g_review}
    assert "acme secret" not in exported and "Ada" not in exported

    a_stats = client.get("/api/stats/models", headers=auth("acme")).json()
    g_stats = client.get("/api/stats/models", headers=auth("globex")).json()
    assert [m["calls"] for m in a_stats["models"]] == [1] and a_stats["runs"] == 3
    assert g_stats["models"] == [] and g_stats["runs"] == 1
    assert client.get("/api/stats/quality", headers=auth("globex")).json()["runs"] == 1


def test_a_prefix_is_resolved_among_the_tenants_own_runs(
    client: TestClient, auth: Auth, state: ServerState
) -> None:
    """Two runs of two tenants that share a prefix: for each tenant the prefix is unique."""
    path = Path(state.store.url.removeprefix("sqlite:///"))

    async def make() -> None:
        store = open_store(path)
        engine = Engine(store)
        try:
            await engine.run(
                echo, {"text": "a"}, run_id="rshared00001aaaa", tags={"tenant": "acme"}
            )
            await engine.run(
                echo, {"text": "g"}, run_id="rshared00001bbbb", tags={"tenant": "globex"}
            )
            await engine.run(
                echo, {"text": "g2"}, run_id="rshared00002cccc", tags={"tenant": "globex"}
            )
        finally:
            await store.close()

    asyncio.run(make())
    prefix = "rshared00001"
    a = client.get(f"/api/runs/{prefix}", headers=auth("acme")).json()
    g = client.get(f"/api/runs/{prefix}", headers=auth("globex")).json()
    assert (a["run_id"], a["output"]) == ("rshared00001aaaa", "A")
    assert (g["run_id"], g["output"]) == ("rshared00001bbbb", "G")
    # ambiguous among globex's own runs: no run, as for acme, who has none under this prefix
    assert client.get("/api/runs/rshared000", headers=auth("globex")).status_code == 404
    assert client.get("/api/runs/rshared00002", headers=auth("acme")).status_code == 404
    assert client.get("/api/runs/rshared00002", headers=auth("globex")).status_code == 200


def test_following_another_tenants_run_gets_nothing(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth("acme"), "echo", text="a")
    r = client.get(f"/api/runs/{run_id}/follow?after=0", headers=auth("globex"))
    assert r.status_code == 404 and "event:" not in r.text


def test_a_decision_cannot_be_made_for_another_tenant(client: TestClient, auth: Auth) -> None:
    run_id = start(client, auth("acme"), "review", name="Ada")
    for action in ("approve", "reject"):
        assert (
            client.post(f"/api/reviews/{run_id}/{action}", headers=auth("globex")).status_code
            == 404
        )
    assert client.get(f"/api/reviews/{run_id}", headers=auth("acme")).json()["reviews"]
    ok = client.post(f"/api/reviews/{run_id}/approve", headers=auth("acme"))
    assert ok.json()["status"] == "succeeded"


def test_runs_of_the_cli_belong_to_no_tenant_with_keys(
    client: TestClient, auth: Auth, state: ServerState
) -> None:
    """A run started without a tenant tag (``erpoz run``) is the tenant '-''s: no key sees it."""
    path = Path(state.store.url.removeprefix("sqlite:///"))

    async def make() -> None:
        store = open_store(path)
        try:
            await Engine(store).run(review, {"name": "Cli"}, run_id="rcli-run-000001")
        finally:
            await store.close()

    asyncio.run(make())
    for tenant in ("acme", "globex"):
        assert client.get("/api/runs/rcli-run-000001", headers=auth(tenant)).status_code == 404
        assert client.get("/api/reviews", headers=auth(tenant)).json()["reviews"] == []


def test_without_keys_everything_is_the_tenant_dash(
    make_state: Callable[..., ServerState],
) -> None:
    state = make_state(tenants=None)
    with TestClient(create_app(state)) as c:
        assert c.get("/api/whoami").json() == {"tenant": "-", "name": "api", "auth": False}
        r = c.post("/api/runs", json={"flow": "review", "inputs": {"name": "Ada"}})
        run_id = r.json()["run_id"]
        assert c.get(f"/api/runs/{run_id}").json()["tenant"] == "-"
        c.post(f"/api/reviews/{run_id}/approve")
        resolved = c.get(f"/api/runs/{run_id}/events?kind=review_resolved").json()["events"]
        assert resolved[0]["data"]["reviewer"] == "api"


def test_a_named_key_reviews_under_its_name(make_state: Callable[..., ServerState]) -> None:
    key = "ops-key-0123456789abcdef"
    state = make_state(tenants=Tenants({key: "acme:alice"}))
    headers = {"X-API-Key": key}
    with TestClient(create_app(state)) as c:
        assert c.get("/api/whoami", headers=headers).json()["name"] == "alice"
        run_id = c.post(
            "/api/runs", json={"flow": "review", "inputs": {"name": "Ada"}}, headers=headers
        ).json()["run_id"]
        assert c.get(f"/api/runs/{run_id}", headers=headers).json()["tenant"] == "acme"
        c.post(f"/api/reviews/{run_id}/approve", headers=headers)
        wait_status(c, run_id, headers, ["succeeded"])
        events = c.get(f"/api/runs/{run_id}/events?kind=review_resolved", headers=headers).json()
        assert events["events"][0]["data"]["reviewer"] == "alice"
