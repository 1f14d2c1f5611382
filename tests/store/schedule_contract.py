"""The contract of stores that keep schedules (:class:`erpoz.store.ScheduleBook`): what firing
each tick once, across processes, relies on. SQLite, PostgreSQL and memory pass it."""

import asyncio
import os
import time
from dataclasses import replace
from typing import Any

import pytest

from erpoz.store import ScheduleRow, Store, TickClaim

OWNER = f"contract-host:{os.getpid()}:sched-a"
OTHER = f"contract-host:{os.getpid()}:sched-b"


def row(name: str = "nightly", **kw: Any) -> ScheduleRow:
    now = time.time()
    base = ScheduleRow(
        name=name,
        flow="flows.py:nightly",
        cron="0 2 * * *",
        timezone="UTC",
        inputs='{"x": 1}',
        queue="default",
        catchup="latest",
        paused=False,
        origin="cli",
        created=now,
        updated=now,
        next_tick=1_000_000.0,
    )
    return replace(base, **kw)


def claim(expect: float, nxt: float, tick: float | None, owner: str = OWNER, **kw: Any) -> Any:
    kw.setdefault("lease_until", time.time() + 30)
    run_id = f"s-nightly-{int(tick)}" if tick is not None else None
    return TickClaim("nightly", expect, nxt, owner, tick=tick, run_id=run_id, **kw)


