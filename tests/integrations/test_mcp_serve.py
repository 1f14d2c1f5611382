"""``erpoz mcp serve``: flows as MCP tools, driven by a real MCP client session (the SDK's
``Client``) against the command running in its own process, over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP integration needs the mcp extra")

from mcp import Client, StdioServerParameters

from erpoz import Decision, Engine
from erpoz.flow._load import load_flow
from erpoz.store import open_store

from .mcp_helpers import free_port, wait_for_port

HERE = Path(__file__).resolve().parent
FLOWS = [f"{HERE / 'mcp_flows.py'}:{name}" for name in ("quoting", "refunding", "broken")]
ERPOZ = [sys.executable, "-c", "from erpoz.cli import main; main()"]


def serve_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERPOZ_")}
    env.update(ERPOZ_STORE=str(tmp_path / "default.db"), NO_COLOR="1")
    return env


def stdio_server(tmp_path: Path, store: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=ERPOZ[0],
        args=[*ERPOZ[1:], "mcp", "serve", *FLOWS, "--store", str(store), *extra],
        env=serve_env(tmp_path),
        cwd=str(tmp_path),  # no erpoz.yaml there: the offline default project
    )


def structured(result: Any) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def test_stdio_lists_flows_with_their_input_schemas_and_runs_them(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"

    async def main() -> tuple[Any, Any, Any, Any]:
        async with Client(stdio_server(tmp_path, store, "-t", "tenant=ide")) as client:
            listed = await client.list_tools()
            ok = await client.call_tool(
                "quote", {"order": {"item": "pen", "quantity": 4}, "discount": 0.5}
            )
            defaulted = await client.call_tool("quote", {"order": {"item": "cap"}})
            bad = await client.call_tool("quote", {"order": {"quantity": "many"}})
            return listed, ok, defaulted, bad

    listed, ok, defaulted, bad = asyncio.run(main())
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"quote", "refund", "broken", "erpoz_run"}
    schema = tools["quote"].input_schema
    assert schema["required"] == ["order"] and schema["properties"]["discount"]["default"] == 0.0
    assert schema["$defs"]["Order"]["properties"]["quantity"]["type"] == "integer"
    assert tools["quote"].description.startswith("Quote the price of an order.")
    assert not ok.is_error and structured(ok)["output"] == {"item": "pen", "total": 25.0}
    assert json.loads(ok.content[0].text) == {"item": "pen", "total": 25.0}
    assert structured(defaulted)["output"] == {"item": "cap", "total": 12.5}
    assert bad.is_error and "input 'order' expects Order" in bad.content[0].text

    async def recorded() -> tuple[Any, list[Any]]:
        st = open_store(str(store))
        info = await st.get_run(structured(ok)["run_id"])
        events = await st.events(structured(ok)["run_id"])
        await st.close()
        return info, events

    info, events = asyncio.run(recorded())
    assert info is not None and info.status == "succeeded" and info.tenant == "ide"
    assert events[0].kind == "run_started"
    assert json.loads(info.inputs)["order"] == {"item": "pen", "quantity": 4}


def test_a_run_waiting_for_review_answers_at_once_and_the_status_tool_follows_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.db"

    async def ask() -> tuple[Any, Any, Any]:
        async with Client(stdio_server(tmp_path, store)) as client:
            small = await client.call_tool("refund", {"amount": 20})
            big = await client.call_tool("refund", {"amount": 250})
            status = await client.call_tool("erpoz_run", {"run_id": structured(big)["run_id"]})
            return small, big, status

    small, big, status = asyncio.run(ask())
    assert structured(small)["output"] == "refund 20.0"
    waiting = structured(big)
    assert not big.is_error and waiting["status"] == "waiting"
    assert waiting["waiting_steps"] == ["refund"]
    text = big.content[0].text
    assert "waiting for a person to review step refund" in text
    assert f"erpoz runs resume {waiting['run_id']} --approve" in text
    assert structured(status)["status"] == "waiting"

    async def approve() -> None:  # a reviewer decides, in another process than the server
        st = open_store(str(store))
        flow = load_flow(FLOWS[1])
        await Engine(st).resume(waiting["run_id"], flow, decision=Decision("approve"))
        await st.close()

    asyncio.run(approve())

    async def later() -> Any:
        async with Client(stdio_server(tmp_path, store)) as client:
            return await client.call_tool("erpoz_run", {"run_id": waiting["run_id"]})

    done = asyncio.run(later())
    assert structured(done)["status"] == "succeeded"
    assert structured(done)["output"] == "refund 250.0"


def test_a_failed_run_is_an_error_result_naming_the_step(tmp_path: Path) -> None:
    async def main() -> tuple[Any, Any, Any]:
        async with Client(stdio_server(tmp_path, tmp_path / "runs.db")) as client:
            failed = await client.call_tool("broken", {"text": "x"})
            status = await client.call_tool("erpoz_run", {"run_id": structured(failed)["run_id"]})
            unknown = await client.call_tool("erpoz_run", {"run_id": "r-nope"})
            return failed, status, unknown

    failed, status, unknown = asyncio.run(main())
    assert failed.is_error and structured(failed)["failed_step"] == "explode"
    assert "at step 'explode'" in failed.content[0].text
    assert "cannot handle 'x'" in failed.content[0].text
    assert status.is_error and structured(status)["status"] == "failed"
    assert unknown.is_error and "no run 'r-nope'" in unknown.content[0].text


def test_streamable_http(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *ERPOZ,
            "mcp",
            "serve",
            FLOWS[0],
            "--transport",
            "http",
            "--port",
            str(port),
            "--store",
            str(tmp_path / "runs.db"),
        ],
        env=serve_env(tmp_path),
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)

        async def main() -> Any:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                return await client.call_tool("quote", {"order": {"item": "pen"}})

        result = asyncio.run(main())
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert structured(result)["output"] == {"item": "pen", "total": 12.5}
    assert f"http://127.0.0.1:{port}/mcp" in stderr.decode()


def test_serve_refuses_other_hosts_and_bad_flows(tmp_path: Path) -> None:
    env = serve_env(tmp_path)
    remote = subprocess.run(
        [*ERPOZ, "mcp", "serve", FLOWS[0], "--transport", "http", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 2 and "loopback only" in remote.stderr
    missing = subprocess.run(
        [*ERPOZ, "mcp", "serve", "nowhere.yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert missing.returncode == 2 and "nowhere.yaml" in missing.stderr


def test_a_project_model_as_a_tool(tmp_path: Path) -> None:
    """--model: one governed, recorded call of a project model (here an OpenAI-compatible
    stub server in the test, which echoes)."""
    from erpoz.models.stub_server import OpenAIStubServer

    with OpenAIStubServer() as upstream:
        (tmp_path / "erpoz.yaml").write_text(
            "models:\n  stub:\n    provider: openai\n"
            f"    params: {{base_url: '{upstream.base_url}', model: stub-model, api_key: sk-x}}\n"
            "    price: {input: 1, output: 2}\n",
            encoding="utf-8",
        )
        store = tmp_path / "runs.db"
        params = StdioServerParameters(
            command=ERPOZ[0],
            args=[*ERPOZ[1:], "mcp", "serve", "--model", "stub", "--store", str(store)],
            env=serve_env(tmp_path),
            cwd=str(tmp_path),
        )

        async def main() -> tuple[Any, Any, Any]:
            async with Client(params) as client:
                listed = await client.list_tools()
                answer = await client.call_tool("ask_stub", {"prompt": "hello there"})
                wrong = await client.call_tool("ask_stub", {"prompt": "x", "temperature": 2})
                return listed, answer, wrong

        listed, answer, wrong = asyncio.run(main())
        sent = upstream.requests_to("chat")
    assert {t.name for t in listed.tools} == {"ask_stub", "erpoz_run"}
    assert not answer.is_error and "hello there" in structured(answer)["output"]
    assert sent and sent[-1].body["messages"][-1]["content"] == "hello there"
    assert wrong.is_error and "unknown argument(s) temperature" in wrong.content[0].text

    async def recorded() -> list[Any]:
        st = open_store(str(store))
        events = await st.events(structured(answer)["run_id"])
        await st.close()
        return events

    called = [e.data for e in asyncio.run(recorded()) if e.kind == "model_called"]
    assert len(called) == 1 and called[0]["model"] == "stub"
