// One run: summary, review, inputs/output, step timeline (Gantt), flow graph, model decisions,
// guard findings, tools, costs, lineage and the event log — followed live while it runs.

import { api, follow, path } from "./api.js";
import { flowGraph, gantt } from "./charts.js";
import {
  add,
  asList,
  badge,
  fill,
  errorBox,
  fmtClock,
  fmtDuration,
  fmtNum,
  fmtTime,
  fmtUsd,
  genericTable,
  h,
  jsonBlock,
  jsonLine,
  section,
  table,
  toMs,
  topStep,
} from "./dom.js";
import { graphOf } from "./page_flows.js";
import { SCORES_NOTE } from "./page_models.js";
import { normalizeReview, reviewCard } from "./page_reviews.js";
import { runLink } from "./page_runs.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** Whether two events are the same record (a live announcement and its durable event). */
const same = (a, b) =>
  a.kind === b.kind && (a.step ?? null) === (b.step ?? null) && Number(a.attempt) === Number(b.attempt);

/** All events of a run after `after` (the API may page them). */
export async function fetchEvents(runId, { after = 0, kind = "", signal } = {}) {
  const out = [];
  let last = after;
  for (let page = 0; page < 200; page++) {
    const data = await api(path(["runs", runId, "events"], { after: last || "", kind }), { signal });
    const evs = asList(data, "events");
    if (!evs.length) break;
    out.push(...evs);
    const maxSeq = Math.max(...evs.map((e) => Number(e.seq) || 0));
    if (maxSeq <= last) break;
    last = maxSeq;
    const more = data && !Array.isArray(data) && (data.more ?? data.has_more ?? data.next_after);
    if (!more && !(data && data.limit && evs.length >= data.limit)) break;
  }
  return out;
}

/** Step rows for the Gantt from the event log: one segment per attempt, one per review wait. */
export function timelineFromEvents(events, runStatus) {
  const rows = new Map();
  const row = (id) => {
    if (!rows.has(id)) rows.set(id, { step: id, status: "pending", attempts: 0, ms: null, error: null, segments: [] });
    return rows.get(id);
  };
  const open = (r) => {
    const seg = r.segments[r.segments.length - 1];
    return seg && seg.end === null ? seg : null;
  };
  for (const e of events) {
    if (!e.step) continue;
    const ts = toMs(e.ts);
    const d = e.data || {};
    const r = row(e.step);
    switch (e.kind) {
      case "step_started":
        r.attempts = Math.max(r.attempts, Number(e.attempt) || 1);
        r.status = "running";
        r.segments.push({ start: ts, end: null, status: "running", kind: "attempt", label: `attempt ${e.attempt}` });
        break;
      case "step_succeeded": {
        const seg = open(r);
        const st = d.cached ? "succeeded (cached)" : d.copied_from ? "copied" : "succeeded";
        if (seg) Object.assign(seg, { end: ts, status: st });
        else r.segments.push({ start: ts, end: ts, status: st, kind: "attempt", label: d.reviewed ? `reviewed: ${d.reviewed}` : "" });
        r.status = st;
        if (d.ms !== undefined) r.ms = d.ms;
        break;
      }
      case "step_failed": {
        const seg = open(r);
        if (seg) Object.assign(seg, { end: ts, status: "failed" });
        else r.segments.push({ start: ts, end: ts, status: "failed", kind: "attempt", label: "" });
        r.status = "failed";
        r.error = d.error ?? null;
        break;
      }
      case "step_retried": {
        const seg = open(r);
        if (seg) Object.assign(seg, { end: ts, status: "retrying", label: `${seg.label}: ${jsonLine(d.error ?? "", 80)}` });
        r.status = "retrying";
        break;
      }
      case "step_skipped":
        r.segments.push({ start: ts, end: ts, status: "skipped", kind: "attempt", label: "" });
        r.status = "skipped";
        break;
      case "review_requested": {
        const seg = open(r);
        if (seg) Object.assign(seg, { end: ts, status: "succeeded", label: `${seg.label} (proposal)` });
        r.segments.push({ start: ts, end: null, status: "waiting", kind: "wait", label: "waiting for review" });
        r.status = "waiting";
        break;
      }
      case "review_resolved": {
        const seg = open(r);
        if (seg) Object.assign(seg, { end: ts, status: String(d.decision ?? "resolved"), label: `review: ${d.decision ?? ""}` });
        break;
      }
      default:
        break;
    }
  }
  const end = events.length ? toMs(events[events.length - 1].ts) : null;
  for (const r of rows.values()) {
    if (TERMINAL.has(runStatus)) {
      // a run that ended closes what was still open (a crash leaves attempts without an end)
      for (const seg of r.segments) if (seg.end === null) Object.assign(seg, { end, status: seg.kind === "wait" ? "waiting" : "cancelled" });
    }
  }
  // each step's map elements, loop iterations and sub-flow steps right under it
  const all = [...rows.values()].filter((r) => r.segments.length);
  const firstOfTop = new Map();
  all.forEach((r, i) => {
    const top = topStep(r.step);
    if (!firstOfTop.has(top)) firstOfTop.set(top, i);
  });
  return all
    .map((r, i) => ({ r, i, top: firstOfTop.get(topStep(r.step)), own: topStep(r.step) === r.step ? 0 : 1 }))
    .sort((a, b) => a.top - b.top || a.own - b.own || a.i - b.i)
    .map((x) => x.r);
}

