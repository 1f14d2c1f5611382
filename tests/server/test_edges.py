"""Edges of the HTTP API a client meets: every method ``Allow`` lists works, a body that is not
UTF-8 is malformed JSON (422), ``/openapi.json`` documents the errors each operation answers,
and a failure of the server or its store tells the tenant a request id, not its details."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from erpoz.engine import Engine
from erpoz.server import ServerState, create_app
from erpoz.store import open_store

Auth = Callable[..., dict[str, str]]
LATIN1 = '{"flow": "echo", "inputs": {"text": "caf\u00e9"}}'.encode("latin-1")


def test_allow_lists_every_method_of_the_path(client: TestClient, auth: Auth) -> None:
    r = client.delete("/api/runs", headers=auth())
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    for method in allowed - {"HEAD"}:  # each of them is answered, not 405
        kwargs = {"json": {"flow": "echo", "inputs": {"text": "x"}}} if method == "POST" else {}
        assert client.request(method, "/api/runs", headers=auth(), **kwargs).status_code != 405
    r = client.put("/api/runs/r0123456789/cancel", headers=auth())
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_a_body_that_is_not_utf8_is_malformed_json(client: TestClient, auth: Auth) -> None:
    headers = {**auth(), "content-type": "application/json"}
    r = client.post("/api/runs", content=LATIN1, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "json_invalid"
    assert error["param"] == "body" and "not UTF-8" in error["message"]
    r = client.post("/api/reviews/r0123456789/edit", content=LATIN1, headers=headers)
    assert r.status_code == 422, r.text
    # the gateway answers the same in OpenAI's shape
    r = client.post(
        "/v1/chat/completions",
        content=b'{"model": "echo-model", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        headers=headers,
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_openapi_documents_the_errors_where_they_occur(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert codes("/api/health", "get") == {"200"}
    assert {"401", "404", "422", "503"} <= codes("/api/runs/{run_id}", "get")
    assert {"400", "401", "404", "409", "413", "422", "503"} <= codes("/api/runs", "post")
    assert {"409", "413"} <= codes("/api/runs/{run_id}/resume", "post")
    assert {"409", "404"} <= codes("/api/reviews/{run_id}/approve", "post")
    chat = codes("/v1/chat/completions", "post")
    assert {"400", "401", "403", "404", "413", "422", "429", "502"} <= chat
    assert {"401", "404"} <= codes("/v1/models/{model_id}", "get")
    error = paths["/api/runs"]["post"]["responses"]["409"]["content"]["application/json"]
    assert error["schema"]["required"] == ["error"]
    # since and bucket say what they take, and the server holds to it
    params = {p["name"]: p for p in paths["/api/stats/models"]["get"]["parameters"]}
    since, bucket = params["since"]["schema"], params["bucket"]["schema"]
    since_re = re.compile(next(s["pattern"] for s in since["anyOf"] if "pattern" in s))
    bucket_re = re.compile(next(s["pattern"] for s in bucket["anyOf"] if "pattern" in s))
    for good in ("24h", "7d", "30 m", "1700000000", "1700000000.5", ""):
        assert since_re.match(good), good
    for bad in ("yesterday", "-5", "nan", "1e9", "24hours"):
        assert not since_re.match(bad), bad
    assert bucket_re.match("1h") and not bucket_re.match("3600")


def test_the_since_and_bucket_patterns_are_enforced(client: TestClient, auth: Auth) -> None:
    r = client.get("/api/stats/models", params={"since": "yesterday"}, headers=auth())
    assert r.status_code == 422 and "since" in r.json()["error"]["message"]
    r = client.get("/api/stats/quality", params={"bucket": "3600"}, headers=auth())
    assert r.status_code == 422 and "bucket" in r.json()["error"]["message"]
    r = client.get("/api/stats/models", params={"since": "24h", "bucket": "1h"}, headers=auth())
    assert r.status_code == 200


def test_a_failing_store_tells_the_tenant_a_request_id_not_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "srv-internal" / "runs.db"
    secret.parent.mkdir()
    store = open_store(secret)
    state = ServerState(store, Engine(store))
    with TestClient(create_app(state)) as c:
        asyncio.run(store.close())  # the store goes away under the server
        r = c.get("/api/runs")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["type"] == "store_error" and error["request_id"].startswith("req_")
    assert error["request_id"] in error["message"]
    assert "srv-internal" not in r.text and "closed database" not in r.text
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "erpoz.server"]
    assert any(error["request_id"] in m and "srv-internal" in m for m in logged), logged
