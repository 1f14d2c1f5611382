"""OpenTelemetry spans derived from real runs' event logs: tree shape, GenAI attributes, timing,
deterministic ids, SDK export, live export as runs end, and OTLP/HTTP on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from typer.testing import CliRunner

from erpoz.cli.trace import trace
from erpoz.engine import Decision
from erpoz.observe import (
    RunTraceExporter,
    SpanData,
    export_run,
    otlp_endpoint,
    otlp_exporter,
    span_id_of,
    spans_of,
    trace_id_of,
)
from erpoz.store import Event, MemoryStore, open_store

from .runs import QUESTION, engine, failing_flow, support_flow


def by_name(spans: list[SpanData], name: str) -> list[SpanData]:
    return [s for s in spans if s.name == name]


def one(spans: list[SpanData], name: str) -> SpanData:
    found = by_name(spans, name)
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


async def _reviewed_run() -> tuple[MemoryStore, str, list[Event]]:
    store = MemoryStore()
    eng = engine(store)
    flow = support_flow(review=True)
    first = await eng.run(flow, {"question": QUESTION})
    assert first.status == "waiting", first.error
    done = await eng.resume(first.run_id, flow, decision=Decision("approve", reviewer="bob"))
    assert done.status == "succeeded", done.error
    return store, done.run_id, await store.events(done.run_id)


@pytest.fixture(scope="module")
def reviewed() -> tuple[str, list[Event]]:
    _store, run_id, events = asyncio.run(_reviewed_run())
    return run_id, events


def test_span_tree_has_a_span_per_run_step_attempt_model_and_tool_call(
    reviewed: tuple[str, list[Event]],
) -> None:
    _run_id, events = reviewed
    spans = spans_of(events)
    ids = {s.span_id: s for s in spans}
    assert len(ids) == len(spans)  # unique ids
    root = one(spans, "invoke_workflow support")
    assert root.parent_id is None and not root.open
    assert all(s.trace_id == root.trace_id for s in spans)
    parent = {s.name + "|" + s.key: ids[s.parent_id].name for s in spans if s.parent_id}

    def parent_of(name: str) -> set[str]:
        return {ids[s.parent_id].name for s in by_name(spans, name) if s.parent_id}

    for step in ("answer", "split", "shout", "settle", "approve"):
        assert parent_of(f"step {step}") == {"invoke_workflow support"}
    for i in range(3):  # map items under their map step, each with its guard and model call
        assert parent_of(f"step shout[{i}]") == {"step shout"}
    assert parent_of("chat mini") == {"step answer", "step shout[0]", "step shout[1]"} | {
        "step shout[2]"
    }
    assert parent_of("execute_tool lookup") == {"step answer"}
    assert parent_of("embeddings vec") == {"step answer"}
    assert parent_of("chat flaky") == {"step answer"}
    assert parent_of("guard model_input") == {"step answer"} | {
        f"step shout[{i}]" for i in range(3)
    }
    assert parent_of("review approve") == {"step approve"}
    assert parent  # every non-root span has a parent in the trace
    # the retried step: two attempts, the first an error
    attempts = sorted(by_name(spans, "step settle"), key=lambda s: s.start)
    assert [s.attributes["erpoz.step.attempt"] for s in attempts] == [1, 2]
    assert attempts[0].status == "error" and attempts[0].attributes["erpoz.step.outcome"] == (
        "retried"
    )
    assert attempts[0].attributes["error.type"] == "ConnectionError"
    assert attempts[0].events[0].name == "exception"
    assert attempts[1].status == "unset"
    # the other events of a step are span events on it
    answer = one(spans, "step answer")
    assert {e.name for e in answer.events} == {"policy_decided", "route_decided"}
    assert not any(s.open for s in spans)


def test_model_and_tool_spans_carry_genai_and_erpoz_attributes(
    reviewed: tuple[str, list[Event]],
) -> None:
    run_id, events = reviewed
    spans = spans_of(events)
    calls = [e for e in events if e.kind == "model_called" and e.step == "answer"]
    answered = next(e.data for e in calls if e.data["model"] == "mini")
    mini = next(s for s in by_name(spans, "chat mini") if s.attributes["erpoz.step"] == "answer")
    a = mini.attributes
    assert mini.kind == "client" and mini.status == "unset"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "mini" and a["gen_ai.response.model"] == "mini"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "function"
    assert a["gen_ai.usage.input_tokens"] == answered["input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == answered["output_tokens"] > 0
    assert a["erpoz.cost_usd"] == answered["cost_usd"] > 0
    assert a["erpoz.run.id"] == run_id
    assert a["erpoz.route"] == ["fb"] and a["erpoz.route.chosen"] is True
    flaky = one(spans, "chat flaky")
    assert flaky.status == "error" and flaky.status_message == "ModelError: down"
    assert flaky.attributes["error.type"] == "ModelError"
    assert flaky.attributes["erpoz.route"] == ["fb"] and flaky.attributes["erpoz.route.chosen"] is (
        False
    )
    embed = one(spans, "embeddings vec")
    assert embed.attributes["gen_ai.operation.name"] == "embeddings"
    assert embed.attributes["gen_ai.usage.input_tokens"] == 1
    tool = one(spans, "execute_tool lookup")
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert tool.attributes["erpoz.tool.status"] == "ok"
    assert not any("arguments" in k or "1042" in str(v) for k, v in tool.attributes.items())
    guard = next(
        s for s in by_name(spans, "guard model_input") if s.attributes["erpoz.step"] == "answer"
    )
    assert guard.attributes["erpoz.guard.action"] == "redact"
    assert guard.attributes["erpoz.guard.rule"] == "mask e-mail for models"
    assert guard.attributes["erpoz.guard.data_classes"] == ["pii.email"]
    assert all("ana@example.com" not in json.dumps(s.to_json()) for s in spans)
    review = one(spans, "review approve")
    assert review.attributes["erpoz.review.decision"] == "approve"
    assert review.attributes["erpoz.review.reviewer"] == "bob"
    root = one(spans, "invoke_workflow support")
    r = root.attributes
    assert r["gen_ai.operation.name"] == "invoke_workflow" and r["gen_ai.workflow.name"] == (
        "support"
    )
    assert r["erpoz.run.status"] == "succeeded" and r["erpoz.flow"] == "support"
    costs = [float(e.data.get("cost_usd") or 0) for e in events if e.kind == "model_called"]
    assert r["erpoz.cost_usd"] == pytest.approx(sum(costs))
    assert r["erpoz.model_calls"] == len(costs) == 6
    assert {e.name for e in root.events} == {"run_waiting", "run_resumed"}


def test_times_come_from_the_events_and_children_sit_inside_their_parents(
    reviewed: tuple[str, list[Event]],
) -> None:
    _run_id, events = reviewed
    spans = spans_of(events)
    ids = {s.span_id: s for s in spans}
    assert spans[0].start == events[0].ts and spans[0].end == events[-1].ts
    for s in spans:
        assert s.start <= s.end
        if s.parent_id is not None:
            assert s.start >= ids[s.parent_id].start
    for e in events:
        if e.kind == "model_called":
            span = next(s for s in spans if s.key == f"event:{e.seq}")
            assert span.end == e.ts
            assert span.duration_ms == pytest.approx(e.data["latency_ms"], abs=1e-3)
    steps = {s.name: s for s in spans if s.name.startswith("step ") and s.status != "error"}
    order = ["step answer", "step split", "step shout", "step settle", "step approve"]
    for before, after in itertools.pairwise(order):
        assert steps[before].end <= steps[after].start
    assert steps["step settle"].duration_ms >= 30  # it sleeps 30 ms
    review = one(spans, "review approve")
    assert review.start == steps["step approve"].end  # from the request to the decision
    assert review.end == next(e.ts for e in events if e.kind == "review_resolved")


def test_ids_are_derived_from_the_run_id(reviewed: tuple[str, list[Event]]) -> None:
    run_id, events = reviewed
    spans = spans_of(events)
    assert spans[0].trace_id == int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16])
    assert trace_id_of(run_id) == spans[0].trace_id
    assert spans[0].span_id == span_id_of(run_id, "run")
    again = spans_of(list(events))
    assert [(s.span_id, s.parent_id, s.start, s.end) for s in again] == [
        (s.span_id, s.parent_id, s.start, s.end) for s in spans
    ]
    assert trace_id_of("another run") != spans[0].trace_id


def test_export_run_builds_sdk_spans_and_reexporting_gives_the_same_trace() -> None:
    async def main() -> tuple[list[Any], list[Any], str]:
        store, run_id, _ = await _reviewed_run()
        first, second = InMemorySpanExporter(), InMemorySpanExporter()
        await export_run(store, run_id, first)
        await export_run(store, run_id, second)
        return list(first.get_finished_spans()), list(second.get_finished_spans()), run_id

    first, second, run_id = asyncio.run(main())

    def identity(s: Any) -> tuple[Any, ...]:
        return (
            s.context.trace_id,
            s.context.span_id,
            s.parent.span_id if s.parent else None,
            s.start_time,
            s.end_time,
            s.name,
            s.status.status_code,
            tuple(sorted(s.attributes.items(), key=lambda kv: kv[0])),
        )

    assert [identity(s) for s in first] == [identity(s) for s in second]
    root = next(s for s in first if s.parent is None)
    assert root.context.trace_id == trace_id_of(run_id)
    assert root.resource.attributes["service.name"] == "erpoz"
    assert root.instrumentation_scope.name == "erpoz"
    assert root.kind == SpanKind.INTERNAL
    ids = {s.context.span_id for s in first}
    assert all(s.parent.span_id in ids for s in first if s.parent is not None)
    chats = [s for s in first if s.name.startswith("chat ")]
    assert chats and all(s.kind == SpanKind.CLIENT for s in chats)
    assert all(s.start_time <= s.end_time for s in first)
    flaky = next(s for s in first if s.name == "chat flaky")
    assert flaky.status.status_code == StatusCode.ERROR
    retried = next(s for s in first if s.name == "step settle" and s.status.is_ok is False)
    assert retried.events[0].name == "exception"
    assert retried.events[0].attributes["exception.type"] == "ConnectionError"


def test_a_failed_run_is_an_error_span_with_the_failed_step_and_call() -> None:
    async def main() -> tuple[str, list[Event]]:
        store = MemoryStore()
        done = await engine(store).run(failing_flow(), {"question": "hello"})
        assert done.status == "failed"
        return done.run_id, await store.events(done.run_id)

    _run_id, events = asyncio.run(main())
    spans = spans_of(events)
    root = one(spans, "invoke_workflow doomed")
    assert root.status == "error" and "bad request" in (root.status_message or "")
    assert root.attributes["erpoz.run.status"] == "failed"
    assert root.attributes["erpoz.run.failed_step"] == "doomed"
    step = one(spans, "step doomed")
    assert step.status == "error" and step.attributes["error.type"] == "ModelError"
    exc = step.events[-1]
    assert exc.name == "exception" and "Traceback" in str(exc.attributes["exception.stacktrace"])
    call = one(spans, "chat broken")
    assert call.status == "error" and call.attributes["erpoz.model.http_status"] == 400
    assert call.parent_id == step.span_id


def test_a_waiting_run_has_open_spans_that_end_at_its_last_event() -> None:
    async def main() -> list[Event]:
        store = MemoryStore()
        first = await engine(store).run(support_flow(review=True), {"question": QUESTION})
        assert first.status == "waiting"
        return await store.events(first.run_id)

    events = asyncio.run(main())
    spans = spans_of(events)
    open_ = {s.name for s in spans if s.open}
    assert open_ == {"invoke_workflow support", "review approve"}
    root = one(spans, "invoke_workflow support")
    assert root.attributes["erpoz.run.status"] == "waiting" and root.end == events[-1].ts
    assert one(spans, "step approve").attributes["erpoz.step.outcome"] == "review_requested"


class Recording(InMemorySpanExporter):
    """Keeps the span names of each export call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.batches.append([s.name for s in spans])
        return super().export(spans)