function stepRowsFromApi(data) {
  const steps = asList(data && (data.steps ?? data.timeline ?? (data.run && data.run.steps)));
  return steps.map((st) => ({
    step: st.step ?? st.id ?? st.name,
    status: st.cached ? "succeeded (cached)" : st.copied_from ? "copied" : st.status ?? "",
    review: st.review ?? null,
    attempts: st.attempts ?? null,
    ms: st.ms ?? null,
    started: st.started ?? st.started_at ?? st.start ?? null,
    ended: st.ended ?? st.ended_at ?? st.end ?? null,
    error: st.error ?? null,
  }));
}

function topStatuses(rows) {
  const by = new Map();
  for (const r of rows) {
    const top = topStep(r.step);
    const list = by.get(top) || [];
    list.push(String(r.status || ""));
    by.set(top, list);
  }
  const out = new Map();
  for (const [top, sts] of by) {
    const has = (x) => sts.some((v) => v.startsWith(x));
    out.set(
      top,
      has("failed") ? "failed" : has("waiting") ? "waiting" : has("running") || has("retrying") ? "running" : sts.every((v) => v.startsWith("skipped")) ? "skipped" : has("pending") ? "running" : sts[sts.length - 1],
    );
  }
  return out;
}

function sumCosts(events) {
  const per = new Map();
  const total = { calls: 0, errors: 0, in: 0, out: 0, cost: 0 };
  for (const e of events) {
    if (e.kind !== "model_called") continue;
    const d = e.data || {};
    const name = String(d.model ?? "?");
    const m = per.get(name) || { model: name, calls: 0, errors: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0, latency: [] };
    m.calls++;
    total.calls++;
    if (d.status === "error") {
      m.errors++;
      total.errors++;
    }
    m.input_tokens += Number(d.input_tokens) || 0;
    m.output_tokens += Number(d.output_tokens) || 0;
    m.cost_usd += Number(d.cost_usd) || 0;
    if (typeof d.latency_ms === "number") m.latency.push(d.latency_ms);
    total.in += Number(d.input_tokens) || 0;
    total.out += Number(d.output_tokens) || 0;
    total.cost += Number(d.cost_usd) || 0;
    per.set(name, m);
  }
  return { per: [...per.values()], total };
}

function stat(label, value, cls) {
  return h("div", { class: ["stat", cls] }, h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label));
}

function candidatesView(c) {
  if (!Array.isArray(c)) return c == null ? "" : jsonLine(c, 200);
  return h(
    "ul",
    { class: "candidates" },
    c.map((x) => {
      if (x === null || typeof x !== "object") return h("li", null, String(x));
      const name = x.model ?? x.name ?? x.id ?? "?";
      const rest = Object.entries(x)
        .filter(([k]) => !["model", "name", "id"].includes(k))
        .map(([k, v]) => `${k}=${typeof v === "number" ? (k.includes("cost") ? fmtUsd(v) : fmtNum(v, 4)) : jsonLine(v, 60)}`);
      return h("li", null, h("strong", null, String(name)), rest.length ? ` ${rest.join(", ")}` : "");
    }),
  );
}

