// Inline SVG charts: the step timeline (Gantt), the flow graph, line charts over time.
// Labels are text nodes (s() never parses markup), so step and model names are shown as text.

import { fmtDuration, fmtTime, h, s, statusClass } from "./dom.js";

export const PALETTE = [
  "#2563eb",
  "#dc2626",
  "#16a34a",
  "#d97706",
  "#7c3aed",
  "#0891b2",
  "#db2777",
  "#65a30d",
  "#475569",
  "#ea580c",
];

let uid = 0;

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function truncate(text, max) {
  const t = String(text);
  return t.length > max ? t.slice(0, max - 1) + "…" : t;
}

// --- Gantt -----------------------------------------------------------------------------------

/**
 * rows: [{step, status, segments: [{start, end, status, kind, label}]}] with times in epoch ms;
 * `end` null means still running (drawn up to `now`). onSelect(step) when a row is clicked.
 */
export function gantt(rows, { now = Date.now(), onSelect } = {}) {
  const starts = rows.flatMap((r) => r.segments.map((g) => g.start)).filter((v) => v !== null);
  if (!starts.length) return h("p", { class: "muted empty" }, "No step has started yet.");
  const t0 = Math.min(...starts);
  const ends = rows.flatMap((r) => r.segments.map((g) => (g.end === null ? now : g.end)));
  const t1 = Math.max(t0 + 1, ...ends);
  const span = t1 - t0;
  const labelW = 200;
  const W = 1000;
  const plotW = W - labelW - 20;
  const rowH = 26;
  const top = 24;
  const H = top + rows.length * rowH + 6;
  const x = (t) => labelW + ((t - t0) / span) * plotW;

  const svg = s("svg", {
    class: "gantt",
    viewBox: `0 0 ${W} ${H}`,
    width: "100%",
    role: "img",
    "aria-label": "step timeline",
  });
  const step = niceStep(span, 6);
  for (let v = 0; v <= span + 1e-9; v += step) {
    const gx = x(t0 + v);
    svg.append(
      s("line", { class: "grid", x1: gx, x2: gx, y1: top - 6, y2: H - 4 }),
      s("text", { class: "tick", x: gx, y: 14, "text-anchor": "middle" }, `+${fmtDuration(v)}`),
    );
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const g = s("g", {
      class: ["gantt-row", onSelect ? "clickable" : null],
      "data-step": r.step,
      onclick: onSelect ? () => onSelect(r.step) : null,
    });
    g.append(
      s("rect", { class: "row-bg", x: 0, y, width: W, height: rowH }),
      s("text", { class: "row-label", x: 6, y: y + rowH / 2 + 4 }, truncate(r.step, 28)),
    );
    for (const seg of r.segments) {
      if (seg.start === null) continue;
      const end = seg.end === null ? now : seg.end;
      const bx = x(seg.start);
      const bw = Math.max(2, x(end) - bx);
      const cls = seg.kind === "wait" ? "wait" : `st-${statusClass(seg.status)}`;
      const dur = end - seg.start;
      const tip =
        `${r.step}${seg.label ? " · " + seg.label : ""}: ${seg.status}` +
        `\nstart ${fmtTime(seg.start)} (+${fmtDuration(seg.start - t0)})` +
        `\n${seg.end === null ? "running for" : "took"} ${fmtDuration(dur)}`;
      g.append(
        s(
          "rect",
          {
            class: ["bar", cls],
            x: bx,
            y: y + 5,
            width: bw,
            height: rowH - 10,
            rx: 3,
            "data-status": seg.status,
          },
          s("title", null, tip),
        ),
      );
    }
    const last = r.segments[r.segments.length - 1];
    if (last && last.start !== null) {
      const end = last.end === null ? now : last.end;
      const total = r.ms ?? end - r.segments[0].start;
      const tx = Math.min(x(end) + 6, W - 4);
      const anchor = x(end) + 6 > W - 90 ? "end" : "start";
      g.append(
        s(
          "text",
          { class: "bar-label", x: anchor === "end" ? x(r.segments[0].start) - 6 : tx, y: y + rowH / 2 + 4, "text-anchor": anchor },
          `${fmtDuration(total)}${r.attempts > 1 ? ` · ${r.attempts} attempts` : ""}`,
        ),
      );
    }
    svg.append(g);
  });
  return h("div", { class: "chart-wrap" }, svg);
}

