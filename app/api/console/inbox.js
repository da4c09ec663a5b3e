// The approvals inbox: every pending tool call across runs, newest first, kept current.

import { request } from "./api.js";
import { messageView } from "./conversation.js";
import { decisionCard } from "./decide.js";
import { h, problemView, replace } from "./dom.js";

// The contract streams events per run only, so `GET /approvals` is the one feed across runs.
// Asking every 2 s shows a new request to the person waiting on it almost at once, for one
// indexed query per open console; a hidden tab stops asking until it is shown again.
const POLL_MS = 2000;
const PAGE = 100;

function context(item) {
  const messages = item.last_messages ?? [];
  if (!messages.length) return null;
  return h(
    "details",
    { class: "context", open: true },
    h("summary", {}, "The run's last messages"),
    h("ol", { class: "conversation compact" }, messages.map(messageView)),
  );
}

export function showInbox(main, { announce }) {
  const controller = new AbortController();
  const cards = new Map(); // "run_id call_id" -> a decision card
  const list = h("div", { class: "cards" });
  const summary = h("p", { class: "summary" }, "Loading…");
  const problems = h("div");
  let first = true;
  let lastProblem = null;
  let timer = null;

  replace(
    main,
    h("h1", { tabindex: "-1" }, "Approvals"),
    h(
      "p",
      { class: "muted" },
      "Tool calls waiting for a person, newest first. New ones appear by themselves.",
    ),
    summary,
    problems,
    list,
  );

  function dismiss(key) {
    const card = cards.get(key);
    cards.delete(key);
    const next = card.element.nextElementSibling ?? card.element.previousElementSibling;
    card.element.remove();
    (next?.querySelector("h2") ?? main.querySelector("h1")).focus();
    count();
  }

  function add(item, key, before) {
    // Offered once nothing is left to decide: a pending card dismissed would come straight back.
    let dismissable = false;
    const offerDismiss = () => {
      if (dismissable) return;
      dismissable = true;
      card.append(h("button", { type: "button", onclick: () => dismiss(key) }, "Dismiss"));
    };
    const card = decisionCard(item, {
      context: context(item),
      heading: "h2",
      onDecided: (decided, approved) =>
        announce(
          `${approved ? "Approved" : "Rejected"} ${decided.tool} for agent ${decided.agent}.`,
        ),
      onSettled: offerDismiss,
    });
    card.offerDismiss = offerDismiss;
    card.element.querySelector("h2").setAttribute("tabindex", "-1");
    cards.set(key, card);
    list.insertBefore(card.element, before);
  }

  // What the service last said is pending: cards decided here stay until dismissed, uncounted.
  let pendingNow = 0;

  function count() {
    const n = pendingNow;
    document.title = n ? `(${n}) Approvals · agent-runs` : "Approvals · agent-runs";
    summary.textContent = n
      ? `${n} approval${n === 1 ? "" : "s"} wait${n === 1 ? "s" : ""} for a decision.`
      : "Nothing waits for a decision.";
  }

  async function refresh() {
    let page;
    try {
      const params = { status: "pending", limit: PAGE };
      page = await request("GET", "/approvals", { params, signal: controller.signal });
    } catch (error) {
      if (controller.signal.aborted) return;
      // The same refusal on every poll is shown (and read out as an alert) once.
      const said = `${error.status} ${error.message}`;
      if (said !== lastProblem) replace(problems, problemView(error));
      lastProblem = said;
      return;
    }
    lastProblem = null;
    replace(problems);
    const pending = new Set();
    const fresh = [];
    let below = null; // oldest first: each new card goes right above its older neighbour
    for (const item of [...page.items].reverse()) {
      const key = `${item.run_id} ${item.call_id}`;
      pending.add(key);
      if (!cards.has(key)) {
        add(item, key, below);
        fresh.push(item);
      }
      below = cards.get(key).element;
    }
    for (const [key, card] of cards) {
      if (pending.has(key) || card.settled()) continue;
      if (card.touched()) {
        card.markGone();
        card.offerDismiss();
      } else {
        cards.delete(key);
        card.element.remove();
      }
    }
    pendingNow = page.items.length;
    count();
    if (page.next_cursor) summary.append(` More wait: only the newest ${PAGE} are shown.`);
    if (first && fresh.length) {
      announce(`${fresh.length} approval${fresh.length === 1 ? "" : "s"} pending.`);
    } else if (fresh.length) {
      const what = fresh.map((item) => `${item.tool} for agent ${item.agent}`).join("; ");
      announce(`New approval${fresh.length === 1 ? "" : "s"}: ${what}.`);
    }
    first = false;
  }

  let polling = false;

  async function poll() {
    timer = null;
    polling = true;
    await refresh();
    polling = false;
    if (!controller.signal.aborted && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function onVisibility() {
    if (!document.hidden && timer === null && !polling) poll();
  }

  document.addEventListener("visibilitychange", onVisibility);
  poll();
  return () => {
    controller.abort();
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}