function findingsView(findings) {
  if (!Array.isArray(findings) || !findings.length) return h("span", { class: "muted" }, "none");
  return h(
    "ul",
    { class: "findings" },
    findings.map((f) =>
      h(
        "li",
        { class: "finding" },
        h("code", null, String(f.data ?? f.kind ?? "?")),
        f.start !== undefined ? ` [${f.start}–${f.end}]` : "",
        f.score !== undefined ? ` score ${fmtNum(f.score, 3)}` : "",
        f.action ? [" → ", h("span", { class: `act act-${String(f.action).replace(/[^a-z_]/g, "")}` }, String(f.action))] : "",
        f.rule ? h("span", { class: "muted" }, ` (${f.rule})`) : "",
      ),
    ),
  );
}

function scoresView(scores) {
  if (!scores || typeof scores !== "object") return "";
  return Object.entries(scores)
    .map(([k, v]) => `${k} ${typeof v === "number" ? fmtNum(v, 3) : jsonLine(v, 30)}`)
    .join(", ");
}

function lineageView(data) {
  if (!data || typeof data !== "object" || !data.step || typeof data.step !== "object") return jsonBlock(data);
  const stepCard = (st, title) => {
    const parts = [h("h3", null, title, " ", h("code", null, String(st.step)), " ", badge(st.status ?? "?"))];
    if (st.deps && st.deps.length) parts.push(h("p", { class: "small" }, "depends on: ", st.deps.join(", ")));
    if (st.output) parts.push(h("p", { class: "small mono" }, `output sha256 ${st.output.sha256 ?? ""} (${st.output.bytes ?? "?"} bytes)`));
    if (st.cached) parts.push(h("p", { class: "small" }, "output from the cache"));
    if (st.copied_from) parts.push(h("p", { class: "small" }, "copied from run ", String(st.copied_from)));
    const pv = st.provenance && typeof st.provenance === "object" ? st.provenance : null;
    if (pv && pv.label === "untrusted") {
      const whence = [...asList(pv.sources).map(String), ...asList(pv.from_steps).map((x) => `step ${x}`)];
      parts.push(h("p", { class: "small provenance-untrusted" }, badge("untrusted"), " content from ", whence.join(", ")));
    }
    if (pv && asList(pv.contained).length) parts.push(h("h4", null, "containment"), genericTable(asList(pv.contained)));
    for (const k of ["models", "routes", "tools", "policy", "guards", "escalations", "reviews"]) {
      const rows = asList(st[k]);
      if (rows.length) parts.push(h("h4", null, k), genericTable(rows));
    }
    return h("div", { class: "lineage-step", "data-step": st.step }, parts);
  };
  return h(
    "div",
    { class: "lineage" },
    data.graph_note ? h("p", { class: "muted" }, String(data.graph_note)) : null,
    asList(data.inputs).length ? [h("h4", null, "inputs"), genericTable(asList(data.inputs))] : null,
    stepCard(data.step, "step"),
    asList(data.upstream).map((u) => stepCard(u, "upstream")),
  );
}

