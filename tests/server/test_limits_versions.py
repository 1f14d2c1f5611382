"""``GET /api/limits`` and ``GET /api/runs/{id}/version``, their documented examples run on
SQLite and on PostgreSQL, and ``erpoz limits`` / ``erpoz runs version`` on the command line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from erpoz import Engine, Flow, open_store, step
from erpoz.cli import app as cli
from erpoz.models import ChatRequest, Message, ModelHub, ModelSpec, RateLimit
from erpoz.server import ServerState, create_app
from erpoz.testing import FunctionModel
from pgtest import throwaway_schema

Auth = Callable[..., dict[str, str]]
DOCS = Path(__file__).resolve().parents[2] / "docs"
STORE_LINE = re.compile(r'^STORE = f"\{tempfile.mkdtemp\(\)\}/runs.db".*$', re.M)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "runs.db")
        return
    with throwaway_schema() as schema:
        yield schema.url


def blocks(page: str) -> list[tuple[str, str]]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)


def run_doc(page: str, indexes: list[int], url: str) -> tuple[str, list[tuple[str, str]]]:
    """Run the page's Python blocks ``indexes`` (of its Python blocks) in one namespace, the
    last on the store ``url``; what the last printed, and the page's blocks."""
    found = blocks(page)
    python = [i for i, (lang, _) in enumerate(found) if lang == "python"]
    namespace: dict[str, Any] = {"__name__": "doc"}
    printed = io.StringIO()
    for n, i in enumerate(indexes):
        code = found[python[i]][1]
        if n == len(indexes) - 1:
            assert STORE_LINE.search(code), f"{page}: the HTTP example names its STORE"
            code = STORE_LINE.sub(f"STORE = {url!r}", code)
            with contextlib.redirect_stdout(printed):
                exec(compile(code, str(DOCS / page), "exec", dont_inherit=True), namespace)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, str(DOCS / page), "exec", dont_inherit=True), namespace)
    return printed.getvalue(), found[python[indexes[-1]] + 1 :]


def test_the_limits_page_http_example_prints_what_it_shows(store_url: str) -> None:
    printed, after = run_doc("limits.md", [1], store_url)
    assert after[0][0] == "text" and printed.strip() == after[0][1].strip()


def test_the_versioning_page_http_example_prints_what_it_shows(store_url: str) -> None:
    printed, after = run_doc("versioning.md", [0, 2], store_url)
    assert after[0][0] == "text" and printed.strip() == after[0][1].strip()


# --- limits ---------------------------------------------------------------------------------------
def hub_with_limits() -> ModelHub:
    hub = ModelHub()
    org = RateLimit(requests=3, tokens=1000, shared="org", on_limit="wait")
    for name in ("a", "b"):
        hub.add(FunctionModel(lambda r: "ok", name=name), ModelSpec(name, "t", limits=org))
    hub.add(FunctionModel(lambda r: "ok", name="free"), ModelSpec("free", "t"))
    return hub


async def use_limits(url: str) -> None:
    """Two calls under the shared limit (another process's), a worker's run rate and slot."""
    store = open_store(url)
    try:
        hub = hub_with_limits()
        hub.rates.book = store  # type: ignore[assignment]
        model = hub.get("a")
        for _ in range(2):
            await model.generate(ChatRequest((Message.user("hello"),)))  # type: ignore[union-attr]
        assert (await store.take_rate("runs:default", 5, 60.0)).granted  # type: ignore[attr-defined]
        assert await store.acquire_slot("running:*", 2, "r-1", 30.0)  # type: ignore[attr-defined]
    finally:
        await store.close()


