"""``/api/schedules``: schedules of exposed flows through HTTP, fired by a scheduler sharing
the store; refused, saying why, with bad bodies and under API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from erpoz.engine import Engine, Scheduler
from erpoz.flow import load_flow
from erpoz.server import ServerState, create_app
from erpoz.store import open_store

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


def test_with_api_keys_schedules_are_the_projects(
    make_state: Callable[..., ServerState], auth: Auth
) -> None:
    with TestClient(create_app(make_state())) as client:
        r = client.get("/api/schedules", headers=auth())
        assert r.status_code == 403 and "erpoz schedule" in r.json()["error"]["message"]
        assert client.get("/api/schedules").status_code == 401
