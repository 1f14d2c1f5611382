"""Bad bodies get a 4xx naming what is wrong, never a 500: JSON nested 10,000 deep, or text that
is not UTF-8, sent to the runs API, and as the JSON inputs of a flow or a tool call's arguments
to the gateway."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize(
    "body",
    [
        b'{"flow": "echo", "inputs": {"text": ' + DEEP.encode() + b"}}",
        b'{"flow": "echo", "inputs": {"text": "caf\xe9"}}',
    ],
    ids=["deep", "latin1"],
)
def test_the_runs_api_refuses_a_bad_body(
    client: TestClient, auth: Callable[..., dict[str, str]], body: bytes
) -> None:
    res = client.post(
        "/api/runs", content=body, headers={**auth(), "content-type": "application/json"}
    )
    assert 400 <= res.status_code < 500, res.text
    assert res.json()["error"]["type"] == "invalid_request_error"


def test_the_gateway_refuses_deep_json_inputs_of_a_flow(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    res = client.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": DEEP}]},
        headers=auth(),
    )
    assert res.status_code == 400, res.text
    assert "JSON object" in res.json()["error"]["message"]


def test_the_gateway_refuses_deep_tool_call_arguments(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP}}
    res = client.post(
        "/v1/chat/completions",
        json={
            "model": "echo-model",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
        },
        headers=auth(),
    )
    assert res.status_code == 400, res.text
    assert "arguments" in res.json()["error"]["message"]