// --- flow graph ------------------------------------------------------------------------------

/**
 * nodes: [{id, label, kind}], edges: [[from, to]], status: Map(id -> status).
 * A layered left-to-right layout (layer = longest path from a root).
 */
export function flowGraph(nodes, edges, { status = new Map(), onSelect } = {}) {
  if (!nodes.length) return h("p", { class: "muted empty" }, "This flow has no steps.");
  const ids = nodes.map((n) => n.id);
  const known = new Set(ids);
  const es = edges.filter(([a, b]) => known.has(a) && known.has(b) && a !== b);
  const preds = new Map(ids.map((id) => [id, []]));
  for (const [a, b] of es) preds.get(b).push(a);
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0; // a cycle (loops are drawn as one node): break it
    visiting.add(id);
    const d = preds.get(id).reduce((m, p) => Math.max(m, depth(p) + 1), 0);
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  ids.forEach(depth);
  const layers = [];
  for (const id of ids) (layers[layer.get(id)] ||= []).push(id);
  // order each layer by the mean position of its predecessors (fewer crossings)
  const pos = new Map();
  layers.forEach((ls, li) => {
    if (li > 0) {
      const key = (id) => {
        const ps = preds.get(id).map((p) => pos.get(p)).filter((v) => v !== undefined);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 1e9;
      };
      ls.sort((a, b) => key(a) - key(b));
    }
    ls.forEach((id, i) => pos.set(id, i));
  });

  const nodeW = 160;
  const nodeH = 38;
  const gapX = 56;
  const gapY = 18;
  const pad = 12;
  const maxRows = Math.max(...layers.map((l) => l.length));
  const W = pad * 2 + layers.length * nodeW + (layers.length - 1) * gapX;
  const H = pad * 2 + maxRows * nodeH + (maxRows - 1) * gapY;
  const at = new Map();
  layers.forEach((ls, li) => {
    const colH = ls.length * nodeH + (ls.length - 1) * gapY;
    const y0 = pad + (H - pad * 2 - colH) / 2;
    ls.forEach((id, i) => at.set(id, { x: pad + li * (nodeW + gapX), y: y0 + i * (nodeH + gapY) }));
  });

  const marker = `arrow-${++uid}`;
  const svg = s(
    "svg",
    {
      class: "graph",
      viewBox: `0 0 ${W} ${H}`,
      width: Math.min(W, 1100),
      role: "img",
      "aria-label": "flow graph",
    },
    s(
      "defs",
      null,
      s(
        "marker",
        { id: marker, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }),
      ),
    ),
  );
  for (const [a, b] of es) {
    const p = at.get(a);
    const q = at.get(b);
    const x1 = p.x + nodeW;
    const y1 = p.y + nodeH / 2;
    const x2 = q.x;
    const y2 = q.y + nodeH / 2;
    const mx = (x1 + x2) / 2;
    svg.append(
      s("path", {
        class: "edge",
        d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`,
        "marker-end": `url(#${marker})`,
        "data-from": a,
        "data-to": b,
      }),
    );
  }
  for (const n of nodes) {
    const p = at.get(n.id);
    const st = status.get(n.id);
    const g = s("g", {
      class: ["node", st ? `st-${statusClass(st)}` : "st-none", onSelect ? "clickable" : null],
      "data-node": n.id,
      transform: `translate(${p.x} ${p.y})`,
      onclick: onSelect ? () => onSelect(n.id) : null,
    });
    const second = [st, n.kind].filter(Boolean).join(" · ");
    g.append(
      s("rect", { width: nodeW, height: nodeH, rx: 6 }),
      s("text", { class: "node-label", x: 10, y: second ? 16 : 23 }, truncate(n.label ?? n.id, 22)),
    );
    if (second) g.append(s("text", { class: "node-kind", x: 10, y: 31 }, truncate(second, 27)));
    g.append(s("title", null, `${n.id}${n.title ? ` = ${n.title}` : ""}${n.kind ? ` (${n.kind})` : ""}${st ? `: ${st}` : ""}`));
    svg.append(g);
  }
  return h("div", { class: "chart-wrap graph-wrap" }, svg);
}

