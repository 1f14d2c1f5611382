// The review queue: what waits for a person, and approve / reject / edit with a comment.

import { api, getReviewer, path, setReviewer } from "./api.js";
import { asList, badge, clear, errorBox, fill, fmtAgo, fmtDuration, fmtTime, h, jsonBlock, toMs } from "./dom.js";
import { runLink } from "./page_runs.js";

/** A review as the API gives it, with the names the dashboard uses. */
export function normalizeReview(r, runId) {
  return {
    run_id: r.run_id ?? runId,
    flow: r.flow ?? "",
    step: r.step ?? r.step_id ?? null,
    reason: r.reason ?? "",
    evidence: r.evidence ?? null,
    proposal: "proposal" in r ? r.proposal : r.output ?? r.payload ?? null,
    grant: r.grant ?? null,
    requested_at: r.requested_at ?? r.ts ?? r.created ?? null,
    waiting_s: r.waiting_s ?? null,
    raw: r,
  };
}

/**
 * A permission a guard or the policy asks for (a text to a model, an answer, a tool call):
 * what approving lets through, as the log keeps it — a guard's text with what it found masked
 * (the finding itself is never recorded), a tool call with its arguments. Approving runs the
 * step again and lets exactly that pass; rejecting fails it (there is no output to edit).
 */
function permissionView(item) {
  const ev = item.evidence && typeof item.evidence === "object" ? item.evidence : {};
  let shown = null;
  let label = "Would be sent";
  if (typeof ev.masked === "string" && ev.masked) {
    shown = ev.masked;
    label = `Would be sent${ev.checkpoint ? ` (at ${ev.checkpoint})` : ""}, with what the guards found masked`;
  } else if (ev.tool !== undefined) {
    shown = { tool: ev.tool, arguments: ev.arguments };
    label = "Would be called";
  } else if (item.proposal !== null && item.proposal !== undefined) {
    shown = item.proposal;
  }
  return [
    h("div", { class: "label" }, label),
    shown === null
      ? h("p", { class: "would-send muted" }, "The request did not record it: see the evidence below.")
      : typeof shown === "string"
        ? h("pre", { class: "json would-send" }, shown)
        : h("div", { class: "would-send" }, jsonBlock(shown)),
    h(
      "p",
      { class: "small muted" },
      "Approving lets exactly this through (the step runs again and goes ahead); rejecting fails the step. ",
      h("span", { class: "mono", title: "the approval is kept under this key" }, String(item.grant)),
    ),
  ];
}

/** The card of one waiting review, with its decision form. onDone(result) after a decision. */
export function reviewCard(item, { onDone } = {}) {
  const reviewer = h("input", {
    class: "reviewer",
    name: "reviewer",
    placeholder: "your name",
    value: getReviewer(),
    size: 18,
    "aria-label": "reviewer",
  });
  const comment = h("textarea", {
    class: "comment",
    name: "comment",
    rows: 2,
    placeholder: "comment (recorded with the decision)",
    "aria-label": "comment",
  });
  let proposalText = "";
  try {
    proposalText = JSON.stringify(item.proposal, null, 2) ?? "null";
  } catch {
    proposalText = String(item.proposal);
  }
  const editor = h("textarea", {
    class: "edit-output mono",
    name: "output",
    rows: Math.min(16, Math.max(4, proposalText.split("\n").length + 1)),
    spellcheck: "false",
    "aria-label": "edited output (JSON)",
  });
  editor.value = proposalText;
  const editBox = h(
    "div",
    { class: "edit-box", hidden: true },
    h("label", null, "Edited output (JSON, validated against the step's output type by the server)"),
    editor,
  );
  const status = h("div", { class: "review-status", role: "status" });
  const buttons = [];

  async function decide(action) {
    let body = {
      step: item.step ?? undefined,
      reviewer: reviewer.value.trim() || undefined,
      comment: comment.value.trim() || undefined,
    };
    if (action === "edit") {
      if (editBox.hidden) {
        editBox.hidden = false;
        editor.focus();
        fill(status, h("span", { class: "muted" }, "Edit the output, then press “Save edit”."));
        buttons[2].textContent = "Save edit";
        return;
      }
      try {
        body = { ...body, output: JSON.parse(editor.value) };
      } catch (err) {
        fill(status, errorBox(`The edited output is not JSON: ${err.message}`));
        return;
      }
    }
    if (body.reviewer) setReviewer(body.reviewer);
    for (const b of buttons) b.disabled = true;
    fill(status, h("span", { class: "muted" }, `${action}…`));
    try {
      const res = await api(path(["reviews", item.run_id, action]), { method: "POST", body });
      const st = res && (res.status ?? (res.run && res.run.status));
      fill(status, 
        h("span", { class: "ok-text" }, `Decision recorded: ${action}.`),
        st ? h("span", null, " The run is now ", badge(st), ".") : null,
      );
      card.classList.add("decided");
      card.dataset.decided = action;
      if (onDone) onDone(res, action);
    } catch (err) {
      for (const b of buttons) b.disabled = false;
      fill(status, errorBox(err));
    }
  }

  buttons.push(
    h("button", { type: "button", class: "approve", onclick: () => decide("approve") }, "Approve"),
    h("button", { type: "button", class: "reject", onclick: () => decide("reject") }, "Reject"),
    h("button", { type: "button", class: "edit", onclick: () => decide("edit") }, "Edit…"),
  );

  const requested = toMs(item.requested_at);
  const card = h(
    "article",
    { class: "card review", "data-run": item.run_id, "data-step": item.step ?? "" },
    h(
      "header",
      null,
      h("strong", null, item.step ? `step ${item.step}` : "review"),
      " · run ",
      runLink(item.run_id),
      item.flow ? ` · flow ${item.flow}` : "",
      requested !== null
        ? h("span", { class: "muted", title: fmtTime(requested) }, ` · waiting ${item.waiting_s != null ? fmtDuration(item.waiting_s * 1000) : fmtAgo(requested)}`)
        : null,
    ),
    h("p", { class: "reason" }, h("span", { class: "label" }, "Reason: "), String(item.reason || "—")),
    item.grant ? permissionView(item) : [h("div", { class: "label" }, "Proposal"), jsonBlock(item.proposal)],
    item.evidence !== null && item.evidence !== undefined ? [h("div", { class: "label" }, "Evidence"), jsonBlock(item.evidence)] : null,
    editBox,
    h("div", { class: "decision" }, reviewer, comment),
    h("div", { class: "actions" }, item.grant ? buttons.slice(0, 2) : buttons),
    status,
  );
  return card;
}

export async function render(main, ctx) {
  const list = h("div", { id: "review-list" }, h("p", { class: "muted" }, "Loading…"));
  const count = h("span", { class: "muted" });
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Review queue"), count),
    h(
      "p",
      { class: "muted" },
      "Runs waiting for a person. Approve makes the proposal the step's output, reject fails the step, edit replaces the output with your JSON.",
    ),
    list,
  );
  async function load() {
    let data;
    try {
      data = await api(path(["reviews"]), { signal: ctx.signal });
    } catch (err) {
      if (!ctx.signal.aborted) fill(list, errorBox(err));
      return;
    }
    const items = asList(data, "reviews", "pending").map((r) => normalizeReview(r));
    count.textContent = `${items.length} waiting`;
    clear(list);
    if (!items.length) {
      list.append(h("p", { class: "muted empty" }, "Nothing waits for review."));
      return;
    }
    for (const it of items) list.append(reviewCard(it, { onDone: () => ctx.refreshReviewCount() }));
  }
  await load();
}
