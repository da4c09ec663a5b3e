// The approvals inbox: every pending tool call and guardrail question across runs, newest
// first, kept current, filtered by agent and tool.

import { isAdmin, request, whoAmI } from "./api.js";
import { messageView } from "./conversation.js";
import { decisionCard, subject } from "./decide.js";
import { h, problemView, refreshAges, replace, tenantField, uid } from "./dom.js";
import { toolTable } from "./runs.js";

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

function choices(name, label, chosen, values, any) {
  const id = uid(name);
  const options = [...new Set([...values, chosen].filter(Boolean))].sort();
  return [
    h("label", { for: id }, label),
    h(
      "select",
      { id, name },
      h("option", { value: "" }, any),
      options.map((value) => h("option", { value, selected: value === chosen }, value)),
    ),
  ];
}

function filtersForm(query, tools, admin) {
  const agents = [...tools.keys()].map((key) => key.split(" ")[0]);
  const names = [...tools.values()].map((tool) => tool.name);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter approvals" },
    choices("agent", "Agent", query.get("agent"), agents, "any agent"),
    choices("tool", "Tool", query.get("tool"), names, "any tool"),
    admin ? tenantField(query) : null,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Apply filters"),
      h("a", { href: "#/approvals" }, "Clear"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) chosen.append(name, value);
    const search = chosen.toString();
    location.hash = `#/approvals${search ? `?${search}` : ""}`;
  });
  return form;
}

export function showInbox(main, { announce, query }) {
  const controller = new AbortController();
  const cards = new Map(); // "run_id call_id" -> a decision card
  const list = h("div", { class: "cards" });
  const summary = h("p", { class: "summary" }, "Loading…");
  const problems = h("div");
  const filters = h("div");
  const filter = {
    agent: query.get("agent"),
    tool: query.get("tool"),
    tenant: query.get("tenant"),
  };
  const filtered = Boolean(filter.agent || filter.tool || filter.tenant);
  let tools = new Map();
  let admin = false; // an admin's inbox spans tenants: each card names its own
  let first = true;
  let lastProblem = null;
  let timer = null;

  replace(
    main,
    h("h1", { tabindex: "-1" }, "Approvals"),
    h(
      "p",
      { class: "muted" },
      "Tool calls and guardrails' questions waiting for a person, newest first. " +
        "New ones appear by themselves.",
    ),
    filters,
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
      tool: tools.get(`${item.agent} ${item.tool}`) ?? null,
      heading: "h2",
      showTenant: admin,
      onDecided: (decided, approved) =>
        announce(
          `${approved ? "Approved" : "Rejected"} ${subject(decided)} for agent ${decided.agent}.`,
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
    const among = filtered ? " among those filtered" : "";
    summary.textContent = n
      ? `${n} approval${n === 1 ? "" : "s"} wait${n === 1 ? "s" : ""} for a decision${among}.`
      : `Nothing waits for a decision${among}.`;
  }

  async function refresh() {
    let page;
    try {
      const params = { status: "pending", limit: PAGE, ...filter };
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
    refreshAges(list);
    if (page.next_cursor) summary.append(` More wait: only the newest ${PAGE} are shown.`);
    if (first && fresh.length) {
      announce(`${fresh.length} approval${fresh.length === 1 ? "" : "s"} pending.`);
    } else if (fresh.length) {
      const what = fresh.map((item) => `${subject(item)} for agent ${item.agent}`).join("; ");
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
  // The tools' descriptions and rules go in every card: read once, before the first poll.
  const adminCaller = whoAmI().then(isAdmin, () => false);
  Promise.all([toolTable(controller.signal), adminCaller]).then(([table, isAdminCaller]) => {
    if (controller.signal.aborted) return;
    tools = table;
    admin = isAdminCaller;
    replace(filters, filtersForm(query, tools, admin));
    poll();
  });
  return () => {
    controller.abort();
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}