def test_live_exporter_sends_each_span_once_as_turns_end() -> None:
    async def main() -> tuple[Recording, list[Any], str, RunTraceExporter]:
        store = MemoryStore()
        sink = Recording()
        live = RunTraceExporter(store, sink, delay_s=60)  # only drain() sends here
        eng = engine(store, [live.listen])
        flow = support_flow(review=True)
        first = await eng.run(flow, {"question": QUESTION})
        assert sink.batches == []  # nothing is exported on the run's path
        await live.drain()
        assert sink.batches and "invoke_workflow support" not in sink.batches[0]
        assert "review approve" not in sink.batches[0] and "step approve" in sink.batches[0]
        await eng.resume(first.run_id, flow, decision=Decision("approve", reviewer="bob"))
        failed = await eng.run(failing_flow(), {"question": "x"})
        await live.drain()
        whole = InMemorySpanExporter()
        await export_run(store, first.run_id, whole)
        await export_run(store, failed.run_id, whole)
        live.close()
        return sink, list(whole.get_finished_spans()), first.run_id, live

    sink, whole, _run_id, live = asyncio.run(main())
    # the waiting turn; then the resumed run's end and the failed run, in one batch
    assert len(sink.batches) == 2
    assert sink.batches[1].count("invoke_workflow support") == 1
    assert set(sink.batches[1]) >= {"review approve", "invoke_workflow support"}
    assert "invoke_workflow doomed" in sink.batches[1]
    sent = [(s.context.span_id, s.start_time, s.end_time) for s in sink.get_finished_spans()]
    assert len(sent) == len(set(sent))  # nothing twice
    assert sorted(sent) == sorted((s.context.span_id, s.start_time, s.end_time) for s in whole)
    assert live.exported == len(sent) and live.failures == 0 and live.exports == 2


