"""Helpers for running the ``erpoz`` command as a real subprocess against a throw-away store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TRIAGE = "examples/triage.yaml"  # relative to REPO, where every command runs
ERPOZ = Path(sys.executable).parent / "erpoz"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

TICKET = "I was charged twice for invoice INV-1234. Please refund the duplicate payment."
URGENT = "URGENT: I was charged twice for invoice INV-1234. Please refund it."


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "ERPOZ_REVIEWER")}
    env.update(
        COLUMNS="200",
        NO_COLOR="1",
        TERM="dumb",
        PYTHONDONTWRITEBYTECODE="1",  # importing examples/triage_steps.py must not touch the repo
        ERPOZ_STORE=str(tmp_path / "default-store-must-not-be-used.db"),
    )
    env.update(extra)
    return env


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
    """``cli("run", flow, ...)`` runs ``erpoz run flow ... --store <tmp>/x.db`` in the repo root."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store = tmp_path / "x.db"
        self.env = cli_env(tmp_path)

    def __call__(self, *args: str | Path, store: bool = True, timeout: float = 60) -> Result:
        argv = [str(a) for a in args]
        if store:
            argv += ["--store", str(self.store)]
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
