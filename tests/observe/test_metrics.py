"""Prometheus metrics folded from real runs, served at GET /metrics by the app."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from erpoz import Context, Flow, step
from erpoz.engine import Decision
from erpoz.observe import MetricsCollector, step_label
from erpoz.server import ServerState, Tenants, create_app
from erpoz.store import Event, MemoryStore, Store

from .runs import QUESTION, engine, failing_flow, hub, support_flow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(state: ServerState, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://erpoz") as client:
        return await client.get("/metrics", headers=headers or {})


async def all_events(store: Store) -> list[Event]:
    events: list[Event] = []
    for info in await store.list_runs(limit=1000):
        events += await store.events(info.run_id)
    return events


class World:
    """A store with three runs (succeeded, failed, waiting) scraped through the app."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.state = ServerState(store=self.store, engine=engine(self.store))
        self.app_text = ""

    async def setup(self) -> None:
        eng = self.state.engine
        ok = await eng.run(support_flow(), {"question": QUESTION})
        assert ok.status == "succeeded", ok.error
        bad = await eng.run(failing_flow(), {"question": "hi"})
        assert bad.status == "failed"
        waiting = await eng.run(support_flow(review=True), {"question": QUESTION})
        assert waiting.status == "waiting"
        self.waiting = waiting.run_id


def test_metrics_after_real_runs_a_failure_and_a_review() -> None:
    async def main() -> tuple[Samples, Samples, Samples, str, list[Event], float]:
        world = World()
        first = await scrape(world.state)  # before any run: the collector listens from here
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/plain")
        await world.setup()
        response = await scrape(world.state)
        before = parse(response.text)
        await asyncio.sleep(0.05)
        again = parse((await scrape(world.state)).text)
        eng = world.state.engine
        done = await eng.resume(
            world.waiting, support_flow(review=True), decision=Decision("approve", reviewer="b")
        )
        assert done.status == "succeeded"
        after = parse((await scrape(world.state)).text)
        waited = next(
            e.ts for e in await world.store.events(world.waiting) if e.kind == "review_requested"
        )
        return before, again, after, response.text, await all_events(world.store), waited

    before, again, after, text, events, waited = asyncio.run(main())
    # runs by status
    assert value(before, "erpoz_runs_started_total", flow="support") == 2
    assert value(before, "erpoz_runs_started_total", flow="doomed") == 1
    assert value(before, "erpoz_runs_total", flow="support", status="succeeded") == 1
    assert value(before, "erpoz_runs_total", flow="support", status="waiting") == 1
    assert value(before, "erpoz_runs_total", flow="doomed", status="failed") == 1
    assert value(before, "erpoz_runs_current", status="waiting") == 1
    assert value(before, "erpoz_runs_current", status="running") == 0
    # the review queue, read from the store
    assert value(before, "erpoz_review_queue_depth") == 1
    assert 0 < value(before, "erpoz_review_oldest_age_seconds") < 30
    assert value(again, "erpoz_review_oldest_age_seconds") > value(
        before, "erpoz_review_oldest_age_seconds"
    )
    assert waited > 0
    # model calls, tokens and cost match the events, summed per model
    calls = [e.data for e in events if e.kind == "model_called"]
    for model in ("mini", "flaky", "broken", "vec"):
        mine = [c for c in calls if c["model"] == model]
        for status in {c["status"] for c in mine}:
            n = sum(1 for c in mine if c["status"] == status)
            assert value(after, "erpoz_model_calls_total", model=model, status=status) == n
    mini = [c for c in calls if c["model"] == "mini"]
    assert value(after, "erpoz_model_tokens_total", model="mini", type="input") == sum(
        c["input_tokens"] for c in mini
    )
    assert value(after, "erpoz_model_tokens_total", model="mini", type="output") == sum(
        c["output_tokens"] for c in mini
    )
    assert value(after, "erpoz_model_cost_usd_total", model="mini") == pytest.approx(
        sum(c["cost_usd"] for c in mini)
    )
    assert value(after, "erpoz_model_calls_total", model="broken", status="error") == 1
    assert value(after, "erpoz_model_latency_seconds_count", model="mini") == len(mini)
    # tools, guards
    assert value(after, "erpoz_tool_calls_total", tool="lookup", status="ok") == 2
    assert (
        value(
            after,
            "erpoz_guard_findings_total",
            checkpoint="model_input",
            data_class="pii.email",
            action="redact",
        )
        == 2
    )
    assert value(after, "erpoz_guard_decisions_total", checkpoint="model_input", action="redact")
    # steps: outcomes and the duration histogram
    assert value(after, "erpoz_steps_total", flow="support", step="settle", status="retried") == 2
    assert value(after, "erpoz_steps_total", flow="support", step="shout[*]", status="succeeded")
    assert value(after, "erpoz_steps_total", flow="doomed", step="doomed", status="failed") == 1
    assert value(after, "erpoz_steps_total", flow="support", step="approve", status="reviewed") == 1
    settle = {"flow": "support", "step": "settle"}
    assert value(after, "erpoz_step_duration_seconds_count", **settle) == 2
    assert value(after, "erpoz_step_duration_seconds_sum", **settle) >= 0.06  # 30 ms each
    assert value(after, "erpoz_step_duration_seconds_bucket", **settle, le="0.025") == 0
    assert value(after, "erpoz_step_duration_seconds_bucket", **settle, le="+Inf") == 2
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in after.items()
        if name == "erpoz_step_duration_seconds_bucket" and dict(labels)["step"] == "settle"
    )
    assert buckets[-1][0] == math.inf and len(buckets) == 17
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    # after the approval: the review is gone from the queue, the run counted as succeeded
    assert value(after, "erpoz_runs_total", flow="support", status="succeeded") == 2
    assert value(after, "erpoz_runs_current", status="waiting") == 0
    assert value(after, "erpoz_review_queue_depth") == 0
    assert value(after, "erpoz_review_oldest_age_seconds") == 0
    assert value(after, "erpoz_reviews_total", decision="approve") == 1
    # scraping again counts nothing twice
    assert {k: v for k, v in again.items() if "review_oldest" not in k[0]} == {
        k: v for k, v in before.items() if "review_oldest" not in k[0]
    }
    assert "# TYPE erpoz_step_duration_seconds histogram" in text
    assert "# HELP erpoz_model_cost_usd_total" in text