def test_live_exporter_batches_many_runs_into_few_exports() -> None:
    async def main() -> tuple[Recording, RunTraceExporter, list[str]]:
        store = MemoryStore()
        sink = Recording()
        live = RunTraceExporter(store, sink, delay_s=60, max_batch=4)
        eng = engine(store, [live.listen])
        ids = [(await eng.run(failing_flow(), {"question": str(i)})).run_id for i in range(8)]
        await live.drain()
        live.close()
        return sink, live, ids

    sink, live, ids = asyncio.run(main())
    roots = [[n for n in batch if n.startswith("invoke")] for batch in sink.batches]
    assert sum(len(r) for r in roots) == 8 and all(len(r) <= 4 for r in roots)
    assert 2 <= len(sink.batches) <= 3  # eight runs, batches of at most four
    assert len({s.context.trace_id for s in sink.get_finished_spans()}) == len(ids)
    assert live.dropped == 0 and live.failures == 0


def test_live_exporter_drops_turns_beyond_max_pending() -> None:
    async def main() -> tuple[Recording, RunTraceExporter]:
        store = MemoryStore()
        sink = Recording()
        live = RunTraceExporter(store, sink, delay_s=60, max_pending=3)
        eng = engine(store, [live.listen])
        for i in range(5):
            await eng.run(failing_flow(), {"question": str(i)})
        await live.drain()
        live.close()
        return sink, live

    sink, live = asyncio.run(main())
    assert live.dropped == 2 and len(sink.batches) == 1
    assert len([n for n in sink.batches[0] if n.startswith("invoke")]) == 3


