// Models: the configured models and routers, per-model totals, quality, and charts over time.

import { api, path } from "./api.js";
import { lineChart } from "./charts.js";
import {
  asList,
  errorBox,
  fill,
  fmtDuration,
  fmtNum,
  fmtPct,
  fmtTime,
  fmtUsd,
  genericTable,
  h,
  section,
  table,
  toMs,
} from "./dom.js";

/** since -> the bucket that gives about 24–30 points over it. */
const SPANS = [
  ["1h", "2m", "last hour"],
  ["6h", "15m", "last 6 hours"],
  ["24h", "1h", "last 24 hours"],
  ["7d", "6h", "last 7 days"],
  ["30d", "1d", "last 30 days"],
];

/**
 * Series rows of the stats endpoints ([{ts, model, ...}], one per bucket and group) as one
 * line per model: value(rows of that model in that bucket) -> number | null.
 */
export function seriesByModel(rows, value) {
  const by = new Map(); // model -> ts -> rows
  for (const r of asList(rows)) {
    if (!r || typeof r !== "object") continue;
    const model = String(r.model ?? "-");
    const ts = toMs(r.ts);
    if (ts === null) continue;
    if (!by.has(model)) by.set(model, new Map());
    const m = by.get(model);
    if (!m.has(ts)) m.set(ts, []);
    m.get(ts).push(r);
  }
  return [...by.entries()]
    .sort((a, b) => a[0].localeCompare(b[0]))
    .map(([name, buckets]) => ({
      name,
      points: [...buckets.entries()].map(([ts, rs]) => [ts, value(rs)]).filter((p) => p[1] !== null && !Number.isNaN(p[1])),
    }))
    .filter((sr) => sr.points.length);
}

const sum = (rs, k) => rs.reduce((a, r) => a + (Number(r[k]) || 0), 0);

/** What the two kinds of guard score mean (the run page shows both). */
export const SCORES_NOTE =
  "A check's score is 1 − the score of the strongest finding of its guard: 1.000 means the guard " +
  "found nothing and the check passed; a finding's own score is how sure the detector is of it " +
  "(0.93 = fairly sure), so a finding of 0.93 leaves its check a score of 0.07.";

