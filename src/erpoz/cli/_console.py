"""What every erpoz CLI module shares: exit codes, consoles, common options, failing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ConfigError, StoreError
from ..store import DURABILITY, SCHEMES, Store, open_store

if TYPE_CHECKING:
    from ..audit.checkpoints import AutoCheckpointer
    from ..engine import Engine

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_WAITING = 0, 1, 2, 3
EXIT_STORE, EXIT_RUN, EXIT_CANCELLED, EXIT_INTERRUPTED = 4, 5, 6, 130

out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        help="Run store: a SQLite path, postgresql://… or 'memory' "
        "\\[default: $ERPOZ_STORE or .erpoz/erpoz.db]",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
HoldOpt = Annotated[
    float,
    typer.Option(
        "--hold",
        min=0,
        help="Durable waits (ctx.sleep, recv) up to this many seconds are waited out in this "
        "process; longer ones leave the run waiting, with its wake time, for a worker or "
        "`erpoz runs resume`.",
    ),
]
InputsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="key=value (repeatable); values are JSON when they parse, else strings.",
    ),
]
InputJsonOpt = Annotated[
    Path | None, typer.Option("--input-json", help="A JSON object file of inputs.")
]
TagsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        "-t",
        help="key=value (repeatable): recorded with the run; 'tenant' and 'user' are what "
        "policy rules match.",
    ),
]


ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        "-x",
        help="Where step functions run: local (threads of this process) or ray "
        "\\[default: executor: in erpoz.yaml, else local]",
        show_default=False,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="The Ray cluster (ray://host:10001 or host:6379) for --executor ray "
        "\\[default: $RAY_ADDRESS, else a Ray started for this process]",
        show_default=False,
    ),
]


def fail(message: str, code: int) -> NoReturn:
    """Say what went wrong on one line of stderr (never wrapped: machines read it) and exit."""
    err.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    raise typer.Exit(code)


def check_store_options(
    store: str | None, durability: str = "sync", choices: tuple[str, ...] = DURABILITY
) -> None:
    """Exit 2 when ``--durability`` or the scheme of ``--store`` is not one erpoz knows."""
    if durability not in choices:
        fail(f"--durability {durability!r}: expected one of {', '.join(choices)}", EXIT_INVALID)
    if store and "://" in store and not store.startswith(SCHEMES):
        fail(
            f"--store {store!r}: unknown URL; give a file path, sqlite:///PATH, "
            "postgresql://… or memory",
            EXIT_INVALID,
        )


def open_or_fail(store: str | None, durability: str = "sync", fsync: bool = False) -> Store:
    """The run store named on the command line, or exit 4 saying why it cannot be opened (2
    when the option itself is wrong: an unknown durability or URL scheme)."""
    check_store_options(store, durability)
    try:
        return open_store(store, durability=durability, fsync=fsync)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)


def build_engine(
    st: Store,
    *,
    config: str | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    observers: list[Any] | None = None,
    hold_s: float = 1.0,
) -> Engine:
    """An engine with the project's services and executor (``--executor``, else erpoz.yaml's);
    a broken project file or a bad executor choice exits 2 saying why."""
    from ..engine import Engine
    from ..project import project_executor, project_services

    try:
        services = asyncio.run(project_services(st, config))
        chosen = project_executor(config, kind=executor, address=ray_address)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:  # reading what the project has spent
        fail(str(exc), EXIT_STORE)
    return Engine(st, executor=chosen, services=services, observers=observers, hold_s=hold_s)


def os_user() -> str:
    """Who runs this process: the login name ($LOGNAME, $USER, … else the password database),
    else ``uid N``."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such variable and no entry in the password database
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def reviewer_for(given: str, config: str | None = None) -> str:
    """Who decides a review from the command line: ``--reviewer``, else ``$ERPOZ_REVIEWER``,
    else ``reviewer:`` in the project file, else the OS user."""
    import os

    from ..models import load_config

    if given.strip():
        return given.strip()
    if os.environ.get("ERPOZ_REVIEWER", "").strip():
        return os.environ["ERPOZ_REVIEWER"].strip()
    try:
        named = load_config(config).reviewer
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    return named or os_user()


def auto_checkpoints(st: Store, config: str | None = None) -> AutoCheckpointer | None:
    """The project's automatic checkpoints (``audit.every_events`` / ``every_seconds`` in
    erpoz.yaml) for a process that records runs; a bad ``audit`` section exits 2."""
    from ..audit.settings import project_checkpointer

    def warn(exc: Exception) -> None:
        err.print(f"[yellow]audit checkpoint not written:[/] {escape(str(exc))}", highlight=False)

    try:
        return project_checkpointer(st, config, on_error=warn)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)


async def with_checkpoints(checkpoints: AutoCheckpointer | None, work: Awaitable[T]) -> T:
    """Await ``work`` while ``checkpoints`` are made (and a last one after it)."""
    if checkpoints is None:
        return await work
    async with checkpoints:
        return await work


def parse_since(value: str) -> float:
    """The commands' ``--since`` (see :func:`erpoz.observe.stats.parse_since`); imported when
    used, so that ``erpoz --help`` does not load the observers and the engine."""
    from ..observe.stats import parse_since as parse

    return parse(value)
