"""References: how a step input names where its value comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Ref:
    """A value that exists only once the run gets there: a flow input or a step's output.

    ``ref["field"]`` reads a field of it; ``ref.eq(v)``, ``ref.ne(v)`` and ``~ref`` build
    conditions for ``when=``.
    """

    __slots__ = ()

    def __getitem__(self, name: str) -> FieldRef:
        if not isinstance(name, str):
            raise TypeError(f"field names are strings, got {name!r}")
        return FieldRef(self, (name,))

    def eq(self, value: Any) -> Cond:
        return Cond(self, "eq", value)

    def ne(self, value: Any) -> Cond:
        return Cond(self, "ne", value)

    def __invert__(self) -> Cond:
        return Cond(self, "falsy", None)

    def __bool__(self) -> bool:
        raise TypeError(
            "a Ref has no value while the flow is being defined; use when=ref, ref.eq(value) "
            "or ~ref to branch on it at run time"
        )


@dataclass(frozen=True, slots=True, eq=False)
class InputRef(Ref):
    name: str

    def __repr__(self) -> str:
        return f"inputs.{self.name}"


@dataclass(frozen=True, slots=True, eq=False)
class NodeRef(Ref):
    node_id: str

    def __repr__(self) -> str:
        return self.node_id


@dataclass(frozen=True, slots=True, eq=False)
class FieldRef(Ref):
    base: Ref
    path: tuple[str, ...]

    def __getitem__(self, name: str) -> FieldRef:
        return FieldRef(self.base, (*self.path, name))

    def __repr__(self) -> str:
        return ".".join((repr(self.base), *self.path))


@dataclass(frozen=True, slots=True, eq=False)
class Coalesce(Ref):
    """The first of several refs whose step was not skipped (merges ``when`` branches)."""

    refs: tuple[Ref, ...]

    def __repr__(self) -> str:
        return f"first_of({', '.join(map(repr, self.refs))})"


def first_of(*refs: Ref) -> Coalesce:
    """Merge branches: the value of the first ref whose step ran (was not skipped by ``when``)."""
    if len(refs) < 2 or not all(isinstance(r, Ref) for r in refs):
        raise TypeError("first_of() takes two or more refs")
    return Coalesce(tuple(refs))


@dataclass(frozen=True, slots=True)
class Cond:
    """A run-time condition on a ref: truthy, falsy, equal or not equal to a constant."""

    ref: Ref
    op: str  # "truthy" | "falsy" | "eq" | "ne"
    value: Any = None

    def __invert__(self) -> Cond:
        flip = {"truthy": "falsy", "falsy": "truthy", "eq": "ne", "ne": "eq"}
        return Cond(self.ref, flip[self.op], self.value)

    def __repr__(self) -> str:
        if self.op == "truthy":
            return repr(self.ref)
        if self.op == "falsy":
            return f"not {self.ref!r}"
        return f"{self.ref!r} {'==' if self.op == 'eq' else '!='} {self.value!r}"