export async function render(main, ctx) {
  const wanted = ctx.query.get("since") || "24h";
  const sinceSel = h(
    "select",
    { id: "chart-since", "aria-label": "time span" },
    SPANS.map(([since, , label]) => h("option", { value: since, selected: since === wanted }, label)),
  );
  const charts = h("div", { id: "model-charts", class: "charts" }, h("p", { class: "muted" }, "Loading…"));
  const note = h("p", { class: "muted small", id: "chart-source" });
  const configured = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const totals = h("div", { id: "model-totals" }, h("p", { class: "muted" }, "Loading…"));
  const quality = h("div", { id: "model-quality" }, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Models"), sinceSel),
    section("Over time", note, charts),
    section("Per model", totals),
    section("Quality (guard checks)", quality),
    section("Configured models and routers", configured),
  );

  api(path(["models"]), { signal: ctx.signal })
    .then((d) => {
      const budget = d && d.budget;
      fill(
        configured,
        h("h3", null, "Models"),
        genericTable(asList(d, "models"), { empty: "No models configured.", prefer: ["name", "kind", "provider"] }),
        h("h3", null, "Routers"),
        genericTable(asList(d && d.routers), { empty: "No routers configured.", prefer: ["name", "type", "members"] }),
        budget ? [h("h3", null, "Budget"), genericTable([budget])] : null,
      );
    })
    .catch((err) => fill(configured, errorBox(err)));

  async function load() {
    const since = sinceSel.value;
    const bucket = (SPANS.find((x) => x[0] === since) || SPANS[2])[1];
    fill(charts, h("p", { class: "muted" }, "Loading…"));
    const [stats, qual] = await Promise.all([
      api(path(["stats", "models"], { since, bucket }), { signal: ctx.signal }),
      api(path(["stats", "quality"], { since, bucket }), { signal: ctx.signal }),
    ]);
    fill(
      totals,
      h("p", { class: "small muted" }, `${stats.runs ?? "?"} runs in the span.`),
      table(
        asList(stats, "models"),
        [
          { label: "model", get: (r) => String(r.model ?? "") },
          { label: "calls", class: "num", get: (r) => fmtNum(r.calls) },
          { label: "errors", class: "num", get: (r) => fmtNum(r.errors) },
          { label: "error rate", class: "num", get: (r) => fmtPct(r.error_rate) },
          { label: "tokens in", class: "num", get: (r) => fmtNum(r.input_tokens) },
          { label: "tokens out", class: "num", get: (r) => fmtNum(r.output_tokens) },
          { label: "cost", class: "num", get: (r) => fmtUsd(r.cost_usd) },
          { label: "p50 latency", class: "num", get: (r) => fmtDuration(r.p50_ms) },
          { label: "p95 latency", class: "num", get: (r) => fmtDuration(r.p95_ms) },
        ],
        { empty: "No model calls recorded in this span." },
      ),
    );
    const rows = asList(qual, "rows").filter((r) => r && typeof r === "object");
    fill(
      quality,
      h(
        "p",
        { class: "small muted" },
        `${qual.checks ?? 0} checks over ${qual.runs ?? "?"} runs; rolling window ${qual.window ?? "?"}, ` +
          `alert below ${fmtPct(qual.threshold)}; ${qual.alerts_recorded ?? 0} alerts recorded.`,
      ),
      h("p", { class: "small muted", id: "quality-scores-note" }, SCORES_NOTE),
      table(
        rows,
        [
          { label: "model / tool", get: (r) => String(r.model ?? "") },
          { label: "step", get: (r) => String(r.step ?? "") },
          { label: "guard", get: (r) => String(r.guard ?? "") },
          { label: "checkpoints", get: (r) => asList(r.checkpoints).join(", ") },
          { label: "checks", class: "num", get: (r) => fmtNum(r.checks) },
          { label: "passed", class: "num", get: (r) => fmtPct(r.pass_rate) },
          { label: "mean check score", class: "num", get: (r) => fmtNum(r.mean_score, 3) },
          { label: "rolling", class: "num", get: (r) => fmtPct(r.rolling_pass_rate) },
          { label: "alert", get: (r) => (r.below_threshold ? h("span", { class: "err-text" }, "below threshold") : "") },
          { label: "alerts", class: "num", get: (r) => fmtNum(r.alerts_recorded ?? 0) },
          { label: "last check", get: (r) => fmtTime(r.last_ts) },
        ],
        { empty: "No guard checks recorded in this span.", rowAttrs: (r) => ({ class: r.below_threshold ? "alerting" : null }) },
      ),
    );
    const bucketS = stats.bucket_s ?? qual.bucket_s;
    note.textContent =
      `From the series of /api/stats/models and /api/stats/quality (since=${since}, ` +
      `bucket=${bucket}${bucketS ? `, ${fmtDuration(bucketS * 1000)} per point` : ""}); each point is one bucket.`;
    const ms = stats.series;
    // the axis spans the window chosen, whatever the points: from the cutoff to now
    const from = toMs(stats.cutoff_ts ?? qual.cutoff_ts);
    const window = { from: from ?? undefined, to: from === null ? undefined : Date.now() };
    fill(
      charts,
      lineChart(seriesByModel(ms, (rs) => sum(rs, "cost_usd")), { ...window, title: "Cost per model (USD per bucket)", yFormat: (v) => fmtUsd(v) }),
      lineChart(
        seriesByModel(ms, (rs) => {
          const v = rs.map((r) => r.p50_ms).filter((x) => typeof x === "number");
          return v.length ? Math.max(...v) : null;
        }),
        { ...window, title: "Latency per model (p50 of successful calls)", yFormat: (v) => fmtDuration(v) },
      ),
      lineChart(seriesByModel(ms, (rs) => sum(rs, "calls")), { ...window, title: "Calls per model", yFormat: (v) => fmtNum(v, 2) }),
      lineChart(
        seriesByModel(qual.series, (rs) => {
          const n = sum(rs, "checks");
          return n ? sum(rs, "passes") / n : null;
        }),
        { ...window, title: "Quality: guard pass rate per model", yFormat: (v) => fmtPct(v), yMax: 1, empty: "No guard checks in this span." },
      ),
    );
  }
  sinceSel.addEventListener("change", () => {
    ctx.setQuery({ since: sinceSel.value });
    load().catch((err) => {
      if (!ctx.signal.aborted) fill(charts, errorBox(err));
    });
  });
  try {
    await load();
  } catch (err) {
    if (!ctx.signal.aborted) fill(charts, errorBox(err));
  }
  return null;
}