class ScheduleContract:
    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    def test_put_list_and_delete(self, store: Any) -> None:
        async def main() -> None:
            stored = await store.put_schedule(row())
            await store.put_schedule(row("hourly", cron="0 * * * *"))
            assert [r.name for r in await store.list_schedules()] == ["hourly", "nightly"]
            assert await store.list_schedules(["nightly"]) == [stored]
            assert await store.delete_schedule("hourly") is True
            assert await store.delete_schedule("hourly") is False
            assert [r.name for r in await store.list_schedules()] == ["nightly"]

        asyncio.run(main())

    def test_a_put_keeps_where_a_schedule_stands_unless_its_timing_changed(
        self, store: Any
    ) -> None:
        async def main() -> None:
            await store.put_schedule(row())
            assert await store.claim_tick(claim(1_000_000.0, 1_086_400.0, 1_000_000.0))
            again = await store.put_schedule(row(next_tick=2_000_000.0))  # the same definition
            assert again.next_tick == 1_086_400.0 and again.fired == 1
            inputs = await store.put_schedule(row(inputs='{"x": 2}', next_tick=2_000_000.0))
            assert inputs.next_tick == 1_086_400.0 and inputs.inputs == '{"x": 2}'
            assert inputs.fired == 1
            timing = await store.put_schedule(row(cron="0 3 * * *", next_tick=2_000_000.0))
            assert timing.next_tick == 2_000_000.0 and timing.fired == 1

        asyncio.run(main())

    def test_one_claim_of_a_tick_wins(self, store: Any) -> None:
        async def main() -> None:
            await store.put_schedule(row())
            results = await asyncio.gather(
                *(
                    store.claim_tick(claim(1_000_000.0, 1_086_400.0, 1_000_000.0, owner=o))
                    for o in (OWNER, OTHER, OWNER, OTHER)
                )
            )
            assert sorted(results) == [False, False, False, True]
            (ticks,) = [await store.schedule_ticks("nightly")]
            assert len(ticks) == 1 and ticks[0].state == "claimed"
            assert ticks[0].run_id == "s-nightly-1000000" and ticks[0].tick == 1_000_000.0
            (r,) = await store.list_schedules(["nightly"])
            assert (r.next_tick, r.fired, r.skipped) == (1_086_400.0, 1, 0)
            # a claim that read the old next tick loses; one that skips counts what it skipped
            assert not await store.claim_tick(claim(1_000_000.0, 1_172_800.0, 1_086_400.0))
            assert await store.claim_tick(claim(1_086_400.0, 1_259_200.0, None, skipped=2))
            (r,) = await store.list_schedules(["nightly"])
            assert (r.next_tick, r.fired, r.skipped) == (1_259_200.0, 1, 2)

        asyncio.run(main())

    def test_a_paused_schedule_is_not_claimed_and_resumes_where_told(self, store: Any) -> None:
        async def main() -> None:
            await store.put_schedule(row())
            assert await store.pause_schedule("nightly", True, None)
            assert not await store.claim_tick(claim(1_000_000.0, 1_086_400.0, 1_000_000.0))
            assert await store.pause_schedule("nightly", False, 5_000_000.0)
            (r,) = await store.list_schedules(["nightly"])
            assert (r.paused, r.next_tick) == (False, 5_000_000.0)
            assert not await store.pause_schedule("nope", True, None)

        asyncio.run(main())

    def test_a_tick_whose_claimer_is_gone_is_taken_over_once(self, store: Any) -> None:
        async def main() -> None:
            await store.put_schedule(row())
            lapsed = claim(1_000_000.0, 1_086_400.0, 1_000_000.0, lease_until=time.time() - 1)
            assert await store.claim_tick(lapsed)
            await store.put_schedule(row("other"))
            live = replace(claim(1_000_000.0, 1_086_400.0, 1_000_000.0), schedule="other")
            assert await store.claim_tick(replace(live, run_id="s-other-1000000"))
            taken = await store.reclaim_tick(OTHER, 30.0)  # the lapsed one, not the live one
            assert taken is not None and taken.owner == OTHER and taken.claims == 2
            assert taken.run_id == "s-nightly-1000000"
            assert await store.reclaim_tick(OWNER, 30.0) is None  # OTHER holds it now
            assert not await store.finish_tick("nightly", 1_000_000.0, OWNER)  # not OWNER's
            assert await store.finish_tick("nightly", 1_000_000.0, OTHER)
            assert not await store.finish_tick("nightly", 1_000_000.0, OTHER)  # once
            (t,) = await store.schedule_ticks("nightly")
            assert (t.state, t.owner, t.error) == ("fired", OTHER, None)

        asyncio.run(main())

    def test_a_failed_tick_keeps_its_error(self, store: Any) -> None:
        async def main() -> None:
            await store.put_schedule(row())
            assert await store.claim_tick(claim(1_000_000.0, 1_086_400.0, 1_000_000.0))
            assert await store.finish_tick("nightly", 1_000_000.0, OWNER, "no such flow")
            (t,) = await store.schedule_ticks()
            assert (t.state, t.error) == ("failed", "no such flow")

        asyncio.run(main())

    def test_a_tick_claimed_before_is_not_claimed_again(self, store: Any) -> None:
        async def main() -> None:
            await store.put_schedule(row())
            assert await store.claim_tick(claim(1_000_000.0, 1_086_400.0, 1_000_000.0))
            # moved back before it (its timing changed, then changed back): it moves on, but
            # the tick fired once stays fired once
            await store.pause_schedule("nightly", False, 1_000_000.0)
            assert not await store.claim_tick(claim(1_000_000.0, 1_086_400.0, 1_000_000.0))
            (r,) = await store.list_schedules(["nightly"])
            assert r.next_tick == 1_086_400.0
            assert len(await store.schedule_ticks("nightly")) == 1

        asyncio.run(main())


