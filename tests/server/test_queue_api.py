"""``POST /api/runs`` with a queue: the server records the run and a worker runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from erpoz.engine import Engine, Worker
from erpoz.flow._load import load_flow
from erpoz.server import ServerState, create_app
from erpoz.store import open_store

from ._sse import wait_status

Auth = Callable[..., dict[str, str]]
CHAIN = Path(__file__).resolve().parents[1] / "engine" / "queue_flows.py"


def test_a_run_submitted_through_the_api_is_run_by_a_worker(
    make_state: Callable[..., ServerState], auth: Auth, tmp_path: Path
) -> None:
    from ._flows import ALL

    flows = {f.name: f.compile() for f in ALL}
    flows["chain5"] = load_flow(f"{CHAIN}:chain5").compile()
    state = make_state(flows=flows)
    with TestClient(create_app(state)) as client:
        r = client.post(
            "/api/runs",
            json={"flow": "chain5", "inputs": {"x": 1}, "queue": "batch"},
            headers=auth(),
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        assert r.json() == {"run_id": run_id, "status": "queued", "queue": "batch"}
        got = client.get(f"/api/runs/{run_id}", headers=auth()).json()
        assert got["status"] == "queued" and got["queue"] == "batch"
        listed = client.get("/api/runs?status=queued", headers=auth()).json()
        assert [x["run_id"] for x in listed["runs"]] == [run_id]
        # another tenant sees nothing of it
        assert client.get(f"/api/runs/{run_id}", headers=auth("globex")).status_code == 404

        async def work() -> None:  # a worker process of its own, on the same store file
            store = open_store(tmp_path / "runs.db")
            await Worker(Engine(store), queues=["batch"], burst=True, poll_s=0.05).run()
            await store.close()

        asyncio.run(work())
        done = wait_status(client, run_id, auth(), ["succeeded"])
        assert done["output"] == 6 and done["tenant"] == "acme"

        # bad queue names and flows a worker could not load are refused, naming why
        bad = client.post(
            "/api/runs",
            json={"flow": "chain5", "inputs": {"x": 1}, "queue": "no spaces"},
            headers=auth(),
        )
        assert bad.status_code == 422 and "queue" in bad.text
        sourceless = client.post(
            "/api/runs", json={"flow": "echo", "inputs": {"text": "a"}, "queue": "batch"},
            headers=auth(),
        )  # fmt: skip
        assert sourceless.status_code == 422 and "no source" in sourceless.text


def test_approving_a_queued_run_from_the_api_sends_it_back_to_the_workers(
    make_state: Callable[..., ServerState], auth: Auth, tmp_path: Path
) -> None:
    flows = {"reviewed": load_flow(f"{CHAIN}:reviewed").compile()}
    state = make_state(flows=flows)

    async def work() -> None:
        store = open_store(tmp_path / "runs.db")
        await Worker(Engine(store), burst=True, poll_s=0.05).run()
        await store.close()

    with TestClient(create_app(state)) as client:
        r = client.post(
            "/api/runs", json={"flow": "reviewed", "inputs": {"x": 2}, "queue": "default"},
            headers=auth(),
        )  # fmt: skip
        run_id = r.json()["run_id"]
        asyncio.run(work())
        assert client.get(f"/api/runs/{run_id}", headers=auth()).json()["status"] == "waiting"
        decided = client.post(f"/api/reviews/{run_id}/approve", json={}, headers=auth())
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "queued"  # the server did not run the flow itself
        asyncio.run(work())
        done = wait_status(client, run_id, auth(), ["succeeded"])
        assert done["output"] == "published 20"