def test_a_restarted_server_counts_the_store_history() -> None:
    async def main() -> tuple[Samples, Samples]:
        world = World()
        await world.setup()
        live = parse((await scrape(world.state)).text)
        # a new server over the same store: a fresh engine and collector backfill from the log
        restarted = ServerState(store=world.store, engine=engine(world.store))
        return live, parse((await scrape(restarted)).text)

    live, restarted = asyncio.run(main())
    counters = {k: v for k, v in live.items() if "review_oldest" not in k[0]}
    assert counters == {k: v for k, v in restarted.items() if "review_oldest" not in k[0]}
    assert value(restarted, "erpoz_runs_total", flow="doomed", status="failed") == 1


def test_runs_of_another_process_are_read_when_seen_running_or_waiting() -> None:
    async def main() -> tuple[Samples, Samples]:
        store = MemoryStore()
        state = ServerState(store=store, engine=engine(store))
        await scrape(state)
        other = engine(store)  # not the server's engine: nothing tells the collector
        waiting = await other.run(support_flow(review=True), {"question": QUESTION})
        seen = parse((await scrape(state)).text)
        await other.resume(waiting.run_id, support_flow(review=True), decision=Decision("reject"))
        return seen, parse((await scrape(state)).text)

    seen, after = asyncio.run(main())
    assert value(seen, "erpoz_runs_total", flow="support", status="waiting") == 1
    assert value(seen, "erpoz_review_queue_depth") == 1
    assert value(after, "erpoz_runs_total", flow="support", status="failed") == 1
    assert value(after, "erpoz_reviews_total", decision="reject") == 1
    assert value(after, "erpoz_runs_started_total", flow="support") == 1


def test_label_values_are_escaped() -> None:
    weird = 'we"ird\\mo\ndel'

    async def main() -> str:
        store = MemoryStore()
        models = hub(extra=[(weird, "pro\\vider")])
        state = ServerState(store=store, engine=engine(store, models=models))

        @step
        async def ask(q: str, ctx: Context) -> str:
            return (await ctx.models.chat(weird, q)).text

        flow = Flow("odd", inputs={"q": str})
        flow.add(ask, q=flow.input("q"))
        assert (await state.engine.run(flow, {"q": "x"})).ok
        return (await scrape(state)).text

    text = asyncio.run(main())
    assert 'model="we\\"ird\\\\mo\\ndel"' in text  # \" \\ \n as the text format wants
    samples = parse(text)  # and it reads back as the original name
    assert value(samples, "erpoz_model_calls_total", model=weird, status="ok") == 1


