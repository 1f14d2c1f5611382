// The erpoz dashboard: hash routes, the API key, the pages.

import { api, getKey, path, setKey } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import * as audit from "./page_audit.js";
import * as flows from "./page_flows.js";
import * as models from "./page_models.js";
import * as reviews from "./page_reviews.js";
import * as run from "./page_run.js";
import * as runs from "./page_runs.js";

const main = document.getElementById("main");
let current = null; // {controller, cleanup}

/** "#/runs/abc?tab=x" -> {parts: ["runs", "abc"], query: URLSearchParams} */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [p, q] = raw.split("?", 2);
  const parts = p.split("/").filter(Boolean).map((x) => {
    try {
      return decodeURIComponent(x);
    } catch {
      return x;
    }
  });
  return { parts, query: new URLSearchParams(q || "") };
}

/** Replace the hash's query without re-rendering the page (filters keep their state in it). */
export function setQuery(query) {
  const { parts } = parseHash();
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== "") qs.set(k, String(v));
  const hash = "#/" + parts.map(encodeURIComponent).join("/") + (qs.toString() ? "?" + qs : "");
  history.replaceState(null, "", hash);
}

async function route() {
  if (current) {
    current.controller.abort();
    if (current.cleanup) {
      try {
        current.cleanup();
      } catch {
        /* ignore */
      }
    }
  }
  const controller = new AbortController();
  current = { controller, cleanup: null };
  const { parts, query } = parseHash();
  const name = parts[0] || "runs";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === (name === "run" ? "runs" : name));
  }
  clear(main);
  const ctx = { signal: controller.signal, query, setQuery, refreshReviewCount };
  try {
    let cleanup = null;
    if (name === "runs" && parts[1]) cleanup = await run.render(main, parts[1], ctx);
    else if (name === "runs") cleanup = await runs.render(main, ctx);
    else if (name === "reviews") cleanup = await reviews.render(main, ctx);
    else if (name === "models") cleanup = await models.render(main, ctx);
    else if (name === "flows") cleanup = await flows.render(main, parts[1] || null, ctx);
    else if (name === "audit") cleanup = await audit.render(main, ctx);
    else main.append(h("p", null, "No such page. ", h("a", { href: "#/runs" }, "Back to the runs")));
    if (current && current.controller === controller) current.cleanup = cleanup;
    else if (cleanup) cleanup();
  } catch (err) {
    if (controller.signal.aborted) return;
    main.append(errorBox(err));
  }
  document.title = `erpoz · ${name}`;
}

// --- the API key -----------------------------------------------------------------------------

const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyToggle = document.getElementById("key-toggle");
const keyMessage = document.getElementById("key-message");

function showKeyState() {
  keyToggle.textContent = getKey() ? "API key ✓" : "API key";
  keyToggle.classList.toggle("has-key", Boolean(getKey()));
  // who the server takes us for (no key needed when it has none configured)
  api(path(["whoami"]))
    .then((who) => {
      if (!who) return;
      if (who.auth === false) {
        keyToggle.textContent = getKey() ? "API key ✓ (not needed)" : "no key needed";
        keyToggle.title = "This server has no API keys configured (it listens on loopback only).";
      } else {
        keyToggle.textContent = `tenant ${who.tenant}${who.name ? ` · ${who.name}` : ""}`;
        keyToggle.title = "The tenant of your API key; click to change the key.";
      }
    })
    .catch(() => {});
}

keyToggle.addEventListener("click", () => {
  keyForm.hidden = !keyForm.hidden;
  if (!keyForm.hidden) keyInput.focus();
});
keyForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  setKey(keyInput.value.trim());
  keyInput.value = "";
  keyForm.hidden = true;
  showKeyState();
  refreshReviewCount();
  route();
});
document.getElementById("key-clear").addEventListener("click", () => {
  setKey("");
  keyInput.value = "";
  showKeyState();
  route();
});
window.addEventListener("erpoz:auth", (ev) => {
  keyMessage.textContent = getKey() ? `The server refused this API key (${ev.detail}).` : "This server requires an API key.";
  keyForm.hidden = false;
});

// --- header: health and the review count -----------------------------------------------------

async function refreshHealth() {
  const el = document.getElementById("health");
  try {
    const data = await api(path(["health"]));
    const ok = Boolean(data) && (data.status === "ok" || data.ok === true);
    el.textContent = ok ? "● healthy" : "● unhealthy";
    el.className = ok ? "health ok" : "health bad";
    const bits = [];
    if (data && typeof data === "object") {
      for (const [k, v] of Object.entries(data)) if (v === null || typeof v !== "object") bits.push(`${k}: ${v}`);
    }
    el.title = bits.join("\n") || "server health";
  } catch (err) {
    el.textContent = "● unreachable";
    el.className = "health bad";
    el.title = err.message;
  }
}

export async function refreshReviewCount() {
  const el = document.getElementById("review-count");
  try {
    const data = await api(path(["reviews"]));
    const items = Array.isArray(data) ? data : data && (data.reviews || data.items || data.pending || []);
    const n = Array.isArray(items) ? items.length : 0;
    el.textContent = String(n);
    el.hidden = n === 0;
  } catch {
    el.hidden = true;
  }
}

window.addEventListener("hashchange", route);
showKeyState();
refreshHealth();
refreshReviewCount();
setInterval(refreshHealth, 30000);
setInterval(refreshReviewCount, 15000);
route();
