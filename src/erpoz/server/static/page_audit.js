// Audit: recompute the hash chains of the runs this key may see, and show the result.

import { api, path } from "./api.js";
import { asList, errorBox, fill, fmtNum, h, section, table } from "./dom.js";
import { runLink } from "./page_runs.js";

function verdict(data) {
  const problems = asList(data && data.problems);
  const ok = data && (data.ok === undefined ? problems.length === 0 : Boolean(data.ok));
  return { ok, problems };
}

export async function render(main, ctx) {
  const result = h("div", { id: "audit-result" }, h("p", { class: "muted" }, "Verifying…"));
  const health = h("div", { id: "health-detail" });
  const again = h("button", { type: "button", id: "audit-again" }, "Verify again");
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Audit"), again),
    h(
      "p",
      { class: "muted" },
      "Every run is an append-only, hash-chained event log. Verifying recomputes each chain and names the first event that was changed, removed or reordered.",
    ),
    section("Hash chains", result),
    section("Server", health),
  );

  async function verify() {
    again.disabled = true;
    fill(result, h("p", { class: "muted" }, "Verifying…"));
    try {
      const data = await api(path(["audit", "verify"]), { signal: ctx.signal });
      const { ok, problems } = verdict(data);
      const facts = [];
      for (const [k, label] of [
        ["runs", "runs"],
        ["events", "events"],
        ["seconds", "seconds"],
        ["events_per_second", "events / s"],
      ]) {
        if (data && data[k] !== undefined && data[k] !== null) facts.push(h("li", null, h("strong", null, fmtNum(data[k], 4)), ` ${label}`));
      }
      fill(
        result,
        h(
          "div",
          { class: ["verdict", ok ? "verdict-ok" : "verdict-bad"], id: "audit-verdict", "data-ok": ok ? "true" : "false" },
          ok ? "✓ All hash chains verify" : `✗ ${problems.length} problem${problems.length === 1 ? "" : "s"} found`,
        ),
        facts.length ? h("ul", { class: "facts" }, facts) : null,
        data && data.heads_digest ? h("p", { class: "small" }, "heads digest ", h("code", null, String(data.heads_digest))) : null,
        problems.length
          ? table(problems, [
              { label: "run", get: (p) => (p.run_id ? runLink(p.run_id) : "") },
              { label: "event", class: "num", get: (p) => String(p.seq ?? "") },
              { label: "what", get: (p) => String(p.what ?? "") },
              { label: "detail", get: (p) => String(p.detail ?? "") },
            ])
          : null,
      );
    } catch (err) {
      if (!ctx.signal.aborted) fill(result, errorBox(err));
    } finally {
      again.disabled = false;
    }
  }
  again.addEventListener("click", verify);

  api(path(["health"]), { signal: ctx.signal })
    .then((d) => {
      const rows = d && typeof d === "object" ? Object.entries(d).map(([k, v]) => ({ k, v })) : [];
      fill(
        health,
        table(rows, [
          { label: "", get: (r) => r.k },
          { label: "", get: (r) => (r.v !== null && typeof r.v === "object" ? JSON.stringify(r.v) : String(r.v)) },
        ]),
      );
    })
    .catch((err) => fill(health, errorBox(err)));

  await verify();
  return null;
}
