// DOM helpers. Everything that comes from data goes into the page as text nodes or attribute
// values set one by one: no HTML string is ever parsed, so a run whose output holds markup
// shows that markup as text.

const SVG_NS = "http://www.w3.org/2000/svg";

function safeHref(value) {
  const v = String(value);
  // in-app links and same-origin paths only (never javascript:, data:, or another host)
  if (v.startsWith("#") || (v.startsWith("/") && !v.startsWith("//"))) return v;
  return "#";
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : String(v));
    } else if (k === "dataset") {
      for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    } else if (k === "value") {
      el.value = String(v);
    } else if (k === "checked" || k === "selected" || k === "disabled") {
      el[k] = Boolean(v);
    } else if (k === "href") {
      el.setAttribute("href", safeHref(v));
    } else if (k === "style") {
      for (const [sk, sv] of Object.entries(v)) el.style.setProperty(sk, String(sv));
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** An HTML element: h("td", {class: "num"}, "text", otherNode, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Append children (nodes, text, arrays; null / undefined / false are left out). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  return add(clear(el), ...children);
}

/** A pretty-printed JSON block, folded when long. */
export function jsonBlock(value, { open = false, limit = 4000 } = {}) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = "null";
  const pre = h("pre", { class: "json" });
  if (text.length <= limit || open) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, limit) + "\n…";
  const more = h(
    "button",
    {
      type: "button",
      class: "link",
      onclick: () => {
        pre.textContent = text;
        more.remove();
      },
    },
    `show all ${text.length.toLocaleString()} characters`,
  );
  return h("div", { class: "json-wrap" }, pre, more);
}

/** A one-line JSON summary of a value (for table cells). */
export function jsonLine(value, max = 160) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) return "";
  return text.length > max ? text.slice(0, max) + "…" : text;
}

// --- formatting -------------------------------------------------------------------------------

/** Any timestamp the API may give (epoch seconds, epoch ms, ISO string) as epoch ms, or null. */
export function toMs(v) {
  if (v === null || v === undefined || v === "") return null;
  if (typeof v === "number") return v > 1e11 ? v : v * 1000;
  const n = Number(v);
  if (!Number.isNaN(n)) return toMs(n);
  const t = Date.parse(String(v));
  return Number.isNaN(t) ? null : t;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

export function fmtTime(v) {
  const ms = toMs(v);
  if (ms === null) return "";
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function fmtClock(v) {
  const ms = toMs(v);
  if (ms === null) return "";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "";
  const v = Number(ms);
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 1000) return `${v.toFixed(v < 10 ? 1 : 0)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  const join = (a, ua, b, ub) => (b ? `${a} ${ua} ${b} ${ub}` : `${a} ${ua}`);
  if (v < 3600000) return join(Math.floor(v / 60000), "min", Math.round((v % 60000) / 1000), "s");
  if (v < 86400000) return join(Math.floor(v / 3600000), "h", Math.round((v % 3600000) / 60000), "min");
  return join(Math.floor(v / 86400000), "d", Math.round((v % 86400000) / 3600000), "h");
}

export function fmtAgo(v) {
  const ms = toMs(v);
  if (ms === null) return "";
  const d = Date.now() - ms;
  if (d < 0) return "just now";
  if (d < 60000) return `${Math.round(d / 1000)} s ago`;
  if (d < 3600000) return `${Math.round(d / 60000)} min ago`;
  if (d < 86400000) return `${Math.round(d / 3600000)} h ago`;
  return `${Math.round(d / 86400000)} d ago`;
}

export function fmtUsd(v) {
  if (v === null || v === undefined || v === "") return "";
  const n = Number(v);
  if (Number.isNaN(n)) return String(v);
  if (n === 0) return "$0";
  if (Math.abs(n) < 1e-4) return `$${n.toExponential(2)}`;
  if (Math.abs(n) < 0.01) return `$${n.toPrecision(3)}`;
  return `$${n.toFixed(4)}`;
}

export function fmtNum(v, digits = 0) {
  if (v === null || v === undefined || v === "") return "";
  const n = Number(v);
  if (Number.isNaN(n)) return String(v);
  return n.toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function fmtPct(v) {
  if (v === null || v === undefined) return "";
  const n = Number(v);
  return Number.isNaN(n) ? String(v) : `${(n * 100).toFixed(1)}%`;
}

// --- small components ------------------------------------------------------------------------

const STATUS_CLASSES = new Set([
  "queued",
  "running",
  "waiting",
  "succeeded",
  "failed",
  "cancelled",
  "skipped",
  "pending",
  "retrying",
  "copied",
  "cached",
]);

/** The CSS status class for a status text ("succeeded (cached)" -> "cached"). */
export function statusClass(status) {
  const s = String(status || "").toLowerCase();
  if (s.includes("cached")) return "cached";
  if (s === "ok" || s === "answered") return "succeeded";
  if (s === "error") return "failed";
  const first = s.split(/[^a-z]/)[0];
  return STATUS_CLASSES.has(first) ? first : "other";
}

export function badge(status, extra) {
  return h("span", { class: ["badge", `st-${statusClass(status)}`, extra] }, String(status ?? "?"));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

export function errorBox(err) {
  const msg = err && err.message ? err.message : String(err);
  return h("div", { class: "error", role: "alert" }, msg);
}

/** A table from rows and column specs: [{label, get(row) -> text|Node, class}]. */
export function table(rows, columns, { empty = "Nothing here.", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      null,
      h("thead", null, h("tr", null, columns.map((c) => h("th", { class: c.class }, c.label)))),
      h(
        "tbody",
        null,
        rows.map((r) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(r) : null,
            columns.map((c) => {
              const v = c.get(r);
              return h("td", { class: c.class }, v instanceof Node ? v : v ?? "");
            }),
          ),
        ),
      ),
    ),
  );
}

/** A table of arbitrary objects: one column per key seen (primitives as text, the rest JSON). */
export function genericTable(rows, { empty, prefer = [] } = {}) {
  const keys = [];
  for (const k of prefer) if (rows.some((r) => r && k in r)) keys.push(k);
  for (const r of rows) {
    if (r && typeof r === "object") for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
  }
  return table(
    rows,
    keys.map((k) => ({
      label: k,
      class: rows.every((r) => r == null || r[k] == null || typeof r[k] === "number") ? "num" : null,
      get: (r) => {
        const v = r == null ? null : r[k];
        if (v === null || v === undefined) return "";
        if (typeof v === "number") return Number.isInteger(v) ? fmtNum(v) : fmtNum(v, 6);
        if (typeof v === "object") return jsonLine(v);
        return String(v);
      },
    })),
    { empty },
  );
}

/** Items of a list response, whatever the envelope ([...], {runs: [...]}, {items: [...]}…). */
export function asList(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    for (const k of [...keys, "items", "data", "results", "rows"]) {
      if (Array.isArray(data[k])) return data[k];
    }
  }
  return [];
}

/** The top-level step of an execution id: "sub/x[2]" -> "sub", "loop#3" -> "loop". */
export function topStep(id) {
  return String(id ?? "")
    .split("/")[0]
    .replace(/\[\d+\]$/, "")
    .replace(/#\d+$/, "");
}
