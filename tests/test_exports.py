"""The public surface: ``erpoz.__all__`` is what a user types in a flow file, nothing leaks into
it by accident (``asyncio``, ``Any``, ``Mapping``), and every part's ``__all__`` holds names
that exist. A change to the top-level surface is a decision: update ``PUBLIC`` with it."""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest

import erpoz

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = [
    "Context",
    "Decision",
    "Engine",
    "ErpozError",
    "Flow",
    "FlowError",
    "Plan",
    "RetryPolicy",
    "ReviewRequired",
    "RunError",
    "RunResult",
    "StepFailed",
    "Store",
    "StoreError",
    "__version__",
    "arun",
    "first_of",
    "load_flow",
    "open_store",
    "run",
    "step",
]

PARTS = [
    "audit",
    "engine",
    "eval",
    "flow",
    "guards",
    "memory",
    "models",
    "observe",
    "routing",
    "server",
    "store",
    "tools",
]


def test_the_top_level_surface_is_what_it_is_meant_to_be() -> None:
    assert sorted(erpoz.__all__) == sorted(PUBLIC)


def test_nothing_else_is_public_at_the_top_level() -> None:
    """Every public attribute of ``erpoz`` is in ``__all__`` or is one of its modules."""
    public = {n for n in dir(erpoz) if not n.startswith("_")}
    stray = {
        n
        for n in public - set(erpoz.__all__)
        if not isinstance(getattr(erpoz, n), types.ModuleType)
    }
    assert not stray, f"public by accident: {sorted(stray)}"


def test_every_top_level_name_is_documented() -> None:
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    )
    missing = [n for n in erpoz.__all__ if not re.search(rf"`(erpoz\.)?{re.escape(n)}\b", text)]
    assert not missing, f"not named in README.md or docs/*.md: {missing}"


@pytest.mark.parametrize("part", PARTS)
def test_every_name_a_part_exports_exists_and_is_its_own(part: str) -> None:
    module = importlib.import_module(f"erpoz.{part}")
    names = module.__all__
    assert len(names) == len(set(names)), f"erpoz.{part}.__all__ names one twice"
    for name in names:
        value = getattr(module, name)  # lazily loaded names too
        owner = getattr(value, "__module__", None)
        if isinstance(value, type | types.FunctionType) and owner:
            assert owner.startswith("erpoz."), f"erpoz.{part}.{name} comes from {owner}"
