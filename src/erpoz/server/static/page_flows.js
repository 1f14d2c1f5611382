// The flows this server can start: inputs and graph.

import { api, path } from "./api.js";
import { flowGraph } from "./charts.js";
import { asList, h, jsonLine, section, table } from "./dom.js";

function nodeOf(n) {
  if (n === null || typeof n !== "object") return { id: String(n), label: String(n), kind: null, deps: [] };
  const id = String(n.id ?? n.step ?? n.name ?? "?");
  const kind = n.kind ?? n.type ?? null;
  // the second line of the node: its kind (tasks are the plain case), flags, output type
  const bits = [];
  if (kind !== null && kind !== "task" && kind !== "step") bits.push(String(kind));
  if (n.review) bits.push("review");
  if (n.cache) bits.push("cache");
  if (n.delivery) bits.push("delivery");
  if (n.output_type) bits.push(`→ ${n.output_type}`);
  return {
    id,
    label: id,
    title: n.label && n.label !== id ? String(n.label) : null,
    kind: bits.length ? bits.join(" · ") : null,
    deps: asList(n.deps ?? n.depends_on ?? n.after ?? []).map(String),
  };
}

function edgeOf(e) {
  if (Array.isArray(e)) return [String(e[0]), String(e[1])];
  if (e && typeof e === "object") {
    const a = e.from ?? e.source ?? e.src ?? e.a;
    const b = e.to ?? e.target ?? e.dst ?? e.b;
    return [String(a), String(b)];
  }
  return null;
}

/** {nodes, edges} of a flow as /api/flows gives it (graph.nodes / nodes / steps; edges or deps). */
export function graphOf(flow) {
  const g = flow && typeof flow.graph === "object" && flow.graph !== null ? flow.graph : flow || {};
  const nodes = asList(g.nodes ?? flow.nodes ?? flow.steps).map(nodeOf);
  let edges = asList(g.edges ?? flow.edges).map(edgeOf).filter(Boolean);
  if (!edges.length) edges = nodes.flatMap((n) => n.deps.map((d) => [d, n.id]));
  return { nodes, edges };
}

/** The inputs of a flow as rows {name, type, default, required}. */
export function inputsOf(flow) {
  const raw = flow && flow.inputs;
  if (Array.isArray(raw)) {
    return raw.map((i) => (i && typeof i === "object" ? i : { name: String(i) }));
  }
  if (raw && typeof raw === "object") {
    return Object.entries(raw).map(([name, v]) => (v && typeof v === "object" ? { name, ...v } : { name, type: v }));
  }
  return [];
}

function flowCard(flow) {
  const name = String(flow.name ?? flow.id ?? "?");
  const { nodes, edges } = graphOf(flow);
  const inputs = inputsOf(flow);
  const card = section(
    name,
    h(
      "p",
      { class: "small" },
      h("a", { href: `#/runs?flow=${encodeURIComponent(name)}` }, "runs of this flow"),
      flow.source ? h("span", { class: "muted mono" }, ` · ${flow.source}`) : null,
      flow.fingerprint ? h("span", { class: "muted mono" }, ` · fingerprint ${flow.fingerprint}`) : null,
    ),
    flow.description ? h("p", null, String(flow.description)) : null,
    flow.output_type ? h("p", { class: "small" }, "output type ", h("code", null, String(flow.output_type))) : null,
    h("h3", null, "Inputs"),
    table(
      inputs,
      [
        { label: "name", get: (i) => h("code", null, String(i.name ?? "")) },
        { label: "type", get: (i) => String(i.type ?? i.annotation ?? "") },
        { label: "required", get: (i) => (i.required === undefined ? ("default" in i ? "no" : "") : i.required ? "yes" : "no") },
        { label: "default", get: (i) => ("default" in i ? jsonLine(i.default) : "") },
      ],
      { empty: "No inputs." },
    ),
    h("h3", null, "Graph"),
    flowGraph(nodes, edges),
  );
  card.dataset.flow = name;
  return card;
}

export async function render(main, only, ctx) {
  const data = await api(path(["flows"]), { signal: ctx.signal });
  const flows = asList(data, "flows").filter((f) => f && typeof f === "object");
  const shown = only ? flows.filter((f) => String(f.name ?? f.id) === only) : flows;
  main.append(
    h("div", { class: "page-head" }, h("h1", null, only ? `Flow ${only}` : "Flows"), only ? h("a", { href: "#/flows" }, "all flows") : null),
  );
  if (!shown.length) {
    main.append(h("p", { class: "muted empty" }, only ? `This server does not serve a flow named ${only}.` : "This server serves no flows."));
    return null;
  }
  for (const f of shown) main.append(flowCard(f));
  return null;
}
