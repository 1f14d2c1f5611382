// The runs list: filters (status, flow), search, auto-refresh.

import { api, path } from "./api.js";
import { asList, badge, errorBox, fill, fmtAgo, fmtDuration, fmtTime, h, jsonLine, toMs } from "./dom.js";

const STATUSES = ["queued", "running", "waiting", "succeeded", "failed", "cancelled"];

export function runLink(id) {
  return h("a", { href: `#/runs/${encodeURIComponent(id)}`, class: "mono" }, String(id));
}

export async function render(main, ctx) {
  const q = ctx.query;
  const state = {
    status: q.get("status") || "",
    flow: q.get("flow") || "",
    q: q.get("q") || "",
    limit: q.get("limit") || "100",
  };

  const statusSel = h(
    "select",
    { id: "filter-status", name: "status", "aria-label": "status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((st) => h("option", { value: st, selected: st === state.status }, st)),
  );
  const flowSel = h("select", { id: "filter-flow", name: "flow", "aria-label": "flow" }, h("option", { value: "" }, "any flow"));
  const search = h("input", {
    id: "filter-q",
    type: "search",
    name: "q",
    placeholder: "search run id, flow or error…",
    value: state.q,
    size: 40,
  });
  const limitSel = h(
    "select",
    { id: "filter-limit", "aria-label": "limit" },
    ["50", "100", "200", "500"].map((n) => h("option", { value: n, selected: n === state.limit }, `${n} runs`)),
  );
  const auto = h("input", { id: "auto-refresh", type: "checkbox", checked: true });
  const counter = h("span", { class: "muted", id: "runs-count" });
  const body = h("div", { id: "runs-table" }, h("p", { class: "muted" }, "Loading…"));

  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Runs"), counter),
    h(
      "form",
      { class: "filters", id: "runs-filters", onsubmit: (ev) => ev.preventDefault() },
      statusSel,
      flowSel,
      search,
      limitSel,
      h("label", { class: "inline" }, auto, " auto-refresh"),
    ),
    body,
  );

  const flowsSeen = new Set();
  function addFlowOption(name) {
    if (!name || flowsSeen.has(name)) return;
    flowsSeen.add(name);
    flowSel.append(h("option", { value: name, selected: name === state.flow }, name));
  }
  if (state.flow) addFlowOption(state.flow);
  api(path(["flows"]), { signal: ctx.signal })
    .then((data) => asList(data, "flows").forEach((f) => addFlowOption(typeof f === "string" ? f : f.name)))
    .catch(() => {});

  let seq = 0;
  async function load() {
    const mine = ++seq;
    let data;
    try {
      data = await api(path(["runs"], { status: state.status, flow: state.flow, q: state.q, limit: state.limit }), {
        signal: ctx.signal,
      });
    } catch (err) {
      if (ctx.signal.aborted || mine !== seq) return;
      fill(body, errorBox(err));
      return;
    }
    if (mine !== seq) return;
    const runs = asList(data, "runs");
    for (const r of runs) addFlowOption(r.flow);
    counter.textContent = `${runs.length} shown${data && data.total != null ? ` of ${data.total}` : ""}`;
    fill(body, runsTable(runs));
  }

  function changed() {
    state.status = statusSel.value;
    state.flow = flowSel.value;
    state.q = search.value.trim();
    state.limit = limitSel.value;
    ctx.setQuery({ status: state.status, flow: state.flow, q: state.q, limit: state.limit === "100" ? "" : state.limit });
    load();
  }
  statusSel.addEventListener("change", changed);
  flowSel.addEventListener("change", changed);
  limitSel.addEventListener("change", changed);
  let t = null;
  search.addEventListener("input", () => {
    clearTimeout(t);
    t = setTimeout(changed, 250);
  });

  await load();
  const timer = setInterval(() => {
    if (auto.checked && document.visibilityState === "visible") load();
  }, 5000);
  return () => {
    clearInterval(timer);
    clearTimeout(t);
  };
}

export function runsTable(runs, { empty = "No runs match." } = {}) {
  if (!runs.length) return h("p", { class: "muted empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "runs" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          ["run", "flow", "status", "started", "duration", "events", "tenant", "result"].map((c) => h("th", null, c)),
        ),
      ),
      h(
        "tbody",
        null,
        runs.map((r) => {
          const created = toMs(r.created ?? r.created_at ?? r.started);
          const updated = toMs(r.updated ?? r.updated_at ?? r.ended);
          const id = r.run_id ?? r.id;
          let result = "";
          if (r.error) result = h("span", { class: "err-text" }, jsonLine(r.error, 120));
          else if (r.status === "waiting") result = h("span", null, "waiting for review", r.waiting_step ? ` at ${r.waiting_step}` : "");
          else if (r.output !== undefined && r.output !== null) result = h("span", { class: "mono" }, jsonLine(r.output, 120));
          return h(
            "tr",
            { "data-run": id, "data-status": r.status },
            h("td", null, runLink(id), r.parent_run_id ? h("div", { class: "muted small" }, "replay of ", runLink(r.parent_run_id)) : null),
            h("td", null, String(r.flow ?? "")),
            h("td", null, badge(r.status)),
            h("td", { title: fmtAgo(created) }, fmtTime(created)),
            h("td", { class: "num" }, created !== null && updated !== null ? fmtDuration(updated - created) : ""),
            h("td", { class: "num" }, r.events ?? r.head_seq ?? ""),
            h("td", null, String(r.tenant ?? "")),
            h("td", { class: "result" }, result),
          );
        }),
      ),
    ),
  );
}
