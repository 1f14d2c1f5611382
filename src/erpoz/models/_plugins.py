"""Providers are plug-ins: built-in ones register through the same entry point a third party uses.

A package offers a provider with, in its ``pyproject.toml``::

    [project.entry-points."erpoz.providers"]
    myprovider = "mypkg.erpoz_provider:create"

where ``create(spec: erpoz.models.ModelSpec) -> model`` returns a chat, embed, OCR or classify
model for that spec.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError
from ._types import ModelSpec

GROUP = "erpoz.providers"
Factory = Callable[[ModelSpec], Any]


@cache
def providers() -> dict[str, Any]:
    """Provider name -> entry point (loaded on first use, so unused providers cost nothing)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def create(spec: ModelSpec) -> Any:
    """Build the model a spec describes, through its provider's factory."""
    eps = providers()
    if spec.provider not in eps:
        raise ConfigError(
            f"model '{spec.name}': unknown provider '{spec.provider}' (installed providers: "
            f"{', '.join(sorted(eps)) or 'none'})"
        )
    factory: Factory = eps[spec.provider].load()
    return factory(spec)


def check(spec: ModelSpec) -> None:
    """Let a built-in (or already imported) provider check a spec's params without building
    anything (no network, no weights), when it offers ``check_params(spec)`` next to its
    factory; ``ConfigError`` if they are wrong."""
    eps = providers()
    if spec.provider not in eps:
        return  # reported when the model is made
    name = eps[spec.provider].module
    if not name.startswith("erpoz.") and name not in sys.modules:
        return  # a third-party provider is not imported before its model is used
    module = importlib.import_module(name)
    checker = getattr(module, "check_params", None)
    if checker is not None:
        checker(spec)