class RateContract:
    """Stores that keep rate limits (:class:`erpoz.store.RateLimits`): at most ``limit`` units
    in any window, across every caller."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    def test_grants_stop_at_the_limit_and_say_when_to_come_back(self, store: Any) -> None:
        async def main() -> None:
            grants = [await store.take_rate("k", 3, 60.0) for _ in range(4)]
            assert [g.granted for g in grants] == [True, True, True, False]
            assert [g.in_window for g in grants] == [0, 1, 2, 3]
            assert 59.0 < grants[3].wait_s <= 60.0 and not grants[3].grant_id
            assert (await store.take_rate("other", 3, 60.0)).granted  # keys are apart
            too_big = await store.take_rate("t", 100, 60.0, 101)
            assert not too_big.granted and too_big.wait_s == float("inf")
            assert len(await store.rate_grants("k")) == 3

        asyncio.run(main())

    def test_a_settled_grant_counts_what_was_used(self, store: Any) -> None:
        async def main() -> None:
            first = await store.take_rate("tokens", 1000, 60.0, 800)  # an estimate
            assert first.granted
            assert not (await store.take_rate("tokens", 1000, 60.0, 300)).granted
            await store.settle_rate(first.grant_id, 500)  # it used 500
            assert (await store.take_rate("tokens", 1000, 60.0, 300)).granted
            assert [a for _, a in await store.rate_grants("tokens")] == [500, 300]

        asyncio.run(main())

    def test_the_window_slides(self, store: Any) -> None:
        async def main() -> None:
            assert (await store.take_rate("k", 2, 0.2)).granted
            assert (await store.take_rate("k", 2, 0.2)).granted
            refused = await store.take_rate("k", 2, 0.2)
            assert not refused.granted and 0 < refused.wait_s <= 0.2
            await asyncio.sleep(refused.wait_s + 0.01)
            assert (await store.take_rate("k", 2, 0.2)).granted

        asyncio.run(main())

    def test_concurrent_takes_never_pass_the_limit(self, store: Any) -> None:
        async def main() -> None:
            grants = await asyncio.gather(*(store.take_rate("k", 5, 60.0) for _ in range(20)))
            assert sum(g.granted for g in grants) == 5

        asyncio.run(main())

    def test_a_held_grant_counts_until_settled_and_its_window_runs_from_then(
        self, store: Any
    ) -> None:
        async def main() -> None:
            held = await store.take_rate("m", 1, 0.2, hold_s=60.0)
            assert held.granted
            await asyncio.sleep(0.3)  # a window after the grant: still held (not settled)
            assert not (await store.take_rate("m", 1, 0.2)).granted
            await store.settle_rate(held.grant_id, 1)
            refused = await store.take_rate("m", 1, 0.2)  # the window runs from the settle
            assert not refused.granted and 0 < refused.wait_s <= 0.2
            await asyncio.sleep(refused.wait_s + 0.01)
            assert (await store.take_rate("m", 1, 0.2)).granted

        asyncio.run(main())


class SlotContract:
    """Stores that keep concurrency slots (:class:`erpoz.store.ConcurrencySlots`)."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    def test_at_most_limit_slots_and_a_released_one_is_free(self, store: Any) -> None:
        async def main() -> None:
            got = [await store.acquire_slot("q", 2, f"run-{i}", 30.0) for i in range(3)]
            assert got == [True, True, False] and await store.slots_in_use("q") == 2
            assert await store.acquire_slot("other", 1, "run-9", 30.0)  # keys are apart
            await store.release_slot("q", "run-0")
            assert await store.acquire_slot("q", 2, "run-2", 30.0)

        asyncio.run(main())

    def test_a_lapsed_slot_comes_free_unless_renewed(self, store: Any) -> None:
        async def main() -> None:
            assert await store.acquire_slot("q", 1, "a", 0.2)
            await asyncio.sleep(0.1)
            await store.renew_slots(0.2)  # the holder is alive: renewed
            await asyncio.sleep(0.15)
            assert not await store.acquire_slot("q", 1, "b", 0.2)
            await asyncio.sleep(0.25)  # not renewed: lapsed
            assert await store.acquire_slot("q", 1, "b", 30.0)

        asyncio.run(main())

    def test_concurrent_acquires_never_pass_the_limit(self, store: Any) -> None:
        async def main() -> None:
            got = await asyncio.gather(
                *(store.acquire_slot("q", 3, f"r{i}", 30.0) for i in range(10))
            )
            assert sum(got) == 3

        asyncio.run(main())
