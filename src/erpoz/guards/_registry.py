"""Guards are plug-ins: built-in ones register through the same entry point a third party uses.

A package offers a guard with, in its ``pyproject.toml``::

    [project.entry-points."erpoz.guards"]
    myguard = "mypkg.guards:MyGuard"

where ``MyGuard(**params)`` (a class or any factory taking keyword parameters) returns an
object with a ``name`` and ``check(text) -> tuple[Finding, ...]``. A guard not worth a
package is named by its import path, ``"mymodule:MyGuard"``.

:func:`build_guard` turns a kind and its parameters (as a YAML file gives them) into a guard;
every mistake is a :class:`~erpoz.errors.ConfigError` naming the file, the line and the
kinds that exist.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import ConfigError
from ._findings import Guard

__all__ = ["GROUP", "build_guard", "import_object", "known_guards"]

GROUP = "erpoz.guards"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    """Guard kind -> entry point (loaded on first use, so unused guards cost nothing)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_guards() -> list[str]:
    """The guard kinds installed: the built-ins and those of plug-in packages, sorted."""
    return sorted(_entry_points())


def import_object(path: str, *, what: str = "object") -> Any:
    """The object a ``"package.module:attr"`` path names (``attr`` may be dotted);
    ``ValueError`` saying what is wrong when it cannot be imported."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} path {path!r} must look like 'package.module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {what} {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"cannot import {what} {path!r}: no {part!r} in it") from None
    return obj


def _parameters(factory: Any) -> str:
    """The keyword parameters ``factory`` accepts, for an error message."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return "unknown"
    names = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return ", ".join(names) or "nothing"


def _known() -> str:
    names = ", ".join(known_guards()) or "none installed"
    return f"known guard kinds: {names}; or a 'module:attr' path"


def build_guard(
    kind: str,
    params: Mapping[str, Any],
    *,
    file: str | None = None,
    line: int | None = None,
) -> Guard:
    """Build the guard ``kind`` names with keyword ``params``.

    ``kind`` is an entry point of the ``erpoz.guards`` group (the built-ins: ``pii``,
    ``injection``, ``toxicity``, ``language``, ``length``, ``grounded``, ``schema``) or a
    ``"module:attr"`` import path. ``file`` and ``line`` locate the guard in a YAML file
    for error messages.
    """

    def fail(message: str) -> ConfigError:
        return ConfigError(message, file=file, line=line)

    if not isinstance(params, Mapping):
        raise fail(f"guard '{kind}': params must be a mapping, not {params!r}")
    bad_keys = [k for k in params if not isinstance(k, str)]
    if bad_keys:
        raise fail(f"guard '{kind}': parameter names must be strings: {bad_keys!r}")
    eps = _entry_points()
    if kind in eps:
        try:
            factory: Any = eps[kind].load()
        except Exception as exc:  # a broken plug-in package: say which one
            raise fail(f"guard '{kind}': cannot load {eps[kind].value}: {exc}") from exc
    elif ":" in kind:
        try:
            factory = import_object(kind, what="guard")
        except ValueError as exc:
            raise fail(f"{exc} ({_known()})") from exc
    else:
        raise fail(f"unknown guard '{kind}' ({_known()})")
    if not callable(factory):
        raise fail(f"guard '{kind}': {factory!r} is not a class or factory function ({_known()})")
    try:
        guard = factory(**params)
    except (TypeError, ValueError) as exc:
        raise fail(
            f"guard '{kind}': wrong params {dict(params)!r}: {exc} "
            f"(it takes: {_parameters(factory)}; {_known()})"
        ) from exc
    except ImportError as exc:
        raise fail(f"guard '{kind}': {exc}") from exc
    name = getattr(guard, "name", None)
    if not isinstance(name, str) or not callable(getattr(guard, "check", None)):
        raise fail(
            f"guard '{kind}': the factory returned {type(guard).__name__}, which has no "
            f"'name' (str) and 'check(text)' method ({_known()})"
        )
    result: Guard = guard
    return result
