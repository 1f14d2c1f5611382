"""Names a package imports on first use, so that importing the package does not pay for what
only some of its users need (``erpoz``, ``erpoz.store``, ``erpoz.guards`` …): each package maps
a name to the module that defines it and takes its module ``__getattr__`` from here."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: a name of ``where`` is imported from its
    module (relative to ``package``) when first used and kept in ``namespace`` (the package's
    ``globals()``), so that later uses do not come back here; any other name is an
    ``AttributeError``, as for a module without ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