// --- line chart ------------------------------------------------------------------------------

/**
 * series: [{name, points: [[t_ms, value]]}]; one line per series with a legend. `from` and `to`
 * (epoch ms) fix the time axis to a window (the span the user chose), so that points that all
 * fall in one bucket are drawn where they are in it, not on an axis of their own.
 */
export function lineChart(series, { yFormat = (v) => String(v), title = "", empty = "No data yet.", yMin = 0, yMax, from, to } = {}) {
  const all = series.flatMap((sr) => sr.points);
  if (!all.length) return h("div", { class: "chart" }, h("h3", null, title), h("p", { class: "muted empty" }, empty));
  const W = 560;
  const H = 240;
  const R = 12;
  const T = 12;
  const B = 34;
  let tMin = Math.min(...all.map((p) => p[0]), ...(Number.isFinite(from) ? [from] : []));
  let tMax = Math.max(...all.map((p) => p[0]), ...(Number.isFinite(to) ? [to] : []));
  if (tMax === tMin) {
    tMin -= 30000;
    tMax += 30000;
  }
  let vMax = yMax ?? Math.max(...all.map((p) => p[1]));
  const vMin = Math.min(yMin, ...all.map((p) => p[1]));
  if (vMax === vMin) vMax = vMin + 1;
  const vStep = niceStep(vMax - vMin, 4);
  const yTicks = [];
  for (let v = Math.ceil(vMin / vStep) * vStep; v <= vMax + vStep * 1e-6; v += vStep) yTicks.push(v);
  const L = Math.max(40, 12 + Math.max(...yTicks.map((v) => yFormat(v).length)) * 6.6);
  const x = (t) => L + ((t - tMin) / (tMax - tMin)) * (W - L - R);
  const y = (v) => T + (1 - (v - vMin) / (vMax - vMin)) * (H - T - B);
  const svg = s("svg", { class: "line-chart", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": title });
  for (const v of yTicks) {
    svg.append(
      s("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s("text", { class: "tick", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, yFormat(v)),
    );
  }
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const t = tMin + ((tMax - tMin) * i) / ticks;
    const label = fmtTime(t);
    const sameDay = tMax - tMin < 86400000;
    svg.append(
      s(
        "text",
        { class: "tick xtick", x: x(t), y: H - 12, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" },
        sameDay ? label.slice(11, 16) : label.slice(5, 16),
      ),
    );
  }
  svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const legend = h("div", { class: "legend" });
  series.forEach((sr, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = [...sr.points].sort((a, b) => a[0] - b[0]);
    const g = s("g", { class: "series", "data-series": sr.name });
    if (pts.length > 1) {
      g.append(
        s("polyline", {
          points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
          fill: "none",
          stroke: color,
          "stroke-width": 2,
        }),
      );
    }
    for (const p of pts) {
      g.append(
        s(
          "circle",
          { cx: x(p[0]), cy: y(p[1]), r: 3, fill: color },
          s("title", null, `${sr.name} · ${fmtTime(p[0])}: ${yFormat(p[1])}`),
        ),
      );
    }
    svg.append(g);
    legend.append(h("span", { class: "legend-item" }, h("span", { class: "swatch", style: { background: color } }), sr.name));
  });
  return h("div", { class: "chart" }, h("h3", null, title), svg, legend);
}
