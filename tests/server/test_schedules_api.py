"""``/api/schedules``: schedules of exposed flows through HTTP, fired by a scheduler sharing
the store; refused, saying why, with bad bodies and under API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from erpoz.engine import Engine, Scheduler
from erpoz.flow import load_flow
from erpoz.server import ServerState, Tenants, create_app
from erpoz.store import open_store
from pgtest import throwaway_schema

Auth = Callable[..., dict[str, str]]
STAMP = Path(__file__).resolve().parents[1] / "engine" / "schedule_flows.py"


def test_schedules_through_the_api_fire_runs_of_the_flow(
    make_state: Callable[..., ServerState], tmp_path: Path
) -> None:
    state = make_state(tenants=None, flows={"stamp": load_flow(f"{STAMP}:stamp").compile()})
    body = {"name": "every", "flow": "stamp", "cron": "* * * * * *", "inputs": {"who": "api"}}
    with TestClient(create_app(state)) as client:
        r = client.post("/api/schedules", json={**body, "catchup": "all"})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["name"] == "every" and made["origin"] == "api" and made["catchup"] == "all"
        assert r.headers["location"] == "/api/schedules/every"
        assert client.post("/api/schedules", json=body).status_code == 409  # the name is taken
        listed = client.get("/api/schedules").json()["schedules"]
        assert [s["name"] for s in listed] == ["every"]

        async def fire() -> list[str]:
            store = open_store(tmp_path / "runs.db")
            try:
                rows = await store.list_schedules()  # type: ignore[attr-defined]
                done = await Scheduler(Engine(store)).run_once(now=rows[0].next_tick + 2)
                return [t.run_id for t in done]
            finally:
                await store.close()

        fired = asyncio.run(fire())
        assert len(fired) == 3
        shown = client.get("/api/schedules/every").json()
        assert sorted(t["run_id"] for t in shown["ticks"]) == sorted(fired)
        assert all(t["state"] == "fired" for t in shown["ticks"]) and shown["fired"] == 3
        run = client.get(f"/api/runs/{fired[0]}").json()
        assert run["status"] == "queued" and run["inputs"] == {"who": "api"}
        assert client.post("/api/schedules/every/pause").json()["paused"] is True
        assert client.post("/api/schedules/every/resume").json()["paused"] is False
        assert client.delete("/api/schedules/every").json() == {"name": "every", "removed": True}
        assert client.delete("/api/schedules/every").status_code == 404
        assert client.get("/api/schedules/every").status_code == 404


def test_bad_schedules_are_refused_saying_why(make_state: Callable[..., ServerState]) -> None:
    state = make_state(tenants=None, flows={"stamp": load_flow(f"{STAMP}:stamp").compile()})
    good = {"name": "s", "flow": "stamp", "cron": "0 2 * * *", "inputs": {"who": "x"}}
    with TestClient(create_app(state)) as client:
        for change, status, words in (
            ({"flow": "nope"}, 404, "no flow 'nope'"),
            ({"cron": "0 25 * * *"}, 422, "cron '0 25 * * *'"),
            ({"catchup": "most"}, 422, "catchup 'most'"),
            ({"timezone": "Mars/Base"}, 422, "unknown time zone"),
            ({"inputs": {}}, 422, "missing required input 'who'"),
            ({"name": "two words"}, 422, "schedule name 'two words'"),
            ({"every": 1}, 422, "every"),
        ):
            r = client.post("/api/schedules", json={**good, **change})
            assert r.status_code == status, (change, r.text)
            assert words in r.json()["error"]["message"], r.text
        assert client.get("/api/schedules").json() == {"schedules": []}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "runs.db")
        return
    with throwaway_schema() as schema:
        yield schema.url


def test_with_api_keys_a_tenant_sees_and_manages_only_its_schedules(
    store_url: str, keys: dict[str, str], auth: Auth
) -> None:
    flows = {"stamp": load_flow(f"{STAMP}:stamp").compile()}
    # catchup latest: one tick each, whichever second each was made in
    body = {"name": "every", "flow": "stamp", "cron": "* * * * * *", "catchup": "latest"}
    store = open_store(store_url)
    tenants = Tenants({key: tenant for tenant, key in keys.items()})
    state = ServerState(store, Engine(store), flows=flows, tenants=tenants, close_store=True)
    with TestClient(create_app(state)) as client:
        assert client.get("/api/schedules").status_code == 401
        acme = {**body, "inputs": {"who": "acme"}}
        r = client.post("/api/schedules", json=acme, headers=auth("acme"))
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "every" and r.json()["tenant"] == "acme"
        # the same name for another tenant is its own schedule, not a conflict
        globex = {**body, "inputs": {"who": "globex"}}
        r = client.post("/api/schedules", json=globex, headers=auth("globex"))
        assert r.status_code == 201, r.text
        assert client.post("/api/schedules", json=acme, headers=auth("acme")).status_code == 409
        for tenant in ("acme", "globex"):
            listed = client.get("/api/schedules", headers=auth(tenant)).json()["schedules"]
            assert [(s["name"], s["tenant"], s["inputs"]) for s in listed] == [
                ("every", tenant, {"who": tenant})
            ]
        # one only globex has: acme is answered as if it did not exist, whatever it tries
        r = client.post("/api/schedules", json={**globex, "name": "mine"}, headers=auth("globex"))
        assert r.status_code == 201, r.text
        for method, path in (
            ("GET", "/api/schedules/mine"),
            ("POST", "/api/schedules/mine/pause"),
            ("POST", "/api/schedules/mine/resume"),
            ("DELETE", "/api/schedules/mine"),
        ):
            theirs = client.request(method, path, headers=auth("acme"))
            ghost = client.request(method, path.replace("mine", "ghost"), headers=auth("acme"))
            assert theirs.status_code == ghost.status_code == 404, (method, path, theirs.text)
            missing = {"error": {"message": "no schedule 'mine'", "type": "not_found"}}
            assert theirs.json() == missing
        assert client.get("/api/schedules/mine", headers=auth("globex")).json()["paused"] is False

        async def fire() -> list[str]:
            store = open_store(store_url)
            try:
                rows = await store.list_schedules()  # type: ignore[attr-defined]
                assert sorted(r.name for r in rows) == ["acme:every", "globex:every", "globex:mine"]
                now = max(r.next_tick for r in rows)
                done = await Scheduler(Engine(store)).run_once(now=now)
                return [t.run_id for t in done]
            finally:
                await store.close()

        fired = asyncio.run(fire())
        assert len(fired) == 3
        # the runs a tenant's schedule starts are that tenant's, and only that tenant's
        runs = {
            t: {r["run_id"]: r for r in client.get("/api/runs", headers=auth(t)).json()["runs"]}
            for t in ("acme", "globex")
        }
        assert len(runs["acme"]) == 1 and len(runs["globex"]) == 2
        (acme_run,) = runs["acme"].values()
        assert acme_run["tenant"] == "acme" and acme_run["inputs"] == {"who": "acme"}
        assert all(r["inputs"] == {"who": "globex"} for r in runs["globex"].values())
        ticks = client.get("/api/schedules/every", headers=auth("acme")).json()["ticks"]
        assert [(t["schedule"], t["run_id"]) for t in ticks] == [("every", acme_run["run_id"])]
        gone = client.get(f"/api/runs/{acme_run['run_id']}", headers=auth("globex"))
        assert gone.status_code == 404
        r = client.delete("/api/schedules/every", headers=auth("acme"))
        assert r.json() == {"name": "every", "removed": True}
        assert client.get("/api/schedules/every", headers=auth("globex")).status_code == 200
