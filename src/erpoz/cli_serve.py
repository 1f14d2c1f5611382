"""``erpoz serve``: the HTTP server (runs API, OpenAI-compatible gateway, dashboard, metrics).

Mounted in ``cli.py``; ``python -m erpoz.cli_serve`` runs the same command on its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from ._console import EXIT_INVALID, EXIT_STORE, StoreOpt, auto_checkpoints, err, fail
from .errors import ConfigError, FlowError, StoreError

LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    """Whether ``host`` only answers this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def serve(
    flows: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FLOW",
            help="Flows the API can start, by name: .yaml files, module:attr or file.py:attr.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; other than loopback needs API keys.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
    store: StoreOpt = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="API keys file: one KEY=tenant (or KEY=tenant:name) per line "
            "\\[default: $ERPOZ_API_KEYS]",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Project file \\[default: $ERPOZ_CONFIG or ./erpoz.yaml]",
            show_default=False,
        ),
    ] = None,
    max_body: Annotated[
        int, typer.Option(min=1024, help="Refuse request bodies larger than this (bytes).")
    ] = 4 * 1024 * 1024,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug.")
    ] = "info",
    access_log: Annotated[
        bool,
        typer.Option(help="A log line per request (costs ~0.1 ms of CPU per request)."),
    ] = True,
    durability: Annotated[
        str,
        typer.Option(
            help="sync: each step's success is committed before the next step (and before an "
            "answer); batch: commits grouped every 50 ms (a crash loses up to that much)."
        ),
    ] = "sync",
) -> None:
    """Serve the runs API, the OpenAI-compatible gateway (/v1), the dashboard and /metrics.

    Each API key's tenant sees only its own runs (keys: --keys FILE or $ERPOZ_API_KEYS).

    Without API keys it listens on loopback only (127.0.0.1, ::1, localhost) and says so.

    [dim]Example:[/] erpoz serve examples/triage.yaml --port 8000
    """
    try:
        import uvicorn

        from .server import create_app
        from .server._build import build_state, load_keys
    except ImportError as exc:
        fail(f"erpoz serve needs the server extra (pip install 'erpoz[server]'): {exc}", 2)
    if durability not in ("sync", "batch"):
        fail(f"--durability {durability!r}: sync or batch", EXIT_INVALID)
    try:
        tenants = load_keys(keys)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    if tenants is None and not is_loopback(host):
        fail(
            f"no API keys are configured, so erpoz serve listens on loopback only "
            f"({', '.join(LOOPBACK_NAMES)}), not on {host}; set ERPOZ_API_KEYS or pass "
            "--keys FILE to serve other hosts",
            EXIT_INVALID,
        )
    try:
        state = asyncio.run(
            build_state(
                flows or [],
                store=store,
                keys_file=keys,
                config=config,
                max_body=max_body,
                durability=durability,
            )
        )
    except (FlowError, ConfigError) as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    checkpoints = auto_checkpoints(state.store, config)
    if checkpoints is not None:  # the last checkpoint is made before the store closes
        state.on_startup.append(checkpoints.start)
        state.on_shutdown.append(checkpoints.stop)
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(sorted(state.flows)) or "none (the gateway's models only)"
    err.print(f"erpoz serve on http://{shown}:{port} (API docs at /docs)", highlight=False)
    err.print(f"  flows: {names}", highlight=False)
    err.print(f"  store: {state.store.url} ({durability})", highlight=False)
    if state.tenants is None:
        err.print(
            "  no API keys: serving on loopback only, every run belongs to the tenant '-' "
            "(set ERPOZ_API_KEYS or --keys FILE to require keys and serve other hosts)",
            highlight=False,
        )
    else:
        tenants_list = ", ".join(sorted(state.tenants.tenants))
        err.print(f"  API keys: {len(state.tenants)} for tenants {tenants_list}", highlight=False)
    uvicorn.run(
        create_app(state),
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


serve_app = typer.Typer(
    name="erpoz-serve",
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
serve_app.command()(serve)

if __name__ == "__main__":
    serve_app()