def test_limits_show_what_is_configured_here_and_what_the_store_keeps(
    store_url: str, keys: dict[str, str], auth: Auth
) -> None:
    from erpoz.server import Tenants

    asyncio.run(use_limits(store_url))
    store = open_store(store_url)
    engine = Engine(store, services={ModelHub: hub_with_limits()})
    tenants = Tenants({key: tenant for tenant, key in keys.items()})
    state = ServerState(store, engine, tenants=tenants, close_store=True)
    with TestClient(create_app(state)) as client:
        assert client.get("/api/limits").status_code == 401
        rows = {r["key"]: r for r in client.get("/api/limits", headers=auth()).json()["limits"]}
        # the same for every tenant: limits are the project's
        assert client.get("/api/limits", headers=auth("globex")).json()["limits"] == list(
            rows.values()
        )
    assert list(rows) == [
        "running:*",
        "runs:default",
        "shared:org:requests",
        "shared:org:tokens",
    ]
    req = rows["shared:org:requests"]
    assert (req["limit"], req["per_s"], req["used"], req["room"]) == (3.0, 60.0, 2.0, 1.0)
    assert req["models"] == ["a", "b"] and req["configured"] is True
    assert req["on_limit"] == "wait" and req["what"] == "requests" and req["shared"] == "org"
    tokens = rows["shared:org:tokens"]
    assert tokens["limit"] == 1000.0 and 0 < tokens["used"] < 1000  # settled to what was used
    runs = rows["runs:default"]
    assert (runs["kind"], runs["limit"], runs["per_s"], runs["used"], runs["room"]) == (
        "rate",
        5.0,
        60.0,
        1.0,
        4.0,
    )
    assert runs["configured"] is False and runs["what"] == "runs started"
    slots = rows["running:*"]
    assert (slots["kind"], slots["limit"], slots["used"], slots["room"], slots["queue"]) == (
        "concurrency",
        2.0,
        1.0,
        1.0,
        "*",
    )


def test_a_store_without_limits_shows_the_configured_ones_unused(
    make_state: Callable[..., ServerState],
) -> None:
    state = make_state(tenants=None)
    state.engine.services[ModelHub] = hub_with_limits()  # type: ignore[index]
    with TestClient(create_app(state)) as client:
        rows = client.get("/api/limits").json()["limits"]
    assert [(r["key"], r["used"], r["room"]) for r in rows] == [
        ("shared:org:requests", 0.0, 3.0),
        ("shared:org:tokens", 0.0, 1000.0),
    ]


# --- versioning -----------------------------------------------------------------------------------
@step(review=True)
def draft(text: str) -> str:
    return f"draft: {text}"


@step
def send_v1(d: str) -> str:
    return f"v1 {d}"


@step
def send_v2(d: str) -> str:
    return f"v2 {d}"


def mail(version: str, send: Any, **kw: Any) -> Flow:
    flow = Flow("mail", inputs={"text": str}, version=version, **kw)
    flow.output(flow.add(send, d=flow.add(draft, text=flow.input("text"))))
    return flow


