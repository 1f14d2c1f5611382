"""``erpoz serve``: the HTTP server (runs API, OpenAI-compatible gateway, dashboard, metrics).

Mounted lazily by the CLI (``lazy.py``); ``python -m erpoz.cli.serve`` runs the same command
on its own.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError, FlowError, StoreError
from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STORE,
    StoreOpt,
    auto_checkpoints,
    check_store_options,
    err,
    fail,
)

if TYPE_CHECKING:
    from ..server import ServerState

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


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


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
    max_header_bytes: Annotated[
        int,
        typer.Option(
            min=1024, help="Answer 431 to a request line and headers larger than this (bytes)."
        ),
    ] = 32 * 1024,
    max_headers: Annotated[
        int, typer.Option(min=8, help="Answer 431 to a request with more header lines.")
    ] = 100,
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
            "answer); batch: commits grouped every 50 ms (a crash loses up to that much); "
            "effects: committed before anything leaves the process (a side-effecting tool "
            "call, a model call, a review pause, an answer)."
        ),
    ] = "sync",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Once listening, print one JSON line (url, host, port, flows, store, auth) "
            "to stdout instead of the summary.",
        ),
    ] = False,
) -> None:
    """Serve the runs API, the OpenAI-compatible gateway (/v1), the dashboard and /metrics.

    Each API key's tenant sees only its own runs (keys: --keys FILE or $ERPOZ_API_KEYS).

    Without API keys it listens on loopback only (127.0.0.1, ::1, localhost) and says so.
    A port that is taken exits 2 before anything is opened; --port 0 takes a free one.

    [dim]Example:[/] erpoz serve examples/triage.yaml --port 8000
    """
    try:
        import uvicorn

        from ..server import bind_socket, bounded_http, build_state, create_app, load_keys
    except ImportError as exc:
        fail(f"erpoz serve needs the server extra (pip install 'erpoz[server]'): {exc}", 2)
    check_store_options(store, durability, ("sync", "batch", "effects"))
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}", EXIT_INVALID)
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
        sock = bind_socket(host, port)
    except OSError as exc:
        why = exc.strerror or str(exc)
        fail(
            f"cannot listen on {host}:{port}: {why}"
            + (
                " (another server uses it: stop it or choose another --port)"
                if exc.errno == errno.EADDRINUSE
                else ""
            ),
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
        sock.close()
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        sock.close()
        fail(str(exc), EXIT_STORE)
    bound = sock.getsockname()[1]
    checkpoints = auto_checkpoints(state.store, config)
    if checkpoints is not None:  # the last checkpoint is made before the store closes
        state.on_startup.append(checkpoints.start)
        state.on_shutdown.append(checkpoints.stop)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}"

    def announce() -> None:  # once it listens and the app has started: never before
        if as_json:
            sys.stdout.write(json.dumps(_listening(state, url, host, bound, durability)) + "\n")
            sys.stdout.flush()
        else:
            _summary(state, url, durability)

    settings = uvicorn.Config(
        create_app(state),
        host=host,
        port=bound,
        log_level=log_level.lower(),
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
        http=bounded_http(max_header_bytes, max_headers),
        h11_max_incomplete_event_size=max_header_bytes,
    )
    server = _announcing_server(settings, announce)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C (SIGINT) is how it is meant to stop
        pass
    finally:
        sock.close()
    if not server.started:
        fail("the server did not start (the log above says why)", EXIT_FAILED)


def _announcing_server(settings: Any, announce: Callable[[], None]) -> Any:
    """A uvicorn server that calls ``announce`` once it listens and its app has started."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, saying so once it listens and its app has started."""

        def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
            super().__init__(config)
            self._announce = announce

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                self._announce()

    return Server(settings, announce)


def _listening(
    state: ServerState, url: str, host: str, port: int, durability: str
) -> dict[str, Any]:
    """The line ``erpoz serve --json`` prints once it listens."""
    return {
        "url": url,
        "host": host,
        "port": port,
        "docs": f"{url}/docs",
        "flows": sorted(state.flows),
        "store": state.store.url,
        "durability": durability,
        "auth": state.tenants is not None,
        "tenants": sorted(state.tenants.tenants) if state.tenants is not None else [],
    }


def _summary(state: ServerState, url: str, durability: str) -> None:
    names = ", ".join(sorted(state.flows)) or "none (the gateway's models only)"
    err.print(f"erpoz serve on {url} (API docs at /docs)", highlight=False)
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


serve_app = typer.Typer(
    name="erpoz-serve",
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
serve_app.command()(serve)

if __name__ == "__main__":
    serve_app()
