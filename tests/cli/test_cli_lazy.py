"""Start-up: ``import erpoz`` and ``erpoz --help`` import only what they use (checked in a fresh
interpreter, by the modules it ended with), and the commands imported lazily show in
``erpoz --help`` exactly as they would if they had been imported."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer import _click as click

from erpoz.cli import app
from erpoz.cli.lazy import LAZY, LazyGroup, load

MODELS_AND_SERVERS = [
    "torch",
    "sentence_transformers",
    "transformers",
    "rapidocr_onnxruntime",
    "onnxruntime",
    "sklearn",
    "numpy",
    "fastapi",
    "uvicorn",
    "starlette",
    "psycopg",
    "ray",
    "openai",
    "httpx",
    "mcp",
    "lingua",
    "opentelemetry",
    "cryptography",
]
"""Heavy modules no start-up path may import."""


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _cli(*args: str) -> str:
    return (
        "import sys\n"
        f"sys.argv = ['erpoz', {', '.join(repr(a) for a in args)}]\n"
        "from erpoz.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )


def test_import_erpoz_imports_neither_the_engine_nor_pydantic() -> None:
    loaded = _modules_after("import erpoz")
    assert not loaded & {"erpoz.engine", "erpoz.flow", "erpoz.store", "pydantic", "yaml"}
    assert not loaded & set(MODELS_AND_SERVERS)


@pytest.mark.parametrize(
    "args",
    [("--help",), ("run", "--help"), ("runs", "show", "--help"), ("search", "--help")],
)
def test_help_imports_no_model_server_or_other_command(args: tuple[str, ...]) -> None:
    loaded = _modules_after(_cli(*args))
    assert not loaded & set(MODELS_AND_SERVERS), sorted(loaded & set(MODELS_AND_SERVERS))
    others = {"erpoz.models", "erpoz.memory", "erpoz.server", "erpoz.audit", "erpoz.eval"}
    if args == ("--help",):
        assert not loaded & {*others, "erpoz.engine", "pydantic"}
        assert not loaded & {"asyncio", "erpoz.store"}  # nothing runs: no event loop, no store
        lazy_modules = {f"erpoz.cli{e.module}" for group in LAZY.values() for e in group.values()}
        assert not loaded & lazy_modules, sorted(loaded & lazy_modules)
    if args[0] == "search":  # its own module, not the OCR or the embedding model
        assert "erpoz.cli.memory" in loaded and "erpoz.models.local_ocr" not in loaded


def test_a_one_step_run_imports_no_detector_model_or_server(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text(
        "from erpoz import Flow, step\n\n\n@step\ndef inc(x: int) -> int:\n    return x + 1\n\n\n"
        'flow = Flow("one", inputs={"x": int})\nflow.add(inc, x=flow.input("x"))\n'
    )
    code = f"import os\nos.chdir({str(tmp_path)!r})\n" + _cli(
        "run", "one.py:flow", "-i", "x=1", "--store", "memory"
    )
    loaded = _modules_after(code)
    assert "erpoz.engine" in loaded  # it did run
    assert not loaded & set(MODELS_AND_SERVERS), sorted(loaded & set(MODELS_AND_SERVERS))
    detectors = {m for m in loaded if m.startswith("erpoz.guards.") and not m[13:].startswith("_")}
    assert not detectors, detectors  # no guard is configured: none is imported
    assert not loaded & {"erpoz.memory", "erpoz.server", "erpoz.eval"}  # (OCR: rapidocr above)
    # no project file: its services are built when a step asks (none does), no audit settings
    # are read for a memory store, and neither SQLite nor the migration is imported
    assert not loaded & {"erpoz.project", "erpoz.audit", "erpoz.store._sqlite", "erpoz.store._copy"}


def test_lazy_entries_carry_their_commands_own_help() -> None:
    for group, entries in LAZY.items():
        for name, lazy in entries.items():
            cmd = load(name, lazy)
            own = inspect.cleandoc(cmd.help or "").split("\n\n")[0]
            assert lazy.help == own, f"cli.lazy.LAZY[{group!r}][{name!r}].help is out of date"


def _help(group: click.Group) -> str:
    with click.Context(group, info_name="erpoz") as ctx:
        return group.get_help(ctx)


def test_help_lists_lazy_commands_as_the_loaded_ones_would_show() -> None:
    lazy = typer.main.get_command(app)
    loaded = typer.main.get_command(app)
    assert isinstance(lazy, LazyGroup) and isinstance(loaded, LazyGroup)
    with click.Context(loaded) as ctx:
        for name in loaded.list_commands(ctx):
            assert loaded.get_command(ctx, name) is not None
    assert set(LAZY["erpoz"]) <= set(loaded.commands)  # imported now
    assert _help(lazy) == _help(loaded)
    assert not set(LAZY["erpoz"]) & set(lazy.commands)  # listing imported nothing