def test_step_labels_fold_map_items_and_loop_iterations() -> None:
    assert step_label("shout[12]") == "shout[*]"
    assert step_label("revise#3") == "revise#*"
    assert step_label("clean/up[1]") == "clean/up[*]"
    assert step_label("a[2]/b#4") == "a[*]/b#*"
    assert step_label("answer") == "answer"


def test_collectors_have_registries_of_their_own() -> None:
    async def main() -> tuple[bytes, bytes]:
        one, two = MemoryStore(), MemoryStore()
        c1, c2 = MetricsCollector(one), MetricsCollector(two)
        eng = engine(one, [c1.listen])
        await eng.run(failing_flow(), {"question": "x"})
        return await c1.scrape(), await c2.scrape()

    first, second = asyncio.run(main())
    assert b'erpoz_runs_total{flow="doomed",status="failed"} 1.0' in first
    assert b"erpoz_runs_total{" not in second


KEY_OPS, KEY_ACME = "ops-key-0123456789", "acme-key-0123456789"


@pytest.mark.parametrize(
    ("allowed", "key", "status"),
    [
        (None, None, 401),
        (None, "wrong-key-0123456789", 403),
        (None, KEY_ACME, 200),
        (None, KEY_OPS, 200),
        ("ops", KEY_ACME, 403),
        ("ops, platform", KEY_OPS, 200),
    ],
)
def test_metrics_need_a_valid_key_when_keys_are_configured(
    monkeypatch: pytest.MonkeyPatch, allowed: str | None, key: str | None, status: int
) -> None:
    if allowed is None:
        monkeypatch.delenv("ERPOZ_METRICS_TENANTS", raising=False)
    else:
        monkeypatch.setenv("ERPOZ_METRICS_TENANTS", allowed)

    async def main() -> httpx.Response:
        store = MemoryStore()
        state = ServerState(
            store=store,
            engine=engine(store),
            tenants=Tenants({KEY_OPS: "ops", KEY_ACME: "acme"}),
        )
        headers: dict[str, Any] = {} if key is None else {"authorization": f"Bearer {key}"}
        return await scrape(state, headers)

    response = asyncio.run(main())
    assert response.status_code == status, response.text
    if status == 200:
        assert "erpoz_review_queue_depth 0.0" in response.text
    else:
        assert "erpoz_" not in response.text


def test_the_backfill_runs_when_the_app_starts() -> None:
    from fastapi.testclient import TestClient

    from erpoz.server.metrics import collector_of

    world = World()
    asyncio.run(world.setup())
    state = ServerState(store=world.store, engine=engine(world.store))
    app = create_app(state)
    collector = collector_of(state)  # the one the app's router attached
    assert collector.value("erpoz_runs_started", flow="support") == 0
    with TestClient(app) as client:
        assert collector.value("erpoz_runs_started", flow="support") == 2  # before any scrape
        assert collector.value("erpoz_review_queue_depth") == 1
        text = client.get("/metrics").text
    assert 'erpoz_runs_total{flow="doomed",status="failed"} 1.0' in text


def test_queued_runs_show_as_queue_depth_until_a_worker_takes_them() -> None:
    from pathlib import Path

    from erpoz.engine import Worker
    from erpoz.flow._load import load_flow

    chain = load_flow(f"{Path(__file__).parents[1] / 'engine' / 'queue_flows.py'}:chain5")

    async def main() -> tuple[Samples, Samples]:
        store = MemoryStore()
        state = ServerState(store=store, engine=engine(store))
        for i in range(3):
            await state.engine.submit(chain, {"x": i}, queue="batch" if i else "default")
        queued = parse((await scrape(state)).text)
        await Worker(engine(store), queues=["batch", "default"], burst=True, poll_s=0.01).run()
        return queued, parse((await scrape(state)).text)

    queued, drained = asyncio.run(main())
    assert value(queued, "erpoz_runs_current", status="queued") == 3
    assert value(queued, "erpoz_run_queue_depth", queue="batch") == 2
    assert value(queued, "erpoz_run_queue_depth", queue="default") == 1
    assert value(queued, "erpoz_run_queue_oldest_age_seconds", queue="batch") > 0
    assert value(drained, "erpoz_runs_current", status="queued") == 0
    assert ("erpoz_run_queue_depth", frozenset({("queue", "batch")})) not in drained
    assert value(drained, "erpoz_runs_total", flow="chain5", status="succeeded") == 3
