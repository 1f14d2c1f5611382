"""The suite is safe on a shared machine: no test restarts or reconfigures the machine's
PostgreSQL (a test that must restart or crash one starts its own: ``pgtest.private_cluster``),
and no test times a kill with a (random) sleep — kills are aimed at a moment read from the
store, so a test cannot pass or fail by how loaded the machine is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
_SERVER_CONTROL = re.compile(
    r"pg_ctlcluster|systemctl|service\s+postgresql|pg_ctl\b|/etc/postgresql|pg_reload_conf"
    r"|ALTER\s+SYSTEM"
)
_RANDOM = {"uniform", "random", "randint", "randrange", "choice", "expovariate", "gauss"}


def sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)


def test_no_test_controls_the_machines_postgresql() -> None:
    offenders = []
    for path in sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if _SERVER_CONTROL.search(code) and path.name != "pgtest.py":
                offenders.append(f"{path.relative_to(TESTS)}:{n}: {line.strip()}")
    assert not offenders, "restart a private cluster (pgtest.private_cluster) instead:\n" + (
        "\n".join(offenders)
    )


def _kills(fn: ast.AST) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr == "SIGKILL" for node in ast.walk(fn))


def _random_sleeps(fn: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "sleep"):
            continue
        for arg in ast.walk(ast.Module(body=[ast.Expr(a) for a in node.args], type_ignores=[])):
            if isinstance(arg, ast.Call) and getattr(arg.func, "attr", None) in _RANDOM:
                lines.append(node.lineno)
    return lines


def test_no_kill_is_timed_by_a_random_sleep() -> None:
    offenders = []
    for path in sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and _kills(fn):
                offenders += [f"{path.relative_to(TESTS)}:{n}" for n in _random_sleeps(fn)]
    assert not offenders, "pick the kill moment from the store (k steps recorded):\n" + (
        "\n".join(offenders)
    )