def test_otlp_is_configured_by_option_or_environment_and_off_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(var, raising=False)
    assert otlp_endpoint() is None and otlp_exporter() is None
    assert otlp_endpoint("http://h:4318") == "http://h:4318/v1/traces"
    assert otlp_endpoint("http://h:4318/v1/traces") == "http://h:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert otlp_endpoint() == "http://collector:4318/v1/traces"
    assert otlp_exporter() is not None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
    assert otlp_endpoint() == "http://traces:4318/custom"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert otlp_endpoint() is None


# --- OTLP/HTTP on the wire -------------------------------------------------------------------
class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _decode(body: bytes) -> list[Any]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return [
        span
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        field = value.WhichOneof("value")
        out[kv.key] = getattr(value, field) if field != "array_value" else None
    return out


def test_spans_reach_an_otlp_http_receiver_as_protobuf(
    receiver: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    url, received = receiver

    async def main() -> tuple[str, int]:
        store, run_id, _ = await _reviewed_run()
        exporter = otlp_exporter(url, timeout=5)
        assert exporter is not None
        spans = await export_run(store, run_id, exporter)
        exporter.shutdown()
        return run_id, len(spans)

    run_id, count = asyncio.run(main())
    assert len(received) == 1
    path, content_type, body = received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    wire = _decode(body)
    assert len(wire) == count
    assert {bytes(s.trace_id) for s in wire} == {trace_id_of(run_id).to_bytes(16, "big")}
    root = next(s for s in wire if not s.parent_span_id)
    assert root.name == "invoke_workflow support"
    assert bytes(root.span_id) == span_id_of(run_id, "run").to_bytes(8, "big")
    mini = next(s for s in wire if s.name == "chat mini")
    attrs = _attrs(mini)
    assert attrs["gen_ai.request.model"] == "mini" and attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert mini.kind == mini.SPAN_KIND_CLIENT
    flaky = next(s for s in wire if s.name == "chat flaky")
    assert flaky.status.code == flaky.status.STATUS_CODE_ERROR
    assert all(s.start_time_unix_nano <= s.end_time_unix_nano for s in wire)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("trace")(trace)

    @app.callback()
    def _root() -> None:
        """erpoz"""

    return app


def test_trace_command_exports_over_otlp_and_prints_json(
    tmp_path: Path,
    receiver: tuple[str, list[tuple[str, str, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = receiver
    db = str(tmp_path / "runs.db")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    async def make() -> str:
        store = open_store(db)
        try:
            done = await engine(store).run(failing_flow(), {"question": "hi"})
            return done.run_id
        finally:
            await store.close()

    run_id = asyncio.run(make())
    runner = CliRunner()
    shown = runner.invoke(_cli(), ["trace", run_id, "--store", db])
    assert shown.exit_code == 0, shown.output
    assert "step doomed" in shown.output and "chat broken" in shown.output
    assert received == []  # nothing configured, nothing exported
    result = runner.invoke(_cli(), ["trace", run_id[:10], "--store", db, "--json", "--otlp", url])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trace_id"] == f"{trace_id_of(run_id):032x}"
    assert data["exported_to"] == url + "/v1/traces"
    assert [s["name"] for s in data["spans"]][:2] == ["invoke_workflow doomed", "step doomed"]
    assert len(received) == 1 and len(_decode(received[0][2])) == len(data["spans"])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    again = runner.invoke(_cli(), ["trace", run_id, "--store", db])
    assert again.exit_code == 0 and "exported" in again.output
    assert len(received) == 2 and received[1][2] == received[0][2]  # the same trace, byte for byte
    missing = runner.invoke(_cli(), ["trace", "r0000000000nothere", "--store", db])
    assert missing.exit_code == 5


def test_the_server_exports_runs_when_otlp_is_configured(
    receiver: tuple[str, list[tuple[str, str, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from erpoz.server import ServerState, create_app

    url, received = receiver
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    async def main(configured: bool) -> str:
        store = MemoryStore()
        state = ServerState(store=store, engine=engine(store))
        create_app(state)
        done = await state.engine.run(failing_flow(), {"question": "hi"})
        for listen in state.engine.listeners:
            owner = getattr(listen, "__self__", None)
            if isinstance(owner, RunTraceExporter):
                assert configured
                await owner.drain()
                assert owner.failures == 0
        return done.run_id

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    asyncio.run(main(configured=False))
    assert received == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    run_id = asyncio.run(main(configured=True))
    assert len(received) == 1
    wire = _decode(received[0][2])
    assert {bytes(s.trace_id) for s in wire} == {trace_id_of(run_id).to_bytes(16, "big")}
    assert {s.name for s in wire} >= {"invoke_workflow doomed", "step doomed", "chat broken"}


def test_observability_doc_examples_run() -> None:
    """docs/observability.md says its Python blocks run as written, in order, in one session."""
    import re

    doc = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
    fence = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
    blocks = [body for lang, body in fence.findall(doc.read_text("utf-8")) if lang == "python"]
    assert blocks
    namespace: dict[str, object] = {"__name__": "docs_observability"}
    for i, block in enumerate(blocks, start=1):
        code = compile(
            block, f"docs/observability.md (python block {i})", "exec", dont_inherit=True
        )
        exec(code, namespace)


def test_odd_data_in_events_of_your_own_does_not_break_the_trace() -> None:
    def event(seq: int, kind: str, step: str | None, data: dict[str, Any]) -> Event:
        return Event("r-odd", seq, 100.0 + seq, kind, step, 1 if step else 0, data, None, "", "")

    events = [
        event(1, "run_started", None, {"flow": "f"}),
        event(2, "step_started", "s", {}),
        event(3, "model_called", "s", {"model": "m", "latency_ms": "fast", "input_tokens": "x"}),
        event(4, "guard_decided", "s", {"checkpoint": "c", "findings": 3, "ms": None}),
        event(5, "route_decided", "s", {"router": "r", "kind": "fallback", "candidates": "?"}),
        event(6, "my.own_kind", "s", {"nested": {"a": [1, "b"]}, "n": 2}),
        event(7, "step_succeeded", "s", {"ms": 7}),
    ]
    spans = spans_of(events)
    assert [s.name for s in spans] == ["invoke_workflow f", "step s", "chat m", "guard c"]
    assert spans[2].duration_ms == 0 and "gen_ai.usage.input_tokens" in spans[2].attributes
    own = spans[1].events[-1]
    assert own.name == "my.own_kind" and own.attributes == {"nested": '{"a":[1,"b"]}', "n": 2}
    assert spans[0].open and all(not s.open for s in spans[1:])