export async function render(main, runId, ctx) {
  const st = {
    info: null,
    apiSteps: [],
    events: [],
    flows: null,
    kind: ctx.query.get("kind") || "",
    selected: ctx.query.get("step") || "",
    lineage: null,
    live: false,
    // events the stream announced before they were durable (``event: live``): drawn in the
    // timeline and the graph until the durable event arrives
    provisional: [],
    flash: null, // the last decision taken on this page
  };
  const root = h("div", { class: "run-page", id: "run-page", "data-run": runId });
  main.append(root);

  async function loadAll() {
    const [info, events] = await Promise.all([
      api(path(["runs", runId]), { signal: ctx.signal }),
      fetchEvents(runId, { signal: ctx.signal }),
    ]);
    st.info = info;
    st.apiSteps = stepRowsFromApi(info);
    st.events = events;
  }
  async function loadMore() {
    const last = st.events.reduce((m, e) => Math.max(m, Number(e.seq) || 0), 0);
    const [info, more] = await Promise.all([
      api(path(["runs", runId]), { signal: ctx.signal }),
      fetchEvents(runId, { after: last, signal: ctx.signal }),
    ]);
    st.info = info;
    st.apiSteps = stepRowsFromApi(info);
    const seen = new Set(st.events.map((e) => e.seq));
    for (const e of more) if (!seen.has(e.seq)) st.events.push(e);
    st.events.sort((a, b) => a.seq - b.seq);
    st.provisional = st.provisional.filter((p) => !st.events.some((e) => same(e, p)));
  }

  await loadAll();
  try {
    st.flows = asList(await api(path(["flows"]), { signal: ctx.signal }), "flows");
  } catch {
    st.flows = null;
  }
  draw();

  // follow the run while it is not over: SSE through fetch (it carries the key), else polling
  let pollTimer = null;
  let pending = null;
  let following = false;
  const lastSeq = () => st.events.reduce((m, e) => Math.max(m, Number(e.seq) || 0), 0);
  const status = () => (st.info && (st.info.run ? st.info.run.status : st.info.status)) || "";
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        await loadMore();
        draw();
        if (!TERMINAL.has(status()) && status() !== "waiting") startFollow();
      } catch (err) {
        if (!ctx.signal.aborted) console.warn("refresh failed", err);
      }
    }, 150);
  };
  let drawTimer = null;
  const redraw = () => {
    if (!drawTimer) {
      drawTimer = setTimeout(() => {
        drawTimer = null;
        draw();
      }, 100);
    }
  };
  function onMessage(msg) {
    const e = msg.json;
    if (msg.event === "event" && e && e.seq !== undefined) {
      if (!st.events.some((x) => x.seq === e.seq)) {
        st.events.push(e);
        st.events.sort((a, b) => a.seq - b.seq);
      }
      const i = st.provisional.findIndex((p) => same(p, e));
      if (i >= 0) st.provisional.splice(i, 1);
      if (String(e.kind).startsWith("run_") || e.kind === "review_requested") refresh();
      else redraw();
    } else if (msg.event === "live" && e && e.kind) {
      if (!st.events.some((x) => same(x, e))) {
        st.provisional.push({ ...e, seq: null, ts: Date.now() / 1000, provisional: true });
        redraw();
      }
    } else if (msg.event === "end") {
      refresh();
    }
  }
  function startFollow() {
    if (following || pollTimer || ctx.signal.aborted) return;
    following = true;
    st.live = true;
    follow(path(["runs", runId, "follow"], { after: lastSeq() }), onMessage, ctx.signal)
      .then(() => {
        following = false;
        if (ctx.signal.aborted) return;
        st.live = false;
        refresh();
      })
      .catch(() => {
        following = false;
        if (ctx.signal.aborted) return;
        // no stream: poll until the run is over or waits
        pollTimer = setInterval(() => {
          const s = status();
          if (TERMINAL.has(s) || s === "waiting") {
            clearInterval(pollTimer);
            pollTimer = null;
            st.live = false;
            draw();
          } else refresh();
        }, 2000);
      });
  }
  if (!TERMINAL.has(status()) && status() !== "waiting") {
    startFollow();
    draw();
  }
  const ticker = setInterval(() => {
    if (!st.live || !st.ganttHolder || document.visibilityState !== "visible") return;
    if (st.ganttRows.some((r) => r.segments.some((g) => g.end === null))) {
      fill(st.ganttHolder, gantt(st.ganttRows, { now: Date.now(), onSelect: selectStep }));
    }
  }, 500);

  function selectStep(step) {
    st.selected = step;
    ctx.setQuery({ kind: st.kind, step });
    st.lineage = { step, loading: true };
    draw();
    api(path(["runs", runId, "lineage", step]), { signal: ctx.signal })
      .then((data) => {
        st.lineage = { step, data };
        draw();
      })
      .catch((err) => {
        if (ctx.signal.aborted) return;
        st.lineage = { step, error: err };
        draw();
      });
  }

  function draw() {
    const info = st.info && st.info.run ? { ...st.info, ...st.info.run } : st.info || {};
    const events = st.events;
    const runStatus = info.status ?? "";
    const created = toMs(info.created ?? info.created_at);
    const updated = toMs(info.updated ?? info.updated_at);
    const provisional = TERMINAL.has(runStatus) ? [] : st.provisional;
    const rows = timelineFromEvents(provisional.length ? [...events, ...provisional] : events, runStatus);
    const stepRows = st.apiSteps.length ? st.apiSteps : rows.map((r) => ({ ...r, started: r.segments[0]?.start ?? null, ended: r.segments[r.segments.length - 1]?.end ?? null }));
    const costs = sumCosts(events);
    const kinds = (k) => events.filter((e) => e.kind === k);
    const guards = kinds("guard_decided");
    const findingsCount = guards.reduce((n, e) => n + asList(e.data && e.data.findings).length, 0);

    const head = h(
      "div",
      { class: "page-head" },
      h("h1", null, "Run ", h("span", { class: "mono", id: "run-id" }, String(info.run_id ?? runId))),
      badge(runStatus, "big"),
      st.live ? h("span", { class: "live", title: "following the run live" }, "● live") : null,
    );
    const meta = h(
      "dl",
      { class: "meta" },
      h("dt", null, "flow"),
      h("dd", null, h("a", { href: `#/flows/${encodeURIComponent(info.flow ?? "")}` }, String(info.flow ?? "?"))),
      h("dt", null, "started"),
      h("dd", null, fmtTime(created)),
      h("dt", null, "updated"),
      h("dd", null, fmtTime(updated)),
      info.tenant ? [h("dt", null, "tenant"), h("dd", null, String(info.tenant))] : null,
      info.parent_run_id
        ? [h("dt", null, "replay of"), h("dd", null, runLink(info.parent_run_id), info.replay_from ? ` from ${info.replay_from}` : "")]
        : null,
      info.source ? [h("dt", null, "source"), h("dd", { class: "mono" }, String(info.source))] : null,
      info.head_hash ? [h("dt", null, "head hash"), h("dd", { class: "mono small" }, String(info.head_hash))] : null,
    );
    const summary = h(
      "div",
      { class: "stats" },
      TERMINAL.has(runStatus)
        ? stat("duration", created !== null && updated !== null ? fmtDuration(updated - created) : "—")
        : stat(runStatus === "waiting" ? "age (waiting)" : "running for", created !== null ? fmtDuration(Date.now() - created) : "—"),
      stat("steps", String(rows.length)),
      stat("events", String(events.length)),
      stat("model calls", `${costs.total.calls}${costs.total.errors ? ` (${costs.total.errors} errors)` : ""}`),
      stat("tokens in / out", `${fmtNum(costs.total.in)} / ${fmtNum(costs.total.out)}`),
      stat("cost", fmtUsd(costs.total.cost) || "$0", "cost"),
      stat("guard findings", String(findingsCount), findingsCount ? "warn" : null),
    );

    // review (when waiting)
    let reviewSec = null;
    if (runStatus === "waiting") {
      const open = pendingReviews(events).map((e) =>
        normalizeReview({ run_id: info.run_id ?? runId, flow: info.flow, step: e.step, ...(e.data || {}), proposal: e.payload ?? null, requested_at: e.ts }),
      );
      reviewSec = section(
        "Waiting for review",
        open.length
          ? open.map((it) =>
              reviewCard(it, {
                onDone: (res, action) => {
                  st.flash = { action, status: res && res.status, step: it.step };
                  ctx.refreshReviewCount();
                  refresh();
                },
              }),
            )
          : h("p", { class: "muted" }, "The run waits, but no open review was found in its log."),
      );
      reviewSec.id = "run-review";
    }

    const io = h(
      "div",
      { class: "io" },
      h("div", null, h("h3", null, "Inputs"), jsonBlock(info.inputs ?? null)),
      h(
        "div",
        null,
        h("h3", null, info.error ? "Error" : "Output"),
        info.error
          ? h("pre", { class: "json err-text", id: "run-error" }, String(info.error))
          : h("div", { id: "run-output" }, TERMINAL.has(runStatus) ? jsonBlock(info.output ?? null) : h("p", { class: "muted empty" }, "No output yet.")),
      ),
    );

    // while the run is followed, a ticker redraws the chart so running bars grow
    st.ganttRows = rows;
    st.ganttHolder = h("div", { id: "gantt" }, gantt(rows, { now: TERMINAL.has(runStatus) && updated ? updated : Date.now(), onSelect: selectStep }));
    const timelineSec = section(
      "Step timeline",
      st.ganttHolder,
      table(
        stepRows,
        [
          { label: "step", get: (r) => h("button", { type: "button", class: "link mono", onclick: () => selectStep(r.step), title: "show lineage" }, String(r.step)) },
          { label: "status", get: (r) => badge(r.status) },
          { label: "attempts", class: "num", get: (r) => (r.attempts == null ? "" : String(r.attempts)) },
          { label: "started", get: (r) => fmtClock(r.started) },
          { label: "ended", get: (r) => fmtClock(r.ended) },
          { label: "ms", class: "num", get: (r) => (r.ms == null ? "" : fmtNum(r.ms, 1)) },
          { label: "review", get: (r) => (r.review ? String(r.review) : "") },
          { label: "error", get: (r) => (r.error ? h("span", { class: "err-text" }, jsonLine(r.error, 200)) : "") },
        ],
        { empty: "No steps yet.", rowAttrs: (r) => ({ "data-step": r.step, class: r.step === st.selected ? "selected" : null }) },
      ),
    );
    timelineSec.id = "run-timeline";

    let graphBody;
    const flow = st.flows && st.flows.find((f) => f && (f.name === info.flow || f.id === info.flow));
    if (flow) {
      const { nodes, edges } = graphOf(flow);
      graphBody = flowGraph(nodes, edges, { status: topStatuses(rows), onSelect: selectStep });
    } else {
      graphBody = h("p", { class: "muted empty" }, st.flows === null ? "The flows could not be read." : `The flow ${info.flow ?? ""} is not served by this server, so its graph is not known here.`);
    }
    const graphSec = section("Flow graph", graphBody);
    graphSec.id = "run-graph";

    let lineageSec = null;
    if (st.lineage) {
      const l = st.lineage;
      lineageSec = section(
        `Lineage of ${l.step}`,
        l.loading ? h("p", { class: "muted" }, "Loading…") : l.error ? errorBox(l.error) : lineageView(l.data),
        h("button", { type: "button", class: "link", onclick: () => { st.lineage = null; st.selected = ""; ctx.setQuery({ kind: st.kind }); draw(); } }, "close"),
      );
      lineageSec.id = "run-lineage";
    }

    const routes = kinds("route_decided");
    const calls = kinds("model_called");
    const modelsSec = section(
      "Model decisions",
      h("h3", null, "Routing"),
      table(
        routes,
        [
          { label: "time", get: (e) => fmtClock(e.ts) },
          { label: "step", get: (e) => String(e.step ?? "") },
          { label: "router", get: (e) => String(e.data?.router ?? "") },
          { label: "winner", get: (e) => h("strong", null, String(e.data?.winner ?? "")) },
          { label: "reason", get: (e) => jsonLine(e.data?.reason ?? "", 300) },
          { label: "candidates", get: (e) => candidatesView(e.data?.candidates) },
        ],
        { empty: "No routing decisions." },
      ),
      h("h3", null, "Model calls"),
      table(
        calls,
        [
          { label: "time", get: (e) => fmtClock(e.ts) },
          { label: "step", get: (e) => String(e.step ?? "") },
          { label: "model", get: (e) => String(e.data?.model ?? "") },
          { label: "kind", get: (e) => String(e.data?.kind ?? "") },
          { label: "status", get: (e) => badge(e.data?.status ?? "?") },
          { label: "in", class: "num", get: (e) => fmtNum(e.data?.input_tokens) },
          { label: "out", class: "num", get: (e) => fmtNum(e.data?.output_tokens) },
          { label: "cost", class: "num", get: (e) => fmtUsd(e.data?.cost_usd) },
          { label: "latency", class: "num", get: (e) => fmtDuration(e.data?.latency_ms) },
          { label: "error", get: (e) => (e.data?.error ? h("span", { class: "err-text" }, jsonLine(e.data.error, 160)) : "") },
        ],
        { empty: "No model calls." },
      ),
      h("h3", null, "Cost by model"),
      table(
        costs.per,
        [
          { label: "model", get: (m) => m.model },
          { label: "calls", class: "num", get: (m) => String(m.calls) },
          { label: "errors", class: "num", get: (m) => String(m.errors) },
          { label: "tokens in", class: "num", get: (m) => fmtNum(m.input_tokens) },
          { label: "tokens out", class: "num", get: (m) => fmtNum(m.output_tokens) },
          { label: "cost", class: "num", get: (m) => fmtUsd(m.cost_usd) },
          { label: "mean latency", class: "num", get: (m) => (m.latency.length ? fmtDuration(m.latency.reduce((a, b) => a + b, 0) / m.latency.length) : "") },
        ],
        { empty: "No costs." },
      ),
    );
    modelsSec.id = "run-models";

    const policies = kinds("policy_decided");
    const tools = kinds("tool_called");
    const guardSec = section(
      "Guards, policy and tools",
      h("h3", null, "Guard decisions"),
      table(
        guards,
        [
          { label: "time", get: (e) => fmtClock(e.ts) },
          { label: "step", get: (e) => String(e.step ?? "") },
          { label: "checkpoint", get: (e) => String(e.data?.checkpoint ?? "") },
          { label: "subject", get: (e) => String(e.data?.model ?? e.data?.tool ?? "") },
          { label: "action", get: (e) => h("span", { class: `act act-${String(e.data?.action ?? "").replace(/[^a-z_]/g, "")}` }, String(e.data?.action ?? "")) },
          { label: "rule", get: (e) => String(e.data?.rule ?? "") },
          { label: "passed", get: (e) => (e.data?.passed === undefined ? "" : e.data.passed ? "✓" : "✗") },
          { label: "check scores (1 = clean)", get: (e) => scoresView(e.data?.scores) },
          { label: "findings (score = detector's certainty)", get: (e) => findingsView(e.data?.findings) },
        ],
        { empty: "No guard decisions." },
      ),
      guards.length ? h("p", { class: "small muted", id: "guard-scores-note" }, SCORES_NOTE) : null,
      h("h3", null, "Policy decisions"),
      table(
        policies,
        [
          { label: "time", get: (e) => fmtClock(e.ts) },
          { label: "step", get: (e) => String(e.step ?? "") },
          { label: "resource", get: (e) => String(e.data?.resource ?? e.data?.tool ?? e.data?.model ?? "") },
          { label: "action", get: (e) => h("span", { class: `act act-${String(e.data?.action ?? "").replace(/[^a-z_]/g, "")}` }, String(e.data?.action ?? "")) },
          { label: "rule", get: (e) => String(e.data?.rule ?? "") },
        ],
        { empty: "No policy decisions." },
      ),
      h("h3", null, "Tool calls"),
      table(
        tools,
        [
          { label: "time", get: (e) => fmtClock(e.ts) },
          { label: "step", get: (e) => String(e.step ?? "") },
          { label: "tool", get: (e) => String(e.data?.tool ?? "") },
          { label: "arguments", get: (e) => h("span", { class: "mono" }, jsonLine(e.data?.arguments ?? "", 200)) },
          { label: "status", get: (e) => String(e.data?.status ?? "") },
          { label: "ms", class: "num", get: (e) => fmtNum(e.data?.ms, 1) },
        ],
        { empty: "No tool calls." },
      ),
    );
    guardSec.id = "run-guards";

    const reviewsLog = events.filter((e) => e.kind === "review_requested" || e.kind === "review_resolved");
    const reviewLogSec = reviewsLog.length
      ? section(
          "Reviews",
          table(reviewsLog, [
            { label: "time", get: (e) => fmtTime(e.ts) },
            { label: "step", get: (e) => String(e.step ?? "") },
            { label: "event", get: (e) => (e.kind === "review_requested" ? "requested" : "resolved") },
            { label: "reason / decision", get: (e) => String(e.kind === "review_requested" ? e.data?.reason ?? "" : e.data?.decision ?? "") },
            { label: "reviewer", get: (e) => String(e.data?.reviewer ?? "") },
            { label: "comment", get: (e) => String(e.data?.comment ?? "") },
            { label: "evidence / grant", get: (e) => (e.data?.evidence != null || e.data?.grant ? jsonLine(e.data?.grant ?? e.data?.evidence, 200) : "") },
          ]),
        )
      : null;
    if (reviewLogSec) reviewLogSec.id = "run-reviews";

    // event log with a kind filter
    const allKinds = [...new Set(events.map((e) => e.kind))].sort();
    const kindSel = h(
      "select",
      { id: "event-kind", "aria-label": "event kind" },
      h("option", { value: "" }, "all kinds"),
      allKinds.map((k) => h("option", { value: k, selected: k === st.kind }, k)),
    );
    kindSel.addEventListener("change", () => {
      st.kind = kindSel.value;
      ctx.setQuery({ kind: st.kind, step: st.selected });
      draw();
    });
    const shown = events.filter((e) => !st.kind || e.kind === st.kind);
    const t0 = events.length ? toMs(events[0].ts) : 0;
    const logSec = section(
      "Event log",
      h("div", { class: "filters" }, kindSel, h("span", { class: "muted" }, `${shown.length} of ${events.length} events`)),
      table(
        shown,
        [
          { label: "seq", class: "num", get: (e) => String(e.seq) },
          { label: "time", get: (e) => h("span", { title: fmtTime(e.ts) }, `+${fmtDuration(toMs(e.ts) - t0)}`) },
          { label: "kind", get: (e) => h("span", { class: `kind k-${String(e.kind).replace(/[^a-z_.]/g, "")}` }, String(e.kind)) },
          { label: "step", get: (e) => String(e.step ?? "") },
          { label: "attempt", class: "num", get: (e) => (e.attempt ? String(e.attempt) : "") },
          { label: "data", get: (e) => eventDetail(e) },
        ],
        { empty: "No events.", rowAttrs: (e) => ({ "data-seq": e.seq, "data-kind": e.kind }) },
      ),
    );
    logSec.id = "run-events";

    const flash = st.flash
      ? h(
          "div",
          { class: "flash", id: "run-flash", role: "status" },
          `Decision recorded: ${st.flash.action}${st.flash.step ? ` (step ${st.flash.step})` : ""}.`,
          st.flash.status ? [" The run is now ", badge(st.flash.status), "."] : "",
        )
      : null;
    fill(root, head, flash, meta, summary, reviewSec, section("Inputs and result", io), timelineSec, lineageSec, graphSec, modelsSec, guardSec, reviewLogSec, logSec);
  }

  return () => {
    if (pollTimer) clearInterval(pollTimer);
    if (pending) clearTimeout(pending);
    if (drawTimer) clearTimeout(drawTimer);
    clearInterval(ticker);
  };
}

function eventDetail(e) {
  const hasData = e.data && Object.keys(e.data).length;
  const hasPayload = e.payload !== undefined && e.payload !== null;
  if (!hasData && !hasPayload) return "";
  const line = h("span", { class: "mono" }, hasData ? jsonLine(e.data, 140) : "", hasPayload ? h("span", { class: "muted" }, `${hasData ? " · " : ""}payload ${jsonLine(e.payload, 100)}`) : null);
  const details = h("details", null, h("summary", null, line));
  details.addEventListener(
    "toggle",
    () => {
      if (details.open && details.childNodes.length === 1) {
        add(details, hasData ? jsonBlock(e.data) : null, hasPayload ? [h("div", { class: "label" }, "payload"), jsonBlock(e.payload)] : null);
      }
    },
  );
  return details;
}

/** review_requested events with no review_resolved after them, by step. */
export function pendingReviews(events) {
  const open = new Map();
  for (const e of events) {
    if (e.kind === "review_requested") open.set(e.step, e);
    else if (e.kind === "review_resolved") open.delete(e.step);
  }
  return [...open.values()];
}
