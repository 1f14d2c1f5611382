"""MCP servers' tools inside erpoz: real servers (the SDK's MCPServer, over stdio and streamable
HTTP, in their own processes), called from flows under policy, review and guards, recorded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP integration needs the mcp extra")

from erpoz import Context, Decision, Engine, Flow, RetryPolicy, step
from erpoz.errors import ConfigError
from erpoz.integrations.mcp import (
    IDEMPOTENCY_META,
    McpToolError,
    ServerSpec,
    as_tool,
    servers_from_config,
    session,
)
from erpoz.models._config import parse_config
from erpoz.project import project_services
from erpoz.store import MemoryStore, Store, open_store
from erpoz.tools import ToolError, ToolRegistry

from .mcp_helpers import SERVER, http_calc_server, sent_lines, stdio_yaml

ALLOW_ALL = "policy:\n  rules:\n    - {name: calc tools, tool: 'calc__*', action: allow}\n"


def project(tmp_path: Path, mcp: str, rest: str = ALLOW_ALL) -> Path:
    path = tmp_path / "erpoz.yaml"
    path.write_text(f"mcp:\n{mcp}{rest}", encoding="utf-8")
    return path


async def run_flow(
    config: Path, flow: Flow, inputs: dict[str, Any] | None = None, store: Store | None = None
) -> tuple[Any, list[Any], Engine]:
    st = store or MemoryStore()
    engine = Engine(st, services=await project_services(st, config))
    result = await engine.run(flow, inputs or {})
    return result, await st.events(result.run_id), engine


@step
async def add_and_send(ctx: Context) -> str:
    total = await ctx.tools.call("calc__add", a=20, b=22)
    return str(await ctx.tools.call("calc__send", to="ana@example.com", body=f"total {total}"))


def flow_of(*steps: Any, name: str = "billing") -> Flow:
    flow = Flow(name)
    for s in steps:
        flow.add(s)
    return flow


def test_stdio_tools_are_called_governed_and_recorded_with_server_and_key(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    config = project(tmp_path, stdio_yaml(sent))
    result, events, _ = asyncio.run(run_flow(config, flow_of(add_and_send)))
    assert result.status == "succeeded", result.error
    assert result.output == "sent to ana@example.com"
    assert [(s["to"], s["body"]) for s in sent_lines(sent)] == [("ana@example.com", "total 42")]
    decided = [e.data for e in events if e.kind == "policy_decided"]
    assert [(d["resource"], d["action"], d["rule"]) for d in decided] == [
        ("tool:calc__add", "allow", "calc tools"),
        ("tool:calc__send", "allow", "calc tools"),
    ]
    called = {e.data["tool"]: e.data for e in events if e.kind == "tool_called"}
    mcp = {e.data["tool"]: e.data for e in events if e.kind == "mcp_called"}
    assert set(called) == set(mcp) == {"calc__add", "calc__send"}
    assert mcp["calc__add"]["server"] == "calc" and mcp["calc__add"]["remote_tool"] == "add"
    assert mcp["calc__add"]["transport"] == "stdio" and mcp["calc__add"]["status"] == "ok"
    # add is read-only (the server's hint): no key; send has side effects: one key, the same
    # in erpoz's log and in what the server received in the call's _meta
    assert "idempotency_key" not in called["calc__add"]
    key = called["calc__send"]["idempotency_key"]
    assert len(key) == 32 and mcp["calc__send"]["idempotency_key"] == key
    assert sent_lines(sent)[0]["key"] == key
    assert IDEMPOTENCY_META == "io.erpoz/idempotency-key"


def test_mcp_tools_are_denied_unless_granted_and_the_server_never_sees_the_call(
    tmp_path: Path,
) -> None:
    sent = tmp_path / "sent.jsonl"
    # a policy that names another tool (without any policy the process-wide one would decide)
    rest = "policy:\n  rules:\n    - {name: other, tool: other_tool, action: allow}\n"
    config = project(tmp_path, stdio_yaml(sent), rest=rest)
    result, events, _ = asyncio.run(run_flow(config, flow_of(add_and_send)))
    assert result.status == "failed" and "PolicyViolation" in (result.error or "")
    assert "calc__add" in (result.error or "")
    assert not [e for e in events if e.kind in ("tool_called", "mcp_called")]
    assert sent_lines(sent) == []


def test_a_review_rule_pauses_before_the_call_and_approval_sends_it_once(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    rules = (
        "policy:\n  rules:\n"
        "    - {name: sums, tool: calc__add, action: allow}\n"
        "    - {name: a person sends, tool: calc__send, action: review}\n"
    )
    config = project(tmp_path, stdio_yaml(sent), rest=rules)
    flow = flow_of(add_and_send)

    async def main() -> tuple[Any, Any, list[Any]]:
        store = open_store(str(tmp_path / "runs.db"))
        first, _, engine = await run_flow(config, flow, store=store)
        assert sent_lines(sent) == []  # waiting: nothing was sent
        second = await engine.resume(first.run_id, flow, decision=Decision("approve"))
        events = await store.events(first.run_id)
        await store.close()
        return first, second, events

    first, second, events = asyncio.run(main())
    assert first.status == "waiting" and first.waiting_steps == ("add_and_send",)
    (asked,) = [e for e in events if e.kind == "review_requested"]
    assert asked.data["evidence"]["tool"] == "calc__send"
    assert second.status == "succeeded" and second.output == "sent to ana@example.com"
    assert [s["to"] for s in sent_lines(sent)] == ["ana@example.com"]


def test_guards_see_the_arguments_and_the_result(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    rest = (
        "guards:\n  checks:\n    pii: {at: [tool_call, tool_result]}\n"
        "policy:\n  rules:\n"
        "    - {name: calc tools, tool: 'calc__*', action: allow}\n"
        "    - {name: no addresses, data: pii.email, action: redact}\n"
    )
    config = project(tmp_path, stdio_yaml(sent), rest=rest)

    @step
    async def look_and_tell(ctx: Context) -> str:
        found = await ctx.tools.call("calc__lookup", invoice="INV-7")
        await ctx.tools.call("calc__send", to="billing", body="write to bob@example.org")
        return str(found)

    result, events, _ = asyncio.run(run_flow(config, flow_of(look_and_tell)))
    assert result.status == "succeeded", result.error
    # tool_result: the step never saw the address the server answered with
    assert "ana.lima@example.com" not in result.output and "invoice INV-7" in result.output
    # tool_call: the server never received the address the step wrote
    (message,) = sent_lines(sent)
    assert "bob@example.org" not in message["body"] and message["body"].startswith("write to")
    assert {e.data.get("checkpoint") for e in events if e.kind == "guard_decided"} >= {
        "tool_call",
        "tool_result",
    }


def test_a_recorded_side_effect_is_not_sent_again_when_the_step_runs_again(
    tmp_path: Path,
) -> None:
    sent = tmp_path / "sent.jsonl"
    config = project(tmp_path, stdio_yaml(sent))
    attempts: list[int] = []

    @step(retry=RetryPolicy(attempts=2, backoff=0))
    async def send_then_fail_once(ctx: Context) -> str:
        attempts.append(ctx.attempt)
        out = await ctx.tools.call("calc__send", to="ana", body="once")
        if len(attempts) == 1:
            raise RuntimeError("the step fails after the side effect")
        return str(out)

    result, events, _ = asyncio.run(run_flow(config, flow_of(send_then_fail_once)))
    assert result.status == "succeeded" and attempts == [1, 2]
    assert len(sent_lines(sent)) == 1  # the server saw one call
    assert [e.kind for e in events if e.kind in ("tool_called", "tool_reused")] == [
        "tool_called",
        "tool_reused",
    ]


def test_arguments_are_checked_against_the_servers_schema_before_calling(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    config = project(tmp_path, stdio_yaml(sent))

    @step
    async def wrong(ctx: Context) -> str:
        messages = []
        for bad in ({"a": "x", "b": 1}, {"a": 1}, {"a": 1, "b": 2, "c": 3}):
            try:
                await ctx.tools.call("calc__add", **bad)
            except ToolError as exc:
                messages.append(str(exc))
        return " | ".join(messages)

    result, events, _ = asyncio.run(run_flow(config, flow_of(wrong)))
    assert "tool 'calc__add': argument a: 'x' is not of type 'integer'" in result.output
    assert "argument b: 'b' is a required property" in result.output
    assert "argument c:" in result.output
    assert not [e for e in events if e.kind == "mcp_called"]


def test_an_error_the_tool_reports_is_a_tool_error_naming_server_and_tool(tmp_path: Path) -> None:
    config = project(tmp_path, stdio_yaml(tmp_path / "sent.jsonl"))

    @step
    async def divide(ctx: Context) -> str:
        try:
            await ctx.tools.call("calc__divide", a=1, b=0)
        except ToolError as exc:
            return str(exc)
        return "no error"

    result, events, _ = asyncio.run(run_flow(config, flow_of(divide)))
    assert "MCP server 'calc': tool 'divide' answered with an error" in result.output
    assert "division by zero" in result.output
    (called,) = [e.data for e in events if e.kind == "mcp_called"]
    assert called["status"] == "tool_error" and "division by zero" in called["error"]


def test_streamable_http_server(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    with http_calc_server(sent) as (url, _):
        config = project(tmp_path, f"  calc:\n    url: {url}\n")
        result, events, _ = asyncio.run(run_flow(config, flow_of(add_and_send)))
    assert result.status == "succeeded", result.error
    assert result.output == "sent to ana@example.com"
    mcp = {e.data["tool"]: e.data for e in events if e.kind == "mcp_called"}
    assert mcp["calc__add"]["transport"] == "http"
    key = next(e.data for e in events if e.kind == "tool_called" and "idempotency_key" in e.data)
    assert sent_lines(sent)[0]["key"] == key["idempotency_key"]


def test_one_session_per_process_across_event_loops(tmp_path: Path) -> None:
    """erpoz run builds services in one event loop and runs the flow in another: the server
    is started once and serves both."""
    config = project(tmp_path, stdio_yaml(tmp_path / "sent.jsonl"))

    @step
    async def server_pid(ctx: Context) -> int:
        return int(await ctx.tools.call("calc__pid"))

    st = MemoryStore()
    services = asyncio.run(project_services(st, config))  # loop 1: connect and list
    engine = Engine(st, services=services)
    first = asyncio.run(engine.run(flow_of(server_pid), {}))  # loop 2
    second = asyncio.run(engine.run(flow_of(server_pid), {}))  # loop 3
    assert first.output == second.output
    (spec,) = servers_from_config(parse_config(config.read_text(), file=str(config)))
    assert session(spec).connects == 1


def test_a_server_that_dies_is_a_clear_tool_error_and_the_next_call_reconnects(
    tmp_path: Path,
) -> None:
    config = project(tmp_path, stdio_yaml(tmp_path / "sent.jsonl"))

    @step
    async def crash_and_go_on(ctx: Context) -> dict[str, Any]:
        before = await ctx.tools.call("calc__pid")
        try:
            await ctx.tools.call("calc__crash")
            error = "no error"
        except ToolError as exc:
            error = str(exc)
        after = await ctx.tools.call("calc__pid")
        return {"before": before, "error": error, "after": after}

    result, _, _ = asyncio.run(run_flow(config, flow_of(crash_and_go_on)))
    assert result.status == "succeeded", result.error
    out = result.output
    assert "MCP server 'calc' (stdio:" in out["error"] and "declared at" in out["error"]
    assert "tool 'crash' was not answered: Connection closed" in out["error"]
    assert out["before"] != out["after"]  # a new server process


def test_an_http_server_that_went_away_is_a_clear_tool_error(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"

    @step
    async def add(ctx: Context) -> int:
        return int(await ctx.tools.call("calc__add", a=1, b=2))

    with http_calc_server(sent) as (url, proc):
        config = project(tmp_path, f"  calc:\n    url: {url}\n    connect_timeout_s: 5\n")
        st = MemoryStore()
        services = asyncio.run(project_services(st, config))
        engine = Engine(st, services=services)
        assert asyncio.run(engine.run(flow_of(add), {})).output == 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        result = asyncio.run(engine.run(flow_of(add), {}))
    assert result.status == "failed"
    assert "MCP server 'calc' (http: " + url in (result.error or "")


def test_an_unreachable_server_at_start_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    config = project(
        tmp_path,
        "  ok:\n    url: http://127.0.0.1:9/mcp\n    connect_timeout_s: 5\n",
        rest="",
    )
    with pytest.raises(ConfigError) as caught:
        asyncio.run(project_services(MemoryStore(), config))
    assert caught.value.line == 2 and caught.value.file == str(config)
    assert "MCP server 'ok' (http: http://127.0.0.1:9/mcp" in str(caught.value)
    assert "could not connect" in str(caught.value)
    assert isinstance(caught.value.__cause__, McpToolError)


def test_tools_named_in_the_config_must_exist_and_filter_the_list(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    config = project(tmp_path, stdio_yaml(sent, extra="    tools: [add, pid]\n"))
    services = asyncio.run(project_services(MemoryStore(), config))
    registry = services[ToolRegistry]
    assert isinstance(registry, ToolRegistry)
    assert [s.name for s in registry.specs()] == ["calc__add", "calc__pid"]
    config = project(tmp_path, stdio_yaml(sent, extra="    tools: [add, nope]\n"))
    with pytest.raises(ConfigError, match=r"lists no tool 'nope' \(it lists: add, crash"):
        asyncio.run(project_services(MemoryStore(), config))


def test_prefix_read_only_and_secret_settings(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    extra = "    prefix: ''\n    read_only: [send]\n    secret: [body]\n"
    rest = "policy: {rules: [{name: all, tool: '*', action: allow}]}\n"
    config = project(tmp_path, stdio_yaml(sent, extra=extra), rest=rest)

    @step
    async def send(ctx: Context) -> str:
        return str(await ctx.tools.call("send", to="ana", body="secret words"))

    result, events, _ = asyncio.run(run_flow(config, flow_of(send)))
    assert result.output == "sent to ana"
    (called,) = [e.data for e in events if e.kind == "tool_called"]
    assert called["arguments"] == {"to": "ana", "body": "[REDACTED]"}
    assert "idempotency_key" not in called  # declared read-only
    assert sent_lines(sent)[0]["key"] is None


# --- the project file -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mcp", "line", "message"),
    [
        ("mcp: [a]\n", 1, "'mcp' maps server names to servers"),
        ("mcp:\n  s: {}\n", 2, "mcp server 's': give either 'command'"),
        ("mcp:\n  s:\n    command: x\n    url: http://a\n", 2, "not both"),
        ("mcp:\n  s:\n    url: ftp://a\n", 3, "'url' must be an http:// or https:// URL"),
        ("mcp:\n  s:\n    command: x\n    arg: [a]\n", 4, "unknown key 'arg' (expected: command,"),
        ("mcp:\n  s:\n    command: x\n    args: a b\n", 4, "'args' must be a list of strings"),
        ("mcp:\n  s:\n    command: x\n    tools: []\n", 4, "'tools' is empty"),
        ("mcp:\n  s:\n    command: x\n    headers: {a: b}\n", 4, "'headers' is for HTTP"),
        ("mcp:\n  s:\n    url: http://a\n    env: {A: b}\n", 4, "'env' is for stdio"),
        ("mcp:\n  s:\n    command: x\n    timeout_s: 0\n", 4, "'timeout_s' must be a number"),
        ("mcp:\n  s:\n    command: x\n    cwd: nowhere\n", 4, "'cwd': no folder"),
        ("mcp:\n  s:\n    command: x\n    prefix: a b\n", 4, "'prefix' must be a string"),
        ("mcp:\n  'a b':\n    command: x\n", 2, "mcp server name 'a b'"),
        (
            "mcp:\n  s:\n    url: http://a\n    headers:\n      A: ${ENV:ERPOZ_TEST_UNSET_9}\n",
            5,
            "environment variable ERPOZ_TEST_UNSET_9 is not set",
        ),
    ],
)
def test_config_errors_name_file_line_and_what_was_expected(
    tmp_path: Path, mcp: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        servers_from_config(parse_config(mcp, file="erpoz.yaml", base=tmp_path))
    assert caught.value.file == "erpoz.yaml" and caught.value.line == line, str(caught.value)
    assert message in str(caught.value)


def test_config_parses_both_transports_and_reads_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERPOZ_TEST_TOKEN", "t0k")
    text = (
        "mcp:\n"
        "  local:\n    command: python\n    args: [srv.py, --quiet]\n"
        "  remote:\n    url: https://mcp.example.com/mcp\n"
        "    headers: {Authorization: 'Bearer ${ENV:ERPOZ_TEST_TOKEN}'}\n"
        "    read_only: true\n    timeout_s: 5\n"
    )
    local, remote = servers_from_config(parse_config(text, file="p.yaml", base=tmp_path))
    assert (local.transport, local.command) == ("stdio", "python")
    assert local.args == ("srv.py", "--quiet")
    assert local.prefix == "local__" and local.cwd == str(tmp_path) and local.line == 2
    assert remote.transport == "http" and remote.headers == {"Authorization": "Bearer t0k"}
    assert remote.is_read_only("anything", None) and remote.timeout_s == 5.0
    assert not local.is_read_only("x", None) and local.is_read_only("x", True)


def test_an_mcp_tool_object_can_join_a_registry_by_hand(tmp_path: Path) -> None:
    """Without erpoz.yaml: a ServerSpec and as_tool, for code that builds its own registry."""
    import mcp_types

    spec = ServerSpec(
        name="calc",
        transport="stdio",
        command=os.sys.executable,  # type: ignore[attr-defined]
        args=(str(SERVER),),
        env={"MCP_SENT": str(tmp_path / "sent.jsonl")},
        prefix="m_",
    )
    remote = mcp_types.Tool(
        name="add",
        input_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    )
    t = as_tool(spec, remote)
    assert t.name == "m_add" and t.side_effects  # no read-only hint: side effects assumed
    out = asyncio.run(t.fn(a=2, b=3))
    assert out == {"result": 5}  # no output schema given here: the structured content as is
    assert json.loads(json.dumps(t.spec.parameters))["required"] == ["a", "b"]


def test_closing_the_sessions_stops_the_stdio_servers(tmp_path: Path) -> None:
    import time

    from erpoz.integrations.mcp import close_sessions

    config = project(tmp_path, stdio_yaml(tmp_path / "sent.jsonl"))

    @step
    async def server_pid(ctx: Context) -> int:
        return int(await ctx.tools.call("calc__pid"))

    result, _, _ = asyncio.run(run_flow(config, flow_of(server_pid)))
    pid = result.output
    os.kill(pid, 0)  # running while the session is open
    close_sessions()  # what happens at the process's exit
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the server (pid {pid}) still runs after close_sessions()")
