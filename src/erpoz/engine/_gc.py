"""The cyclic GC while an engine drives many runs at once.

Every run in flight holds a few dozen container objects (its coroutines, task, scope, log),
and CPython's cyclic GC walks them again at each collection of the generation they sit in:
with 10,000 runs in flight that walk was half the CPU of running them, for no garbage (a
finished run's objects are freed by reference counting). While at least ``MANY`` runs are in
flight in this process, the young generation's threshold is raised to ``YOUNG`` allocations,
so that collections come about 30 times less often; when the count falls back under ``MANY``,
the threshold the process had is put back (unless someone changed it meanwhile: theirs stays).
``ERPOZ_GC_TUNING=0`` leaves the GC alone.
"""

from __future__ import annotations

import gc
import os

MANY = 1000
"""Runs in flight (in this process, over every engine) from which the GC is held back."""
YOUNG = 20_000
"""The young generation's threshold meanwhile (CPython's default: 700)."""


class _InFlight:
    __slots__ = ("enabled", "n", "saved", "set_to")

    def __init__(self) -> None:
        self.n = 0
        self.saved: tuple[int, ...] | None = None
        self.set_to: tuple[int, ...] | None = None
        self.enabled = os.environ.get("ERPOZ_GC_TUNING", "1") != "0"

    def enter(self) -> None:
        self.n += 1
        if self.n == MANY and self.enabled and self.saved is None:
            now = gc.get_threshold()
            if now[0] and now[0] < YOUNG:  # 0: the process disabled collections itself
                self.saved = now
                self.set_to = (YOUNG, *now[1:])
                gc.set_threshold(*self.set_to)

    def leave(self) -> None:
        self.n -= 1
        if self.n < MANY and self.saved is not None:
            if gc.get_threshold() == self.set_to:
                gc.set_threshold(*self.saved)
            self.saved = self.set_to = None


IN_FLIGHT = _InFlight()
"""Runs being driven in this process (``Engine.run`` and the other drivers count here)."""
