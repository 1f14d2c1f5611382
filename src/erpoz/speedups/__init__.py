"""The optional C extension (``erpoz.speedups._speedups``, from ``_speedups.c`` here): an
event's chain hash, its leaf and the tree's node hashes computed in C, a batch of events at a
time, for ``erpoz audit verify`` (and an event's chain hash and leaf for the writers).

The pure-Python code stays and is the reference: the C code computes exactly the same hashes
(the tests run both on the same data). It is used when it was built (``pip install`` builds it
where a C compiler is found, and goes on without it where not) and ``ERPOZ_NO_SPEEDUPS`` is
not set to a non-empty value other than ``0``; :func:`use` switches it off and on in a process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol


class Speedups(Protocol):
    """What the extension offers (``_speedups.pyi`` has the details)."""

    def chain_hash(
        self,
        prev_hash: str,
        run_id: str,
        seq: int,
        ts: float,
        kind: str,
        step: str | None,
        attempt: int,
        data: str,
        payload: str | None,
        /,
    ) -> str: ...

    def leaf_hash(self, run_id: str, seq: int, event_hash: str, /) -> bytes: ...

    def scan(
        self, rows: Sequence[Sequence[Any]], genesis: str, leaves: bool, /
    ) -> tuple[int, list[bytes] | None, list[tuple[str, int, int]]]: ...

    def parents(self, level: Sequence[bytes], /) -> list[bytes]: ...


_built: Speedups | None
try:
    from . import _speedups

    _built = _speedups
except ImportError:  # not built: no C compiler where erpoz was installed
    _built = None

C: Speedups | None = None
"""The extension when in use, else ``None`` (read it at each call: :func:`use` changes it)."""


def available() -> bool:
    """Whether the extension was built and imports."""
    return _built is not None


def use(enabled: bool) -> bool:
    """Use the extension (when built) or the pure-Python code; returns whether it was in use."""
    global C
    was = C is not None
    C = _built if enabled else None
    return was


use(os.environ.get("ERPOZ_NO_SPEEDUPS", "") in ("", "0"))
