"""Run-start limits for workers: at most N runs started per window, per queue and over all
queues, shared by every worker of the store (the store's rate limits, :mod:`erpoz.store`).

A worker with limits takes, before each claim, one grant of each limit that applies (all
queues', then the queue's); a claim that finds nothing gives its grants back. So across every
worker, a queue never starts more than its limit in any window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError, StoreError
from ..store import Claim, RateGrant, RateLimits, RunQueue

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
    wait_s: float = 0.0
    """How long until the limit that stopped the last claim has room (0: none stopped it)."""

    @classmethod
    def parse(cls, specs: Sequence[str]) -> RunLimits:
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
        return cls(out)

    def _applying(self, queue: str) -> list[tuple[str, Rate]]:
        return [
            (f"runs:{q}", rate) for q in (ALL, queue) if (rate := self.queues.get(q)) is not None
        ]

    async def claim(self, store: RunQueue, owner: str, queues: Sequence[str]) -> Claim | None:
        """The oldest claimable run of the first queue (in order) whose limits have room."""
        if not isinstance(store, RateLimits):
            raise StoreError(f"the store {getattr(store, 'url', '?')} keeps no rate limits")
        self.wait_s = 0.0
        for queue in queues:
            grants = await self._take(store, queue)
            if grants is None:
                continue
            claim = await store.claim_next(owner, [queue])
            if claim is not None:
                return claim
            for g in grants:  # nothing to start: the room stays for the next claim
                await store.settle_rate(g.grant_id, 0)
        return None

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