def test_a_runs_version_says_what_it_started_on_and_what_it_goes_on_on(
    make_state: Callable[..., ServerState], auth: Auth
) -> None:
    v1 = mail("1", send_v1, patches=["p"])
    refusing = mail("2", send_v2)
    compatible = mail("2", send_v2, compatible=["1"])
    state = make_state(flows={"mail": v1.compile()})
    with TestClient(create_app(state)) as client:
        r = client.post("/api/runs", json={"flow": "mail", "inputs": {"text": "x"}}, headers=auth())
        run_id = r.json()["run_id"]
        shown = client.get(f"/api/runs/{run_id}/version", headers=auth()).json()
        assert (shown["flow"], shown["version"], shown["patches"]) == ("mail", "1", ["p"])
        assert shown["fingerprint"] == v1.compile().fingerprint and shown["resumed"] == []
        assert shown["goes_on"]["plan"] == "same" and shown["goes_on"]["error"] is None
        # another tenant's run is one that does not exist
        theirs = client.get(f"/api/runs/{run_id}/version", headers=auth("globex"))
        assert theirs.status_code == 404 and theirs.json()["error"]["type"] == "not_found"

        state.flows["mail"] = refusing.compile()  # version 2 deployed, keeping nothing
        goes = client.get(f"/api/runs/{run_id}/version", headers=auth()).json()["goes_on"]
        assert goes["plan"] is None and goes["code_version"] == "2"
        assert "started on flow 'mail' version 1" in goes["error"]

        state.flows["mail"] = compatible.compile()  # version 2, declared compatible with 1
        goes = client.get(f"/api/runs/{run_id}/version", headers=auth()).json()["goes_on"]
        assert (goes["plan"], goes["version"], goes["compatible"]) == ("compatible", "2", ["1"])
        r = client.post(f"/api/reviews/{run_id}/approve", json={"comment": "ok"}, headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["output"] == "v2 draft: x"
        shown = client.get(f"/api/runs/{run_id}/version", headers=auth()).json()
        assert [(x["plan"], x["fingerprint_changed"]) for x in shown["resumed"]] == [
            ("compatible", True)
        ]


# --- the command line -----------------------------------------------------------------------------
FLOWS = """
from erpoz import Flow, step

@step(review=True)
def draft(text: str) -> str:
    return text

@step
def send(d: str) -> str:
    return d

@step
def send_api(d: str) -> str:
    return d

def mail(version, sender, **kw):
    flow = Flow("mail", inputs={"text": str}, version=version, **kw)
    flow.output(flow.add(sender, d=flow.add(draft, text=flow.input("text"))))
    return flow

v1 = mail("1", send)
v2 = mail("2", send_api)
v2_keeps_1 = mail("2", send_api, previous=[mail("1", send)])
"""


def test_the_cli_shows_limits_and_a_runs_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    db = str(tmp_path / "runs.db")
    runner = CliRunner()
    r = runner.invoke(cli, ["limits", "-s", db])
    assert r.exit_code == 0 and "no limits" in r.output, r.output

    async def prepare() -> str:
        store = open_store(db)
        try:
            assert (await store.take_rate("runs:q", 10, 1.0)).granted  # type: ignore[attr-defined]
            from erpoz import load_flow

            waiting = await Engine(store).run(load_flow("flows.py:v1"), {"text": "x"})
            return waiting.run_id
        finally:
            await store.close()

    run_id = asyncio.run(prepare())
    r = runner.invoke(cli, ["limits", "-s", db, "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)["limits"]
    assert (row["key"], row["limit"], row["per_s"], row["configured"]) == (
        "runs:q",
        10.0,
        1.0,
        False,
    )
    assert "runs:q" in runner.invoke(cli, ["limits", "-s", db]).output

    r = runner.invoke(cli, ["runs", "version", run_id, "-s", db])
    assert r.exit_code == 0 and "goes on on plan same: version 1" in r.output, r.output
    r = runner.invoke(cli, ["runs", "version", run_id, "-s", db, "--flow", "flows.py:v2_keeps_1"])
    assert r.exit_code == 0 and "goes on on plan previous: version 1" in r.output, r.output
    r = runner.invoke(cli, ["runs", "version", run_id, "-s", db, "--flow", "flows.py:v2", "--json"])
    assert r.exit_code == 5, r.output
    shown = json.loads(r.output)
    assert shown["version"] == "1" and shown["goes_on"]["plan"] is None
    assert "keeps no plan of it" in shown["goes_on"]["error"]


def test_the_memory_store_keeps_the_state_of_its_limits_too() -> None:
    from erpoz.models import limits_overview

    async def go() -> list[dict[str, Any]]:
        store = open_store("memory")
        assert (await store.take_rate("runs:q", 3, 10.0, 2)).granted  # type: ignore[attr-defined]
        assert await store.acquire_slot("running:q", 2, "r-1", 30.0)  # type: ignore[attr-defined]
        assert await store.acquire_slot("running:q", 2, "r-2", 30.0)  # type: ignore[attr-defined]
        await store.release_slot("running:q", "r-1")  # type: ignore[attr-defined]
        return await limits_overview(store, {})

    rows = asyncio.run(go())
    assert [(r["key"], r["kind"], r["limit"], r["used"], r["room"]) for r in rows] == [
        ("running:q", "concurrency", 2.0, 1.0, 1.0),
        ("runs:q", "rate", 3.0, 2.0, 1.0),
    ]
