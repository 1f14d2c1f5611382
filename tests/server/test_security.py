"""Bad input and security: keys (401 for a missing or a wrong key, the same answer for every
wrong key, a resolve that walks every key in constant time), bodies too large (413), malformed
JSON (422 naming the field), and schemathesis against the OpenAPI document: no 5xx."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from erpoz.cli.serve import is_loopback
from erpoz.errors import ConfigError
from erpoz.server import ServerState, Tenants, create_app
from erpoz.server import _state as state_module

from ._flows import echo, fail, review

Auth = Callable[..., dict[str, str]]


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every /api operation of the OpenAPI document, parameters filled in."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        if path.startswith("/api/"):
            filled = path.replace("{run_id}", "r0123456789").replace("{step}", "s")
            out.extend((method.upper(), filled) for method in ops)
    return out


# --- keys ------------------------------------------------------------------------------------
def test_every_api_route_but_health_needs_a_valid_key(
    app: FastAPI, client: TestClient, keys: dict[str, str]
) -> None:
    routes = api_routes(app)
    assert len(routes) >= 20
    near_miss = keys["acme"][:-1] + ("x" if keys["acme"][-1] != "x" else "y")
    for method, path in routes:
        if path == "/api/health":
            assert client.request(method, path).status_code == 200
            continue
        missing = client.request(method, path)
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.json()["error"]["type"] == "authentication_error"
        answers = []
        for wrong in (near_miss, keys["acme"] + "0", "x" * 40, keys["globex"].upper()):
            r = client.request(method, path, headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
            answers.append((r.status_code, r.content, sorted(r.headers.items())))
        # whether the wrong key resembles a real one or not, the answer is the same bytes
        assert all(a == answers[0] for a in answers)


def test_keys_in_either_header(client: TestClient, keys: dict[str, str]) -> None:
    assert (
        client.get("/api/whoami", headers={"X-API-Key": keys["globex"]}).json()["tenant"]
        == "globex"
    )
    assert (
        client.get("/api/whoami", headers={"Authorization": f"bearer {keys['acme']}"}).json()[
            "tenant"
        ]
        == "acme"
    )
    assert client.get("/api/whoami", headers={"Authorization": keys["acme"]}).status_code == 401


def test_resolve_walks_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {f"key-{i:02d}-0123456789abcdef": f"tenant-{i}" for i in range(8)}
    tenants = Tenants(keys)
    real = hmac.compare_digest
    calls: list[tuple[int, int]] = []

    def counting(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(state_module.hmac, "compare_digest", counting)
    first = next(iter(keys))
    presented = {
        "a real key": first,
        "the last real key": list(keys)[-1],
        "a real key but its last character": first[:-1] + "X",
        "a real key's prefix": first[:10],
        "a real key and more": first + "-and-more",
        "nothing alike": "z" * 64,
        "empty": "",
        "very long": "k" * 10_000,
    }
    for what, key in presented.items():
        calls.clear()
        found = tenants.resolve(key)
        assert found == keys.get(key), what
        # every configured key is compared, always with digests of one length
        assert calls == [(32, 32)] * len(keys), what


def test_tenants_parsing() -> None:
    t = Tenants.parse(
        "# ops keys\nkey-with-padding-0123456789==:ignored=acme\n\n"
        "second-key-0123456789abcd=globex:gus, third-key-0123456789abcd=acme\n"
    )
    assert t is not None and len(t) == 3
    assert t.resolve("key-with-padding-0123456789==:ignored") == "acme"
    caller = t.identify("second-key-0123456789abcd")
    assert caller is not None and (caller.tenant, caller.name) == ("globex", "gus")
    assert t.tenants == {"acme", "globex"}
    assert Tenants.from_env("") is None and Tenants.parse("# nothing\n") is None
    with pytest.raises(ConfigError, match="shorter than 16"):
        Tenants.from_env("short=acme")
    with pytest.raises(ConfigError, match="not empty, not '-'"):
        Tenants.from_env("a-long-enough-key-0123=-")
    with pytest.raises(ConfigError, match="KEY=tenant"):
        Tenants.from_env("no-equals-sign-here-0123")
    with pytest.raises(ConfigError, match="listed twice"):
        Tenants.parse("same-key-0123456789abc=a\nsame-key-0123456789abc=b")


def test_keys_file(tmp_path: Path) -> None:
    from erpoz.server._build import load_keys

    f = tmp_path / "keys"
    f.write_text("# tenants\nfile-key-0123456789abcdef=acme:ann\n", encoding="utf-8")
    tenants = load_keys(f)
    assert tenants is not None and tenants.resolve("file-key-0123456789abcdef") == "acme"
    (tmp_path / "empty").write_text("# none\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no KEY=tenant"):
        load_keys(tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read the keys file"):
        load_keys(tmp_path / "missing")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- bodies ----------------------------------------------------------------------------------
@pytest.fixture
def small_client(make_state: Callable[..., ServerState]) -> Iterator[TestClient]:
    with TestClient(create_app(make_state(max_body=2048))) as c:
        yield c


def test_oversized_bodies_are_413(small_client: TestClient, auth: Auth) -> None:
    big = {"flow": "echo", "inputs": {"text": "x" * 4096}}
    r = small_client.post("/api/runs", json=big, headers=auth())
    assert r.status_code == 413
    assert r.json() == {
        "error": {"message": "request body over the limit of 2048 bytes", "type": "too_large"}
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it is read
        yield b'{"flow": "echo", "inputs": {"text": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}}'

    r = small_client.post(
        "/api/runs", content=chunks(), headers={**auth(), "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "too_large"
    ok = small_client.post(
        "/api/runs", json={"flow": "echo", "inputs": {"text": "x"}}, headers=auth()
    )
    assert ok.status_code == 200
    runs = small_client.get("/api/runs", headers=auth()).json()["runs"]
    assert [r["inputs"]["text"] for r in runs] == ["x"]  # the refused ones left no run


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"flow": "echo", "inputs": {"text": "a"', "body: invalid JSON at position"),
        (b"not json at all", "body: invalid JSON"),
        (b'{"flow": "echo", "inputs": ["a"]}', "body.inputs: Input should be a valid dictionary"),
        (b'{"inputs": {}}', "body.flow: Field required"),
        (b'{"flow": "echo", "wait": "sometimes"}', "body.wait:"),
        (b'{"flow": "echo", "timeout_s": -1}', "body.timeout_s:"),
        (b'{"flow": "echo", "colour": "red"}', "body.colour: Extra inputs are not permitted"),
        (b'{"flow": 12}', "body.flow: Input should be a valid string"),
    ],
)
def test_malformed_json_is_422_naming_the_field(
    client: TestClient, auth: Auth, body: bytes, named: str
) -> None:
    r = client.post(
        "/api/runs", content=body, headers={**auth(), "content-type": "application/json"}
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert named in err["message"], err


def test_unknown_routes_and_methods_answer_in_the_error_format(
    client: TestClient, auth: Auth
) -> None:
    r = client.get("/api/nothing-here", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.delete("/api/runs", headers=auth())
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


def test_outputs_are_data_never_markup(client: TestClient, auth: Auth) -> None:
    html = "<script>alert('x')</script><b>bold</b>"
    r = client.post("/api/runs", json={"flow": "echo", "inputs": {"text": html}}, headers=auth())
    assert r.headers["content-type"] == "application/json"
    assert r.json()["output"] == html.upper()
    shown = client.get(f"/api/runs/{r.json()['run_id']}", headers=auth())
    assert shown.headers["content-type"] == "application/json"
    assert shown.json()["inputs"]["text"] == html


# --- schemathesis ----------------------------------------------------------------------------
# Driven operation by operation (schemathesis' lazy pytest fixture does not run on pytest 9):
# examples that fit the schema and examples that do not, against the app in process.
def test_schemathesis_finds_no_server_errors(
    make_state: Callable[..., ServerState], keys: dict[str, str]
) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.python import asgi

    # quick flows only: generated inputs must not make a run sleep for hours
    state = make_state(flows={f.name: f.compile() for f in (echo, review, fail)})
    app = create_app(state)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex="^/api/")
    headers = {"Authorization": f"Bearer {keys['acme']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    tried: dict[str, int] = {}
    try:
        for op in operations:
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):

                @given(case=op.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=10,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    label = case.operation.label
                    tried[label] = tried.get(label, 0) + 1
                    case.call_and_validate(headers=headers, checks=[not_a_server_error])

                try:
                    check()
                except Unsatisfiable:
                    assert mode == schemathesis.GenerationMode.NEGATIVE  # nothing to break
    finally:
        asgi.shutdown_lifespans()  # stop the app (and its runs) before its store closes
    assert len(tried) == len(operations)
