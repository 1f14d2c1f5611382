"""Limits for workers, shared by every worker of the store: at most N runs started per window
(the store's rate limits) and at most M runs in flight (its concurrency slots), per queue and
over all queues (``*``).

A worker with limits takes, before each claim, one grant of each rate limit and one slot of
each concurrency limit that applies (all queues', then the queue's); a claim that finds
nothing gives them back, and a run's slots are released when the worker is done with it. So
across every worker, a queue never starts more than its rate in any window nor has more than
its concurrency in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError, StoreError
from ..store import Claim, ConcurrencySlots, RateGrant, RateLimits, RunQueue

SLOT_TTL_S = 30.0
"""A slot's lease; the worker renews its slots every third of it."""
FULL_POLL_S = 0.1
"""How soon a worker looks again when a concurrency limit is full."""

ALL = "*"
_RATE = re.compile(r"^([^=\s]+)=(\d+)/(\d+(?:\.\d+)?)s?$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``runs`` per ``per_s`` seconds."""

    runs: int
    per_s: float = 1.0


@dataclass(slots=True)
class RunLimits:
    """Runs started per window: ``queues`` by queue name (``*``: all of a worker's queues
    together)."""

    queues: Mapping[str, Rate] = field(default_factory=dict)
    running: Mapping[str, int] = field(default_factory=dict)
    """At most this many runs of a queue in flight (``*``: of all queues together)."""
    wait_s: float = 0.0
    """How long until the limit that stopped the last claim has room (0: none stopped it)."""
    _held: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _renewer: asyncio.Task[None] | None = None

    @classmethod
    def parse(cls, specs: Sequence[str], running: Sequence[str] = ()) -> RunLimits:
        """``QUEUE=N/S`` (N runs per S seconds; ``*`` for all queues), e.g. ``default=5/1``."""
        out: dict[str, Rate] = {}
        for spec in specs:
            m = _RATE.match(spec.strip())
            if not m or int(m.group(2)) < 1 or float(m.group(3)) <= 0:
                raise ConfigError(
                    f"--rate {spec!r}: write QUEUE=N/S (N runs per S seconds), e.g. default=5/1 "
                    "or '*=20/1' for all queues"
                )
            out[m.group(1)] = Rate(int(m.group(2)), float(m.group(3)))
        most: dict[str, int] = {}
        for spec in running:
            queue, _, n = spec.strip().partition("=")
            if not queue or not n.isdigit() or int(n) < 1:
                raise ConfigError(
                    f"--max-running {spec!r}: write QUEUE=N (at most N runs in flight), e.g. "
                    "default=4 or '*=16' for all queues"
                )
            most[queue] = int(n)
        return cls(out, most)

    def _applying(self, queue: str) -> list[tuple[str, Rate]]:
        return [
            (f"runs:{q}", rate) for q in (ALL, queue) if (rate := self.queues.get(q)) is not None
        ]

    async def claim(self, store: RunQueue, owner: str, queues: Sequence[str]) -> Claim | None:
        """The oldest claimable run of the first queue (in order) whose limits have room."""
        if not isinstance(store, RateLimits) or not isinstance(store, ConcurrencySlots):
            raise StoreError(f"the store {getattr(store, 'url', '?')} keeps no limits")
        self.wait_s = 0.0
        for queue in queues:
            slots = await self._slots(store, queue)
            if slots is None:
                continue
            grants = await self._take(store, queue)
            claim = await store.claim_next(owner, [queue]) if grants is not None else None
            if claim is not None:
                self._held[claim.info.run_id] = slots
                self._keep_renewing(store)
                return claim
            for g in grants or ():  # nothing to start: the room stays for the next claim
                await store.settle_rate(g.grant_id, 0)
            for key, holder in slots:
                await store.release_slot(key, holder)
        return None

    async def _slots(self, store: ConcurrencySlots, queue: str) -> list[tuple[str, str]] | None:
        taken: list[tuple[str, str]] = []
        holder = uuid.uuid4().hex
        for q in (ALL, queue):
            most = self.running.get(q)
            if most is None:
                continue
            if not await store.acquire_slot(f"running:{q}", most, holder, SLOT_TTL_S):
                for key, h in taken:
                    await store.release_slot(key, h)
                self.wait_s = FULL_POLL_S if not self.wait_s else min(self.wait_s, FULL_POLL_S)
                return None
            taken.append((f"running:{q}", holder))
        return taken

    async def finished(self, store: RunQueue, run_id: str) -> None:
        """The worker is done with ``run_id`` (ended, paused, handed back): free its slots."""
        held = self._held.pop(run_id, [])
        if held and isinstance(store, ConcurrencySlots):
            for key, holder in held:
                with contextlib.suppress(StoreError):
                    await store.release_slot(key, holder)

    def _keep_renewing(self, store: ConcurrencySlots) -> None:
        if self._renewer is not None and not self._renewer.done():
            return

        async def renew() -> None:
            while self._held:
                await asyncio.sleep(SLOT_TTL_S / 3)
                with contextlib.suppress(StoreError):
                    await store.renew_slots(SLOT_TTL_S)

        self._renewer = asyncio.get_running_loop().create_task(renew())

    async def _take(self, book: RateLimits, queue: str) -> list[RateGrant] | None:
        taken: list[RateGrant] = []
        for key, rate in self._applying(queue):
            g = await book.take_rate(key, rate.runs, rate.per_s)
            if not g.granted:
                for t in taken:
                    await book.settle_rate(t.grant_id, 0)
                self.wait_s = g.wait_s if not self.wait_s else min(self.wait_s, g.wait_s)
                return None
            taken.append(g)
        return taken

    def next_look(self, poll_s: float) -> float:
        """How long an idle worker waits before claiming again: sooner when a limit frees."""
        return min(poll_s, self.wait_s + 0.001) if self.wait_s else poll_s
