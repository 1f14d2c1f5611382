"""``erpoz mcp``: the tools of the project's MCP servers, and flows served as MCP tools.

Needs the mcp extra (``pip install 'erpoz[mcp]'``); the rest of the CLI works without it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError, FlowError
from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STORE,
    JsonOpt,
    StoreOpt,
    TagsOpt,
    build_engine,
    err,
    fail,
    open_or_fail,
    out,
)

if TYPE_CHECKING:
    from ..models import ProjectConfig

mcp_app = typer.Typer(
    help="MCP: the tools of the project's MCP servers, and flows served to MCP clients.\n\n"
    "[dim]Example:[/] erpoz mcp tools · erpoz mcp serve examples/triage.yaml",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Project file \\[default: $ERPOZ_CONFIG or ./erpoz.yaml]",
        show_default=False,
    ),
]


def _needs_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        fail(f"erpoz mcp needs the mcp extra (pip install 'erpoz[mcp]'): {exc}", EXIT_INVALID)


def _config(config: str | None) -> ProjectConfig:
    from ..models import load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)


@mcp_app.command("tools")
def tools(
    config: ConfigOpt = None,
    server: Annotated[
        list[str] | None, typer.Option("--server", help="Only this server (repeatable).")
    ] = None,
    flow: Annotated[
        str, typer.Option(help="Show what the policy decides for a call from this flow.")
    ] = "-",
    as_json: JsonOpt = False,
) -> None:
    """List the tools of the project's MCP servers, with schemas and policy decisions.

    The servers are those under 'mcp:' in erpoz.yaml; each tool is shown with its name in
    erpoz, its input schema, whether it has side effects (then each call carries an
    idempotency key) and what the project's policy decides for a call (from --flow).

    Exit codes: 0 listed · 1 a server could not be reached · 2 no or a wrong 'mcp' section.

    [dim]Example:[/] erpoz mcp tools --flow billing --json
    """
    _needs_mcp()
    from ..guards import guardrails_from_config
    from ..integrations.mcp import McpToolError, close_sessions, servers_from_config, tools_of
    from ..policy import Policy, Subject

    cfg = _config(config)
    try:
        specs = servers_from_config(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    if not specs:
        fail(
            f"{cfg.file or 'no erpoz.yaml'}: no MCP servers (declare them under 'mcp:'; see "
            "docs/integrations/mcp.md)",
            EXIT_INVALID,
        )
    if server:
        unknown = sorted(set(server) - {s.name for s in specs})
        if unknown:
            known = ", ".join(s.name for s in specs)
            fail(f"no MCP server {', '.join(unknown)} (servers: {known})", EXIT_INVALID)
        specs = [s for s in specs if s.name in server]
    try:
        rails = guardrails_from_config(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    policy = rails.policy if rails is not None else Policy()
    try:
        with err.status(f"connecting to {len(specs)} MCP server(s)…", spinner="dots"):
            found = asyncio.run(tools_of(specs))
    except ConfigError as exc:
        code = EXIT_FAILED if isinstance(exc.__cause__, McpToolError) else EXIT_INVALID
        fail(str(exc), code)
    finally:
        close_sessions()
    server_of = {}
    for spec in specs:
        for t in found:
            if t.name.startswith(spec.prefix) and t.name not in server_of:
                server_of[t.name] = spec.name
    rows: list[dict[str, Any]] = []
    for t in found:
        action, rule = policy.decide(t.name, subject=Subject(flow=flow))
        rows.append(
            {
                "tool": t.name,
                "server": server_of.get(t.name),
                "description": t.description,
                "side_effects": t.side_effects,
                "policy": {"action": action, "rule": rule},
                "parameters": dict(t.parameters),
            }
        )
    if as_json:
        out.print_json(data=rows)
        return
    table = Table("tool", "server", "parameters", "side effects", "policy", "description")
    for r in rows:
        props = r["parameters"].get("properties", {})
        required = set(r["parameters"].get("required", []))
        params = ", ".join(
            f"{k}{'' if k in required else '?'}: {v.get('type', 'any')}" for k, v in props.items()
        )
        action = r["policy"]["action"]
        style = {"allow": "green", "deny": "red", "review": "yellow"}.get(action, "white")
        table.add_row(
            r["tool"],
            r["server"] or "",
            escape(params),
            "yes" if r["side_effects"] else "no",
            f"[{style}]{action}[/] ({escape(r['policy']['rule'])})",
            escape((r["description"] or "").split("\n")[0][:60]),
        )
    out.print(table)


@mcp_app.command("serve")
def serve(
    flows: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FLOW",
            help="Flows to serve as tools: .yaml files, module:attr or file.py:attr.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Also serve this project model as a tool ask_NAME (repeatable).",
        ),
    ] = None,
    transport: Annotated[
        str, typer.Option(help="stdio (a client starts this command) or http (streamable HTTP).")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="With http: the address (loopback only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="With http: the port.")] = 8765,
    path: Annotated[str, typer.Option(help="With http: the endpoint's path.")] = "/mcp",
    store: StoreOpt = None,
    config: ConfigOpt = None,
    tag: TagsOpt = None,
    log_level: Annotated[str, typer.Option(help="With http: uvicorn's log level.")] = "warning",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Say what is served as one JSON line (stdout with http; stderr with stdio, "
            "where stdout carries the protocol).",
        ),
    ] = False,
) -> None:
    """Serve flows as MCP tools, over stdio or streamable HTTP.

    An MCP client (an IDE, an agent) runs a governed flow like any tool. Each call is a run
    in the store (policy, guards, budgets, audit as usual); a run waiting for review answers
    at once with status 'waiting', and the 'erpoz_run' tool tells later how it ended. Runs
    are tagged via=mcp (and with --tag).

    With --model NAME a project model is a tool too (ask_NAME: one governed call).

    [dim]Examples:[/] erpoz mcp serve examples/triage.yaml ·
    erpoz mcp serve flows/support.yaml --model default --transport http -t tenant=ide
    """
    _needs_mcp()
    from ..flow import load_flow
    from ..integrations.mcp.server import build_server, model_tool_name
    from ..models import ModelHub
    from .serve import is_loopback

    if transport not in ("stdio", "http"):
        fail(f"--transport {transport!r}: stdio or http", EXIT_INVALID)
    if transport == "http" and not is_loopback(host):
        fail(
            f"erpoz mcp serve listens on loopback only, not on {host}: it has no "
            "authentication of its own yet; put it behind a proxy that authenticates clients",
            EXIT_INVALID,
        )
    tags: dict[str, str] = {}
    for pair in tag or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--tag {pair!r}: expected key=value", EXIT_INVALID)
        tags[key.strip()] = value
    if not flows and not model:
        fail("name at least one FLOW or --model to serve", EXIT_INVALID)
    try:
        loaded = [load_flow(f) for f in flows or []]
        for f in loaded:
            f.compile()
    except FlowError as exc:
        fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)
    engine = build_engine(st, config=config)
    hub = engine.services.get(ModelHub)
    known = hub.names() if isinstance(hub, ModelHub) else []
    for name in model or []:
        if name not in known:
            fail(f"--model {name}: no such model (models: {', '.join(known)})", EXIT_INVALID)
    try:
        server = build_server(loaded, engine, models=model or [], tags=tags)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    tools = [*(f.name for f in loaded), *(model_tool_name(m) for m in model or [])]
    names = ", ".join(tools)
    served = {"transport": transport, "tools": tools, "store": st.url}
    try:
        if transport == "stdio":
            if as_json:
                sys.stderr.write(json.dumps(served) + "\n")
            else:
                err.print(
                    f"erpoz mcp serve (stdio): tools {names}, store {st.url}", highlight=False
                )
            asyncio.run(_serve_stdio(server, st))
        else:
            import uvicorn

            app = server.streamable_http_app(streamable_http_path=path, host=host)
            url = f"http://{host}:{port}{path}"
            if as_json:
                sys.stdout.write(json.dumps({**served, "url": url}) + "\n")
                sys.stdout.flush()
            else:
                err.print(
                    f"erpoz mcp serve on {url}: tools {names}, store {st.url}", highlight=False
                )
            uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
            asyncio.run(st.close())
    except OSError as exc:
        fail(f"cannot serve: {exc}", EXIT_STORE if "database" in str(exc) else EXIT_FAILED)
    finally:
        engine.executor.shutdown()
        from ..integrations.mcp import close_sessions

        close_sessions()


async def _serve_stdio(server: Any, store: Any) -> None:
    from mcp.server.stdio import stdio_server

    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await store.close()
