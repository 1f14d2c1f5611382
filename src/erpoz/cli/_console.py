"""What every erpoz CLI module shares: exit codes, consoles, common options, failing."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ConfigError, StoreError

if TYPE_CHECKING:  # the store, the engine, asyncio: imported by the commands that use them
    from ..audit.checkpoints import AutoCheckpointer
    from ..engine import Engine, Executor
    from ..store import Store

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
    store: str | None, durability: str = "sync", choices: tuple[str, ...] | None = None
) -> None:
    """Exit 2 when ``--durability`` (one of ``choices``, by default all the store's) or the
    scheme of ``--store`` is not one erpoz knows."""
    from ..store import DURABILITY, SCHEMES

    choices = DURABILITY if choices is None else choices
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
    from ..store import open_store

    check_store_options(store, durability)
    try:
        return open_store(store, durability=durability, fsync=fsync)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)


DEFAULT = "erpoz.yaml"
"""The project file a command reads when none is named (as ``erpoz.models.DEFAULT_FILE``)."""


def has_project_file(config: str | None = None) -> bool:
    """Whether this process has a project file: ``--config``, ``$ERPOZ_CONFIG`` or
    ``./erpoz.yaml`` (where :func:`erpoz.models.config_path` looks), known without reading it
    or importing the models. A file named but missing counts: reading it says what is wrong."""
    return config is not None or bool(os.environ.get("ERPOZ_CONFIG")) or os.path.isfile(DEFAULT)


class DefaultServices(Mapping[type, object]):
    """The services of a project without a project file, built when a step first asks for
    them: the offline default models and the project's memory, opened when a step first asks
    for it, and nothing else (no guardrails, no tools;
    ``tests/cli/test_lazy_services.py`` checks it is what :func:`erpoz.project.project_services`
    builds). A flow whose steps call no model never imports the models."""

    def __init__(self, build: Callable[[], Mapping[type, object]]) -> None:
        self._build: Callable[[], Mapping[type, object]] | None = build
        self._built: Mapping[type, object] = {}

    def _all(self) -> Mapping[type, object]:
        if self._build is not None:
            self._built, self._build = self._build(), None
        return self._built

    def __getitem__(self, key: type) -> object:
        if self._build is not None and not _is_model_hub(key):
            if _is_memory(key):  # the project's memory, as project_services gives it
                from ..memory import project_memory

                return project_memory()
            raise KeyError(key)  # the other service of a project without a file: its models
        return self._all()[key]

    def __iter__(self) -> Iterator[type]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _is_model_hub(key: type) -> bool:
    # whoever holds the ModelHub class has imported erpoz.models: no import needed to compare
    models = sys.modules.get("erpoz.models")
    return models is not None and key is getattr(models, "ModelHub", None)


def _is_memory(key: type) -> bool:
    memory = sys.modules.get("erpoz.memory")
    return memory is not None and key is getattr(memory, "Memory", None)


def _project_services(st: Store, config: str | None) -> Mapping[type, object]:
    """:func:`erpoz.project.project_services`, from any thread (a running event loop's too)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from ..project import project_services

    with ThreadPoolExecutor(1, thread_name_prefix="erpoz-services") as pool:
        return pool.submit(asyncio.run, project_services(st, config)).result()


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
    a broken project file or a bad executor choice exits 2 saying why. Without a project file
    the services (the offline default models) are built when a step first uses them."""
    from ..engine import Engine

    services: Mapping[type, object]
    chosen = None
    if not has_project_file(config):
        services = DefaultServices(lambda: _project_services(st, config))
        if executor is not None or ray_address is not None:
            chosen = _executor(config, executor, ray_address)
        return Engine(st, executor=chosen, services=services, observers=observers, hold_s=hold_s)
    try:
        services = _project_services(st, config)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:  # reading what the project has spent
        fail(str(exc), EXIT_STORE)
    chosen = _executor(config, executor, ray_address)
    return Engine(st, executor=chosen, services=services, observers=observers, hold_s=hold_s)


def _executor(config: str | None, kind: str | None, address: str | None) -> Executor | None:
    from ..project import project_executor

    try:
        return project_executor(config, kind=kind, address=address)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)


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
    if st.url == "memory" or not has_project_file(config):
        return None  # nothing kept, or no audit section: not even the settings are imported
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
