"""Workers: processes that take runs from the queues of a shared store and drive them.

Any number of workers, on any number of machines, share one store (PostgreSQL; a SQLite file
for workers on one machine). Each claims the oldest claimable run of its queues — queued, or
left by an owner that handed it back or died — drives it from its log with
:meth:`Engine.run_claimed`, and keeps at most ``concurrency`` runs in flight. The guarantees
come from the store, not from the workers' good behaviour: a claim is a lease renewed by a
heartbeat; a run whose lease lapsed is taken by another worker; two workers can never record
the same step of a run as succeeded (a unique constraint), so a step may run twice
(at-least-once) but is recorded once.

:meth:`Worker.stop` (SIGTERM, Ctrl-C) stops claiming; runs in flight get ``grace_s`` seconds
to finish, then are handed back: their recorded steps stay, and another worker goes on from
there at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from ..store import Claim
from ..store import kinds as ev
from ._engine import Engine, RunResult, check_queue_name
from ._limits import RunLimits

log = logging.getLogger("erpoz.worker")

#: A run taken this many times without finishing is failed: it probably kills its workers.
DEFAULT_MAX_CLAIMS = 5


@dataclass(slots=True)
class WorkerStats:
    """What a worker did: runs by how they ended, and how long each claim took."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    waiting: int = 0
    cancelled: int = 0
    handed_back: int = 0
    lost: int = 0
    abandoned: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    cpu_started: float = field(default_factory=time.process_time)
    claim_s: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))

    def counts(self) -> dict[str, Any]:
        """How many runs ended how, so far (cheap: a live view redraws from this)."""
        return {
            "claimed": self.claimed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "waiting": self.waiting,
            "cancelled": self.cancelled,
            "handed_back": self.handed_back,
            "lost": self.lost,
            "abandoned": self.abandoned,
            "errors": self.errors,
            "seconds": round(time.monotonic() - self.started, 3),
            "cpu_seconds": round(time.process_time() - self.cpu_started, 3),
        }

    def to_json(self) -> dict[str, Any]:
        """The counts and the claim latency's p50 / p99 (sorts every claim: once, at the end)."""
        lat = sorted(self.claim_s)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else None

        return {**self.counts(), "claim_ms_p50": pct(0.5), "claim_ms_p99": pct(0.99)}


class Worker:
    """Drives runs of ``queues`` from ``engine``'s store, ``concurrency`` at a time.

    ``burst`` ends :meth:`run` once nothing is claimable and nothing is in flight (drain and
    exit); otherwise it runs until :meth:`stop`. ``poll_s`` bounds how long an idle worker
    waits before looking again (PostgreSQL wakes it at once with ``NOTIFY`` on a submission).
    ``on_result`` sees every run that ended or paused here. ``limits`` caps the runs started
    per window, per queue, across every worker of the store (:class:`RunLimits`).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 4,
        poll_s: float = 1.0,
        max_claims: int = DEFAULT_MAX_CLAIMS,
        burst: bool = False,
        on_result: Callable[[RunResult], None] | None = None,
        limits: RunLimits | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not queues:
            raise ValueError("a worker needs at least one queue")
        for q in queues:
            check_queue_name(q)
        self.engine = engine
        self.queues = list(queues)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.max_claims = max_claims
        self.burst = burst
        self.on_result = on_result
        self.limits = limits  # runs started per window, shared by every worker of the store
        self.stats = WorkerStats()
        self._stop: asyncio.Event | None = None
        self._grace_s: float | None = 30.0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def stop(self, grace_s: float | None = 30.0) -> None:
        """Stop claiming; runs in flight get ``grace_s`` seconds to finish (``None``: as long
        as they take, ``0``: none), then are handed back for another worker."""
        self._grace_s = grace_s
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> WorkerStats:
        """Claim and drive runs until stopped (or, with ``burst``, until none is left)."""
        store = self.engine._queue()
        self._stop = stop = asyncio.Event()
        owner = self.engine.owner
        backoff = 0.1
        while not stop.is_set():
            claimed = False
            while len(self._tasks) < self.concurrency and not stop.is_set():
                t0 = time.perf_counter()
                try:
                    claim = await (
                        store.claim_next(owner, self.queues)
                        if self.limits is None
                        else self.limits.claim(store, owner, self.queues)
                    )
                except StoreError as exc:
                    self.stats.errors += 1
                    log.warning("cannot claim a run (trying again in %.1f s): %s", backoff, exc)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    break
                backoff = 0.1
                self.stats.claim_s.append(time.perf_counter() - t0)
                if claim is None:
                    break
                claimed = True
                task = asyncio.get_running_loop().create_task(self._driven(store, claim))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            limited = self.limits is not None and self.limits.wait_s > 0
            if self.burst and not claimed and not self._tasks and not limited:
                break
            await self._wait(store)
        await self._wind_down()
        return self.stats

    async def _wait(self, store: Any) -> None:
        """Until a slot frees (all taken), work may have arrived (some free), or stop."""
        assert self._stop is not None
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._stop.wait())}
        if len(self._tasks) >= self.concurrency:
            waiters |= set(self._tasks)
        else:
            poll = self.poll_s if self.limits is None else self.limits.next_look(self.poll_s)
            waiters.add(asyncio.ensure_future(store.wait_for_runs(self.queues, poll)))
            if self.burst and self._tasks:
                waiters |= set(self._tasks)
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            if w not in self._tasks:
                w.cancel()

    async def _pause(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _wind_down(self) -> None:
        """Let runs in flight finish within the grace period, then hand the rest back."""
        tasks = set(self._tasks)
        if not tasks:
            return
        grace = self._grace_s
        if grace is None or grace > 0:
            _, pending = await asyncio.wait(tasks, timeout=grace)
        else:
            pending = tasks
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _driven(self, store: Any, claim: Claim) -> None:
        try:
            await self._drive(claim)
        finally:
            if self.limits is not None:  # its concurrency slots come free
                await self.limits.finished(store, claim.info.run_id)

    async def _drive(self, claim: Claim) -> None:
        stats = self.stats
        stats.claimed += 1
        info = claim.info
        if info.claims > self.max_claims:
            claim.writer.append(
                ev.RUN_FAILED,
                data={
                    "error": f"abandoned: taken by workers {info.claims - 1} times without "
                    f"finishing (the limit is {self.max_claims}); a step may be killing its "
                    "worker (out of memory?)",
                    "claims": info.claims,
                },
            )
            with contextlib.suppress(StoreError):
                await claim.writer.release()
            stats.abandoned += 1
            log.error("run %s abandoned after %d claims", info.run_id, info.claims - 1)
            return
        try:
            result = await self.engine.run_claimed(claim)
        except asyncio.CancelledError:
            stats.handed_back += 1  # the engine released it: recorded steps stay
            log.info("run %s handed back", info.run_id)
            raise
        except StoreError as exc:
            stats.lost += 1
            log.warning("run %s left to another process: %s", info.run_id, exc)
            return
        except Exception:
            stats.errors += 1
            log.exception("run %s: unexpected error; it is handed back", info.run_id)
            with contextlib.suppress(StoreError):
                await claim.writer.release()
            return
        status = result.status
        if status == "succeeded":
            stats.succeeded += 1
        elif status == "failed":
            stats.failed += 1
        elif status == "waiting":
            stats.waiting += 1
        elif status == "cancelled":
            stats.cancelled += 1
        if self.on_result is not None:
            self.on_result(result)
