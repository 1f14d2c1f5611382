"""The web dashboard, end to end: a real uvicorn server over a throw-away SQLite store, driven
by headless Chromium (Debian's, through Playwright; never downloaded).

Runs are made through the API before the browser looks at them: a model flow (a fallback
router whose first model is down, a PII guard that redacts an e-mail address, a step that
succeeds on its second attempt), a flow that waits for review, one whose output and input are
HTML with script, one that fails with HTML in its error. Screenshots go to the test's tmp dir
and to ``$ERPOZ_ARTIFACTS`` when set.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from erpoz import Context, Engine, Flow, RetryPolicy, ReviewRequired, step
from erpoz.errors import ModelError
from erpoz.guards import Check, Guardrails, PIIDetector
from erpoz.models import ModelHub, ModelSpec
from erpoz.policy import parse_policy
from erpoz.routing import FallbackRouter
from erpoz.server import ServerState, Tenants
from erpoz.server.dashboard import CSP
from erpoz.store import open_store
from erpoz.testing import FunctionModel

from .browser_helpers import CHROMIUM, LiveServer, chromium_missing, save_screenshot

XSS_OUTPUT = "<script>alert(1)</script><img src=x onerror=alert(2)>"
XSS_INPUT = "<svg onload=alert(3)>hello</svg>"
XSS_ERROR = "<img src=x onerror=alert(4)>"
CARD_QUESTION = "Charge card 4111 1111 1111 1111 for the order"
STATIC = Path(__file__).resolve().parents[2] / "src" / "erpoz" / "server" / "static"

# --- the flows the server exposes ------------------------------------------------------------


@step
async def ask_model(question: str, ctx: Context) -> str:
    await asyncio.sleep(0.03)
    return (await ctx.models.chat("default", question)).text


@step(retry=RetryPolicy(attempts=2, backoff=0.0))
async def polish(answer: str, ctx: Context) -> str:
    await asyncio.sleep(0.03)
    if ctx.attempt == 1:
        raise ConnectionError("flaky upstream")
    return answer.strip() + "."


ask = Flow("ask", inputs={"question": str})
ask.add(polish, answer=ask.add(ask_model, question=ask.input("question")))


@step
def propose(amount: int) -> str:
    raise ReviewRequired(
        "refund over the limit",
        output=f"Refund {amount} EUR to <b>Ada</b>",
        evidence={"amount": amount, "limit": 100},
    )


@step
def send(body: str) -> str:
    return "sent: " + body


refund = Flow("refund", inputs={"amount": int})
refund.add(send, body=refund.add(propose, amount=refund.input("amount")))


@step
def render_html(text: str) -> str:
    return XSS_OUTPUT + text


xss = Flow("xss", inputs={"text": str})
xss.add(render_html, text=xss.input("text"))


@step
def explode(text: str) -> str:
    raise ValueError(XSS_ERROR + text)


boom = Flow("boom", inputs={"text": str})
boom.add(explode, text=boom.input("text"))


@step
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@step
async def wake(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds * 2} s"


slow = Flow("slow", inputs={"seconds": float})
slow.add(wake, seconds=slow.add(nap, seconds=slow.input("seconds")))

FLOWS = (ask, refund, xss, boom, slow)


def _down(request: Any) -> str:
    raise ModelError("HTTP 503 from upstream", retryable=True)


def _hub() -> ModelHub:
    hub = ModelHub()
    gpt = hub.add(
        FunctionModel(_down, name="gpt-down"),
        ModelSpec("gpt-down", "test", price_in=0.15, price_out=0.6),
    )
    local = hub.add(
        FunctionModel(lambda r: "Paris is the capital " + r.messages[-1].text, name="local"),
        ModelSpec("local", "test", price_in=0.05, price_out=0.1),
    )
    hub.add(FallbackRouter("default", [gpt, local]))
    return hub


def _rails() -> Guardrails:
    policy = parse_policy(
        "rules:\n"
        "  - {name: no mail to models, data: pii.email, at: [model_input], action: redact}\n"
        "  - {name: cards need a look, data: pii.credit_card, at: [model_input],"
        " action: review}\n"
    )
    return Guardrails([Check(PIIDetector(), frozenset({"model_input"}))], policy)


def _state(path: Path, tenants: Tenants | None = None) -> ServerState:
    store = open_store(path)
    engine = Engine(store, services={ModelHub: _hub(), Guardrails: _rails()})
    return ServerState(
        store=store,
        engine=engine,
        flows={f.name: f.compile() for f in FLOWS},
        tenants=tenants,
        ping_s=0.5,
        close_store=True,
    )


# --- fixtures --------------------------------------------------------------------------------

pytestmark = pytest.mark.skipif(
    chromium_missing(), reason=f"Debian's Chromium is not installed at {CHROMIUM}"
)


class Site:
    """The live server and the runs made on it."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.runs: dict[str, str] = {}

    def start(self, name: str, flow: str, **inputs: Any) -> dict[str, Any]:
        r = self.http.post("/api/runs", json={"flow": flow, "inputs": inputs})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        self.runs[name] = body["run_id"]
        return body

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/runs/{run_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def listed(self, **query: str) -> list[str]:
        """Run ids the API lists for a query (what the page must show)."""
        runs = self.http.get("/api/runs", params=query).json()["runs"]
        return [r["run_id"] for r in runs]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.http.get(f"/api/runs/{run_id}/events").json()["events"]
        return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    state = _state(tmp_path_factory.mktemp("dashboard") / "runs.db")
    with LiveServer(state) as server:
        s = Site(server)
        assert s.start("ask", "ask", question="Capital of France? mail ann@example.com")[
            "status"
        ] == ("succeeded")
        assert s.start("approve", "refund", amount=500)["status"] == "waiting"
        assert s.start("edit", "refund", amount=900)["status"] == "waiting"
        assert s.start("xss", "xss", text=XSS_INPUT)["status"] == "succeeded"
        assert s.start("boom", "boom", text="x")["status"] == "failed"
        assert s.start("card", "ask", question=CARD_QUESTION)["status"] == "waiting"
        yield s
        s.http.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watched:
    """A page with everything that must not happen recorded: dialogs, script errors, console
    errors (CSP violations among them), requests to other hosts."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on("request", lambda req: self.requests.append(req.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def check(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.errors == [], f"errors on the page: {self.errors}"
        foreign = [
            u
            for u in self.requests
            if urlsplit(u).scheme not in ("data", "blob", "about")
            and urlsplit(u).hostname not in ("127.0.0.1", "localhost")
        ]
        assert foreign == [], f"requests to other hosts: {foreign}"


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    w = Watched(page)
    yield w
    context.close()
    w.check()


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Any, str], Path]:
    def take(page: Any, name: str) -> Path:
        return save_screenshot(page, tmp_path / "screenshots", name)

    return take


# --- tests -----------------------------------------------------------------------------------


def test_runs_list_shows_runs_and_filters(site: Site, watched: Watched, shot: Callable) -> None:
    from playwright.sync_api import expect

    page = watched.page
    page.goto(site.url + "/")
    rows = page.locator("table.runs tbody tr")
    listed = site.listed()
    assert set(site.runs.values()) <= set(listed)
    expect(rows).to_have_count(len(listed))
    for run_id in listed:
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(1)
    shot(page, "runs-list")

    page.select_option("#filter-status", "succeeded")
    expect(rows).to_have_count(len(site.listed(status="succeeded")))
    expect(page.locator(f'tr[data-run="{site.runs["ask"]}"]')).to_have_count(1)
    expect(page.locator(f'tr[data-run="{site.runs["boom"]}"]')).to_have_count(0)
    assert "status=succeeded" in page.url

    page.select_option("#filter-status", "")
    page.select_option("#filter-flow", "xss")
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-run="{site.runs["xss"]}"]')).to_have_count(1)

    page.select_option("#filter-flow", "")
    page.fill("#filter-q", site.runs["boom"])
    expect(rows).to_have_count(1)
    expect(page.locator(f'tr[data-run="{site.runs["boom"]}"]')).to_have_count(1)
    # the filters live in the URL: a reload shows the same
    page.reload()
    expect(rows).to_have_count(1)
    assert page.input_value("#filter-q") == site.runs["boom"]

    page.fill("#filter-q", "")
    expect(rows).to_have_count(len(listed))
    page.click(f'tr[data-run="{site.runs["ask"]}"] a')
    expect(page.locator("#run-id")).to_have_text(site.runs["ask"])


def test_run_page_shows_gantt_graph_models_guards_and_events(
    site: Site, watched: Watched, shot: Callable
) -> None:
    from playwright.sync_api import expect

    page = watched.page
    run_id = site.runs["ask"]
    page.goto(f"{site.url}/#/runs/{run_id}")
    expect(page.locator("#run-id")).to_have_text(run_id)
    expect(page.locator(".page-head .badge")).to_have_text("succeeded")

    # the Gantt: a row per step, a bar per attempt (polish failed once, then succeeded)
    gantt = page.locator("#run-timeline svg.gantt")
    expect(gantt.locator("g.gantt-row")).to_have_count(2)
    expect(gantt.locator('g[data-step="ask_model"] rect.bar')).to_have_count(1)
    polish_bars = gantt.locator('g[data-step="polish"] rect.bar')
    expect(polish_bars).to_have_count(2)
    assert polish_bars.nth(0).get_attribute("data-status") == "retrying"
    assert polish_bars.nth(1).get_attribute("data-status") == "succeeded"
    for i in range(3):
        bar = gantt.locator("rect.bar").nth(i)
        assert float(bar.get_attribute("width") or 0) >= 2
    expect(page.locator('#run-timeline tr[data-step="polish"]')).to_contain_text("2")

    # the flow graph, coloured by this run's step status
    graph = page.locator("#run-graph svg.graph")
    expect(graph.locator("g.node")).to_have_count(2)
    expect(graph.locator('g.node[data-node="polish"]')).to_have_class(re.compile("st-succeeded"))
    expect(graph.locator('path.edge[data-from="ask_model"][data-to="polish"]')).to_have_count(1)

    # model decisions with their reasons, costs
    models = page.locator("#run-models")
    expect(models).to_contain_text("default")
    expect(models).to_contain_text("local")
    expect(models).to_contain_text("gpt-down")
    route = next(e for e in site.events(run_id) if e["kind"] == "route_decided")
    expect(models).to_contain_text(str(route["data"]["reason"]))
    expect(page.locator(".stat.cost .stat-value")).to_have_text(re.compile(r"\$\d"))

    # guard findings: the e-mail address found and redacted (its text is never recorded)
    guards = page.locator("#run-guards")
    expect(guards).to_contain_text("pii.email")
    expect(guards).to_contain_text("redact")
    expect(guards).to_contain_text("no mail to models")
    # what a check's score and a finding's score mean, said where both are shown
    expect(page.locator("#guard-scores-note")).to_contain_text("1 − the score of the strongest")

    # the event log, and its kind filter
    log = page.locator("#run-events tbody tr")
    expect(log).to_have_count(len(site.events(run_id)))
    for kind in ("run_started", "model_called", "route_decided", "guard_decided", "step_retried"):
        expect(page.locator(f'#run-events tr[data-kind="{kind}"]').first).to_be_visible()
    shot(page, "run-page")
    page.select_option("#event-kind", "model_called")
    expect(log).to_have_count(2)

    # lineage of a step, from the timeline
    page.click('#run-timeline g[data-step="polish"] .row-label')
    expect(page.locator("#run-lineage")).to_contain_text("ask_model")
    expect(page.locator("#run-lineage .lineage-step").first).to_be_visible()


def test_review_approved_from_the_page(site: Site, watched: Watched, shot: Callable) -> None:
    from playwright.sync_api import expect

    page = watched.page
    run_id = site.runs["approve"]
    page.goto(site.url + "/#/reviews")
    card = page.locator(f'article.review[data-run="{run_id}"]')
    expect(card).to_contain_text("refund over the limit")
    expect(card).to_contain_text("Refund 500 EUR to <b>Ada</b>")  # markup shown as text
    waiting = len(site.http.get("/api/reviews").json()["reviews"])
    expect(page.locator("#review-count")).to_have_text(str(waiting))
    shot(page, "review-queue")

    card.locator("input.reviewer").fill("dana")
    card.locator("textarea.comment").fill("checked the invoice")
    card.locator("button.approve").click()
    expect(card.locator(".review-status")).to_contain_text("Decision recorded: approve")
    expect(card.locator(".review-status .badge")).to_have_text("succeeded")
    shot(page, "review-approved")

    info = site.run(run_id)
    assert info["status"] == "succeeded"
    assert info["output"] == "sent: Refund 500 EUR to <b>Ada</b>"
    resolved = [e for e in site.events(run_id) if e["kind"] == "review_resolved"]
    assert resolved[0]["data"]["decision"] == "approve"
    assert resolved[0]["data"]["reviewer"] == "dana"
    assert resolved[0]["data"]["comment"] == "checked the invoice"
    # the reviewer's name is remembered for the next review
    assert page.evaluate("localStorage.getItem('erpoz.reviewer')") == "dana"

    page.goto(f"{site.url}/#/runs/{run_id}")
    expect(page.locator(".page-head .badge")).to_have_text("succeeded")
    expect(page.locator("#run-reviews")).to_contain_text("checked the invoice")


def test_a_guard_review_shows_what_would_be_sent(
    site: Site, watched: Watched, shot: Callable
) -> None:
    from playwright.sync_api import expect

    page = watched.page
    run_id = site.runs["card"]
    page.goto(site.url + "/#/reviews")
    card = page.locator(f'article.review[data-run="{run_id}"]')
    expect(card).to_contain_text("cards need a look")
    # what would be sent, with the card number masked (the log never holds it): not a hash
    # and a null proposal
    would = card.locator(".would-send")
    expect(would).to_contain_text("Charge card ")
    expect(would).to_contain_text(" for the order")
    expect(would).not_to_contain_text("4111")
    expect(card).not_to_contain_text("Proposal")
    expect(card.locator("button.edit")).to_have_count(0)  # a permission has nothing to edit
    expect(card.locator("button.approve")).to_have_count(1)
    shot(page, "guard-review")
    [item] = site.http.get(f"/api/reviews/{run_id}").json()["reviews"]
    assert item["grant"].startswith("model_input:") and item["proposal"] is None


def test_review_edited_on_the_run_page(site: Site, watched: Watched, shot: Callable) -> None:
    from playwright.sync_api import expect

    page = watched.page
    run_id = site.runs["edit"]
    page.goto(f"{site.url}/#/runs/{run_id}")
    expect(page.locator(".page-head .badge")).to_have_text("waiting")
    card = page.locator("#run-review article.review")
    expect(card).to_contain_text("refund over the limit")
    # the wait for review is drawn in the timeline
    expect(page.locator('#run-timeline g[data-step="propose"] rect.bar.wait')).to_have_count(1)

    card.locator("button.edit").click()
    editor = card.locator("textarea.edit-output")
    expect(editor).to_be_visible()
    editor.fill("not json")
    card.locator("button.edit").click()
    expect(card.locator(".review-status")).to_contain_text("not JSON")
    editor.fill('"Refund 90 EUR to Ada"')
    card.locator("textarea.comment").fill("a tenth is enough")
    shot(page, "review-edit")
    card.locator("button.edit").click()
    expect(page.locator("#run-flash")).to_contain_text("Decision recorded: edit (step propose)")
    expect(page.locator("#run-flash .badge")).to_have_text("succeeded")
    expect(page.locator(".page-head .badge")).to_have_text("succeeded")
    expect(page.locator("#run-review")).to_have_count(0)  # nothing waits any more
    expect(page.locator("#run-output")).to_contain_text("sent: Refund 90 EUR to Ada")

    info = site.run(run_id)
    assert info["status"] == "succeeded"
    assert info["output"] == "sent: Refund 90 EUR to Ada"


def test_a_running_run_is_followed_live(site: Site, watched: Watched, shot: Callable) -> None:
    from playwright.sync_api import expect

    r = site.http.post(
        "/api/runs", json={"flow": "slow", "inputs": {"seconds": 1.0}, "wait": False}
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    page = watched.page
    page.goto(f"{site.url}/#/runs/{run_id}")
    expect(page.locator(".page-head .live")).to_be_visible()
    expect(page.locator(".page-head .badge")).to_have_text("running")
    # wake starts while the page follows: its bar is drawn as running at once (from the
    # stream's announcement, before the event is durable), then as succeeded
    wake = page.locator('#run-timeline g[data-step="wake"] rect.bar')
    expect(wake).to_have_attribute("data-status", "running")
    shot(page, "run-live")
    expect(wake).to_have_attribute("data-status", "succeeded", timeout=8000)
    expect(page.locator(".page-head .badge")).to_have_text("succeeded")
    expect(page.locator(".page-head .live")).to_have_count(0)
    expect(page.locator("#run-output")).to_contain_text("slept 2.0 s")
    expect(page.locator("#run-events tbody tr")).to_have_count(len(site.events(run_id)))
    assert site.run(run_id)["status"] == "succeeded"
    assert any("/follow" in u for u in watched.requests), "the page did not follow the run"


def test_markup_in_runs_is_shown_as_text(site: Site, watched: Watched, shot: Callable) -> None:
    from playwright.sync_api import expect

    page = watched.page
    run_id = site.runs["xss"]
    page.goto(f"{site.url}/#/runs/{run_id}")
    output = page.locator("#run-output pre.json")
    expect(output).to_contain_text(XSS_OUTPUT + XSS_INPUT)
    expect(page.locator("#run-page")).to_contain_text(XSS_INPUT)  # the inputs
    expect(page.locator("#run-events tbody tr")).to_have_count(len(site.events(run_id)))
    page.locator('#run-events tr[data-kind="step_succeeded"] summary').click()
    shot(page, "xss-run")

    # nothing of it became an element: no <img src=x>, no <svg onload>, no extra script
    assert page.locator("img").count() == 0
    assert page.locator("svg[onload]").count() == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 1  # app.js
    assert page.evaluate("document.querySelectorAll('[onerror],[onload]').length") == 0

    # the runs list shows the output as text too
    page.goto(site.url + "/#/runs")
    expect(page.locator(f'tr[data-run="{run_id}"] td.result')).to_contain_text("<script>")

    # and the failed run's error
    page.goto(f"{site.url}/#/runs/{site.runs['boom']}")
    expect(page.locator("#run-error")).to_contain_text(XSS_ERROR)
    expect(page.locator(".page-head .badge")).to_have_text("failed")
    assert page.locator("img").count() == 0
    page.wait_for_timeout(200)  # give a would-be onerror handler its chance to fire


def test_every_page_loads_from_loopback_only(site: Site, watched: Watched, shot: Callable) -> None:
    from playwright.sync_api import expect

    page = watched.page
    page.goto(site.url + "/#/models")
    charts = page.locator("#model-charts .chart")
    expect(charts).to_have_count(4)
    expect(charts.nth(0).locator("svg circle").first).to_be_attached()
    expect(charts.nth(0)).to_contain_text("local")
    expect(charts.nth(3).locator("svg circle").first).to_be_attached()
    expect(page.locator("#model-totals")).to_contain_text("gpt-down")
    expect(page.locator("#model-quality")).to_contain_text("pii")
    expect(page.locator("#chart-source")).to_contain_text("/api/stats/models")
    expect(page.locator("#quality-scores-note")).to_contain_text("how sure the detector is")
    # every call falls in one bucket of the last 24 hours: the axis still spans those 24 hours
    ticks = charts.nth(0).locator("svg text.xtick").all_text_contents()
    assert len(ticks) == 5 and len(set(ticks)) == 5, ticks
    shot(page, "models")

    page.goto(site.url + "/#/flows")
    expect(page.locator("section[data-flow]")).to_have_count(len(FLOWS))
    expect(page.locator('section[data-flow="ask"] g.node')).to_have_count(2)
    shot(page, "flows")

    page.goto(site.url + "/#/audit")
    expect(page.locator("#audit-verdict")).to_have_attribute("data-ok", "true")
    expect(page.locator("#audit-result")).to_contain_text("runs")
    shot(page, "audit")

    page.goto(site.url + "/#/nowhere")
    expect(page.locator("main")).to_contain_text("No such page")
    loaded = {urlsplit(u).path for u in watched.requests}
    assert {"/", "/ui/app.js", "/ui/app.css", "/ui/page_models.js", "/api/flows"} <= loaded
    assert {"/api/stats/models", "/api/stats/quality", "/api/audit/verify"} <= loaded


def test_api_key_asked_for_and_kept(
    browser: Any, tmp_path: Path, shot: Callable, watched: Watched
) -> None:
    from playwright.sync_api import expect

    key = "dash-key-0123456789abcdef"
    state = _state(tmp_path / "keyed.db", Tenants({key: "acme"}))
    with LiveServer(state) as server:
        r = httpx.post(
            server.url + "/api/runs",
            json={"flow": "xss", "inputs": {"text": "t"}},
            headers={"Authorization": f"Bearer {key}"},
        )
        run_id = r.json()["run_id"]
        page = watched.page
        # the 401s of a page opened without a key are expected here
        page.goto(server.url + "/")
        expect(page.locator("#key-form")).to_be_visible()
        expect(page.locator("#key-message")).to_contain_text("requires an API key")
        shot(page, "api-key")
        page.fill("#key-input", key)
        page.click("#key-form button[type=submit]")
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(1)
        expect(page.locator("#key-toggle")).to_contain_text("tenant acme")
        assert page.evaluate("localStorage.getItem('erpoz.apiKey')") == key
        page.reload()  # kept across loads
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(1)
        watched.errors = [e for e in watched.errors if "401" not in e]


def test_the_app_and_its_assets_are_served_with_a_strict_policy(site: Site) -> None:
    r = site.http.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/ui/app.js">' in r.text
    js = site.http.get("/ui/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    again = site.http.get("/ui/app.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304
    assert site.http.get("/ui/app.css").headers["content-type"].startswith("text/css")
    for missing in ("/ui/nope.js", "/ui/..%2fdashboard.py", "/ui/%2e%2e/__init__.py"):
        assert site.http.get(missing).status_code == 404, missing
    # the dashboard shadows none of the other routes
    assert site.http.get("/api/health").json()["status"] == "ok"
    assert site.http.get("/openapi.json").status_code == 200
    assert "/ui/{name}" not in site.http.get("/openapi.json").json()["paths"]
    assert site.http.get("/docs").status_code == 200


def test_the_scripts_never_parse_markup() -> None:
    """Everything shown from data is built with textContent / createElement."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"createContextualFragment|DOMParser|srcdoc"
    )
    found = [
        f"{p.name}:{n}: {line.strip()}"
        for p in sorted(STATIC.glob("*.js"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if sinks.search(line)
    ]
    assert found == []
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script
    assert not re.search(r"\son[a-z]+=", html)  # no inline handlers
    everything = "".join(p.read_text() for p in STATIC.glob("*"))
    assert not re.search(r"https?://", everything.replace("http://www.w3.org/2000/svg", ""))


def test_the_api_docs_load_from_loopback_only_and_list_every_operation(
    site: Site, watched: Watched, shot: Callable
) -> None:
    """``/docs`` (Swagger UI) comes with its script and style from this server, no CDN, and
    lists every operation of the OpenAPI document."""
    from playwright.sync_api import expect

    spec = site.http.get("/openapi.json").json()
    methods = {"get", "post", "put", "patch", "delete"}
    operations = [m for item in spec["paths"].values() for m in item if m in methods]
    assert len(operations) > 20
    page = watched.page
    page.goto(site.url + "/redoc")  # redirects to /docs
    assert urlsplit(page.url).path == "/docs"
    expect(page.locator(".opblock")).to_have_count(len(operations))
    expect(page.locator(".opblock-summary-path", has_text="/v1/chat/completions")).to_have_count(1)
    page.locator(".opblock-summary", has_text="/api/health").first.click()
    page.locator("button.try-out__btn").click()
    page.locator("button.execute").click()  # "Try it out" calls this server
    status = page.locator(".live-responses-table tbody td.response-col_status")
    expect(status).to_contain_text("200")
    shot(page, "docs")
    loaded = {urlsplit(u).path for u in watched.requests}
    assert {
        "/docs",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-init.js",
        "/openapi.json",
        "/api/health",
    } <= loaded


def test_the_api_docs_page_holds_no_inline_script_and_a_strict_policy(site: Site) -> None:
    r = site.http.get("/docs")
    assert r.status_code == 200
    assert "script-src 'self';" in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text)
    assert not re.search(r"https?://", r.text)
    js = site.http.get("/docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert site.http.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    again = site.http.get(
        "/docs/swagger-ui-bundle.js", headers={"If-None-Match": js.headers["etag"]}
    )
    assert again.status_code == 304
    for missing in ("/docs/nope.js", "/docs/..%2f_docs.py", "/docs/redoc.standalone.js"):
        assert site.http.get(missing).status_code == 404, missing
    assert site.http.get("/redoc", follow_redirects=False).headers["location"] == "/docs"
    assert not any(
        p.startswith(("/docs", "/redoc")) for p in site.http.get("/openapi.json").json()["paths"]
    )
