"""Running the ``erpoz`` command against a throw-away store: in this process through Typer's
runner (most tests), or as a real subprocess (``Cli(tmp_path, real=True)``: the tests that
kill processes, span several, or check what only a new process shows)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TRIAGE = "examples/triage.yaml"  # relative to REPO, where every command runs
ERPOZ = Path(sys.executable).parent / "erpoz"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

TICKET = "I was charged twice for invoice INV-1234. Please refund the duplicate payment."
URGENT = "URGENT: I was charged twice for invoice INV-1234. Please refund it."

#: variables a test must not inherit from the shell that runs the suite (a shell that writes
#: no bytecode would make every subprocess compile erpoz afresh: see PYCACHE)
UNSET = (
    "FORCE_COLOR",
    "ERPOZ_REVIEWER",
    "ERPOZ_CONFIG",
    "ERPOZ_STORE",
    "ERPOZ_MEMORY",
    "PYTHONDONTWRITEBYTECODE",
)

PYCACHE = Path(tempfile.gettempdir()) / f"erpoz-tests-pycache-{os.getuid()}"
"""Where ``erpoz`` subprocesses keep the bytecode they compile (``PYTHONPYCACHEPREFIX``): out of
the repository, and shared, so that each one does not compile erpoz again (about a third of a
short command's time)."""


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``erpoz`` subprocess: this one's, less :data:`UNSET`, with a
    wide terminal, no colours and a default store that must not be used."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(_overrides(tmp_path))
    env.update(extra)
    return env


def _overrides(tmp_path: Path) -> dict[str, str]:
    return {
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "TERM": "dumb",
        # importing examples/triage_steps.py must not touch the repo: bytecode goes to PYCACHE
        "PYTHONPYCACHEPREFIX": str(PYCACHE),
        "ERPOZ_STORE": str(tmp_path / "default-store-must-not-be-used.db"),
    }


@dataclass
class Result:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout and stderr with whitespace collapsed (rich wraps long lines)."""
        return " ".join((self.stdout + "\n" + self.stderr).split())

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError as exc:  # pragma: no cover - a helpful message when it breaks
            raise AssertionError(f"not JSON from {self}: {exc}") from None

    def __str__(self) -> str:
        return (
            f"erpoz {' '.join(self.args)} -> exit {self.code}\n--- stdout ---\n"
            f"{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


class Cli:
    """``cli("run", flow, ...)`` runs ``erpoz run flow ... --store <tmp>/x.db`` in the repo root,
    in this process (Typer's runner, with ``env`` as the environment while it runs) or, with
    ``real=True``, as a subprocess of its own (with ``env``). Change ``env`` to change both."""

    def __init__(self, tmp_path: Path, *, real: bool = False) -> None:
        self.tmp_path = tmp_path
        self.store = tmp_path / "x.db"
        self.real = real
        self.env = cli_env(tmp_path)

    def __call__(self, *args: str | Path, store: bool = True, timeout: float = 60) -> Result:
        argv = [str(a) for a in args]
        if store:
            argv += ["--store", str(self.store)]
        if self.real:
            proc = subprocess.run(
                [str(ERPOZ), *argv],
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            return Result(argv, proc.returncode, proc.stdout, proc.stderr)
        return self._in_process(argv)

    def _in_process(self, argv: list[str]) -> Result:
        from typer.testing import CliRunner

        from erpoz.cli import app

        # the runner sets these for the call and puts the old values back after it
        env: dict[str, str | None] = {k: None for k in os.environ if k not in self.env}
        env.update({k: v for k, v in self.env.items() if os.environ.get(k) != v})
        paths = [p for p in (self.env.get("PYTHONPATH") or "").split(os.pathsep) if p]
        added = [p for p in paths if p not in sys.path]
        bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        sys.path[:0] = added  # what PYTHONPATH would give a subprocess
        modules = set(sys.modules)
        try:
            with contextlib.chdir(REPO):
                res = CliRunner().invoke(app, argv, env=env, catch_exceptions=True)
        finally:
            sys.dont_write_bytecode = bytecode
            for p in added:
                sys.path.remove(p)
            _forget_modules_of(set(sys.modules) - modules, [self.tmp_path, *map(Path, added)])
        stderr = res.stderr
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            # what a subprocess would print on an uncaught exception (exit 1)
            stderr += "".join(traceback.format_exception(*res.exc_info))  # type: ignore[misc]
        return Result(argv, res.exit_code, res.stdout, stderr)

    def ok(self, *args: str | Path, code: int = 0, **kw: Any) -> Result:
        """Run and insist on exit code ``code``."""
        res = self(*args, **kw)
        assert res.code == code, str(res)
        return res

    def show(self, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("runs", "show", run_id, "--json").json()
        return data

    def events(self, run_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.ok("events", run_id, "--json").json()
        return data


def _forget_modules_of(names: set[str], folders: list[Path]) -> None:
    """Unload the modules a call imported from a test's own folders (its flow and tool files),
    as a subprocess would: the next test's file of the same name is imported afresh."""
    roots = [str(f.resolve()) for f in folders]
    for name in names:
        where = getattr(sys.modules.get(name), "__file__", None)
        if where and any(str(Path(where).resolve()).startswith(r) for r in roots):
            del sys.modules[name]
