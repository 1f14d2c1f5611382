// The JSON API, with the API key the user gave (localStorage) as a bearer token.

const KEY = "erpoz.apiKey";
const REVIEWER = "erpoz.reviewer";

export function getKey() {
  try {
    return localStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY, key);
    else localStorage.removeItem(KEY);
  } catch {
    /* storage disabled: the key lives for this page only */
  }
}

export function getReviewer() {
  try {
    return localStorage.getItem(REVIEWER) || "";
  } catch {
    return "";
  }
}

export function setReviewer(name) {
  try {
    if (name) localStorage.setItem(REVIEWER, name);
  } catch {
    /* ignore */
  }
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

function messageOf(status, body) {
  if (body && typeof body === "object") {
    const e = body.error;
    if (e && typeof e === "object" && e.message) return String(e.message);
    if (typeof e === "string") return e;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail
        .map((d) => `${(d.loc || []).join(".")}: ${d.msg || JSON.stringify(d)}`)
        .join("; ");
    }
    if (body.message) return String(body.message);
  }
  if (typeof body === "string" && body) return body.slice(0, 300);
  return `HTTP ${status}`;
}

/** Build "/api/..." with path parts escaped and query parameters (empty ones dropped). */
export function path(parts, query) {
  const p = "/api/" + parts.map((x) => encodeURIComponent(String(x))).join("/");
  if (!query) return p;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const qs = q.toString();
  return qs ? `${p}?${qs}` : p;
}

/** GET (or POST with a JSON body) an API path; the parsed JSON, or an ApiError. */
export async function api(url, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(url, init);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, messageOf(res.status, data), data);
    if (res.status === 401 || res.status === 403) {
      window.dispatchEvent(new CustomEvent("erpoz:auth", { detail: err.message }));
    }
    throw err;
  }
  return data;
}

/**
 * Follow a server-sent event stream with fetch (EventSource cannot send the API key).
 * Calls onEvent({event, data, id}) per message until the stream ends or signal aborts.
 */
export async function follow(url, onEvent, signal) {
  const res = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!res.ok || !res.body) throw new ApiError(res.status, `follow: HTTP ${res.status}`, null);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const msg = { event: "message", data: "", id: null };
      const lines = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") msg.event = val;
        else if (field === "data") lines.push(val);
        else if (field === "id") msg.id = val;
      }
      if (!lines.length && msg.event === "message") continue;
      msg.data = lines.join("\n");
      try {
        msg.json = JSON.parse(msg.data);
      } catch {
        msg.json = null;
      }
      onEvent(msg);
    }
  }
}

