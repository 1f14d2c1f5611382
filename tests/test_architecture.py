"""The borders of DESIGN.md, checked on the source: no import cycles between parts, and no part
importing another part's private modules (``erpoz.x._y`` from outside ``x``).

A *part* is a sub-package of ``erpoz`` (``engine``, ``store``, ``cli`` …) or a top-level module;
the package's ``__init__`` (the public facade) with its private modules (``_run.py``) is the part
``erpoz``. Imports are read with ``ast`` (nothing is imported); those inside functions count like
module-level ones (they tie parts together just the same), those under ``if TYPE_CHECKING:``
count for private reaches only.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "erpoz"

#: Cross-part imports of private modules still to be removed (importing module, imported
#: module), each with why it is still here. The list only shrinks: an entry that is no longer
#: needed fails the test, so it is deleted with the import it excused.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {}

#: Edges between parts that still close a cycle (importer part, imported part), each with why.
CYCLE_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``


def part_of(module: str) -> str:
    bits = module.split(".")
    if len(bits) == 1:
        return PKG
    name = bits[1]
    if name.startswith("_") and len(bits) == 2:  # a private module of the package itself
        return PKG
    return name


def is_private(module: str) -> bool:
    return any(b.startswith("_") and not b.startswith("__") for b in module.split(".")[1:])


def _module_name(path: Path) -> str:
    bits = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(bits[:-1] if bits[-1] == "__init__" else bits)


def _exists(module: str) -> bool:
    base = SRC.joinpath(*module.split("."))
    return base.is_dir() or base.with_suffix(".py").exists()


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        bits = module.split(".")
        bits = bits if is_pkg else bits[:-1]
        bits = bits[: len(bits) - (node.level - 1)]
        base = ".".join(bits + ([node.module] if node.module else []))
    # ``from erpoz.x import y`` where ``y`` is a module imports that module
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if _exists(sub) else base)
    return out


def _statements(body: list[ast.stmt], type_only: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every statement, nested ones too (imports are statements: expressions are skipped),
    and whether it is under ``if TYPE_CHECKING:``."""
    for node in body:
        yield node, type_only
        checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for name in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, name, None)
            if not inner:
                continue
            if name == "handlers":
                for handler in inner:
                    yield from _statements(handler.body, type_only)
            else:
                yield from _statements(inner, type_only or (checking and name == "body"))


@cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for path in sorted((SRC / PKG).rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for n, type_only in _statements(tree.body):
            if not isinstance(n, ast.Import | ast.ImportFrom):
                continue
            for t in _targets(n, module, path.name == "__init__.py"):
                if t == PKG or t.startswith(PKG + "."):
                    found.append(Import(module, t, n.lineno, type_only))
    return tuple(found)


def private_reaches() -> dict[tuple[str, str], list[str]]:
    hits: dict[tuple[str, str], list[str]] = defaultdict(list)
    for imp in imports():
        if is_private(imp.target) and part_of(imp.target) != part_of(imp.module):
            hits[(imp.module, imp.target)].append(f"{imp.module}:{imp.line}")
    return hits


def part_graph() -> dict[str, dict[str, list[str]]]:
    """importer part -> imported part -> where (``module:line``), run-time imports only."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for imp in imports():
        a, b = part_of(imp.module), part_of(imp.target)
        if a != b and not imp.type_only:
            graph[a][b].append(f"{imp.module}:{imp.line} -> {imp.target}")
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_no_part_imports_another_parts_private_modules() -> None:
    hits = private_reaches()
    new = {k: v for k, v in hits.items() if k not in PRIVATE_ALLOWED}
    assert not new, "import what the part exports from its __init__ instead:\n" + "\n".join(
        f"  {where}: {target}" for (_, target), wheres in sorted(new.items()) for where in wheres
    )
    gone = sorted(set(PRIVATE_ALLOWED) - set(hits))
    assert not gone, f"no longer imported, delete from PRIVATE_ALLOWED: {gone}"


def test_no_cycles_between_parts() -> None:
    graph = part_graph()
    edges = {a: {b for b in bs if (a, b) not in CYCLE_ALLOWED} for a, bs in graph.items()}
    found = cycles(edges)
    detail = []
    for comp in found:
        for a in sorted(comp):
            for b in sorted(edges[a] & comp):
                detail += [f"  {a} -> {b}: {w}" for w in graph[a][b]]
    assert not found, f"cycles between parts {found}:\n" + "\n".join(detail)
    gone = sorted(k for k in CYCLE_ALLOWED if k[1] not in graph.get(k[0], {}))
    assert not gone, f"no longer imported, delete from CYCLE_ALLOWED: {gone}"


def test_the_check_sees_a_cycle_and_a_private_reach() -> None:
    """The checks themselves: a made-up graph with a cycle, and the private-module rule."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []
    assert is_private("erpoz.models._meter") and not is_private("erpoz.models.replay")
    assert part_of("erpoz.cli.worker") == part_of("erpoz.cli._console") == "cli"
    assert part_of("erpoz") == "erpoz" and part_of("erpoz.store._sqlite") == "store"


def test_docs_and_examples_import_no_private_module() -> None:
    """What users read and copy names public modules only."""
    root = SRC.parent
    private = re.compile(r"\berpoz(?:\.[a-z]\w*)*\._[a-z]\w*")
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    files += sorted((root / "examples").rglob("*.py"))
    found = [
        f"{path.relative_to(root)}:{n}: {m.group(0)}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in private.finditer(line)
    ]
    assert not found, "\n".join(found)
