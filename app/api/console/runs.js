// The runs list, filtered as `GET /runs` allows (status, agent, session), newest first, paged,
// kept current: each run's input, its error when it failed, and its age.

import { isAdmin, request, whoAmI } from "./api.js";
import {
  age,
  h,
  inputText,
  problemView,
  refreshAges,
  replace,
  statusBadge,
  tenantField,
  uid,
} from "./dom.js";

// As the inbox: the list has no stream of its own, so it asks again every 2 s while shown.
const POLL_MS = 2000;
const PAGE = 20;
const EXCERPT = 200;

export const STATUSES = [
  "queued",
  "running",
  "pending_approval",
  "completed",
  "failed",
  "cancelled",
];

/** The registered agents, or [] when they cannot be listed (the error shows elsewhere). */
export async function agentList(signal) {
  const agents = [];
  let cursor = null;
  // Bounded: 10 pages of 100 agents is more than any registry here holds.
  for (let page = 0; page < 10; page += 1) {
    const found = await request("GET", "/agents", { params: { limit: 100, cursor }, signal });
    agents.push(...found.items);
    cursor = found.next_cursor;
    if (!cursor) break;
  }
  return agents;
}

/** The agents' names for a select. */
export async function agentNames(signal) {
  return (await agentList(signal)).map((agent) => agent.name);
}

/** Each agent's tools, by "agent tool": their description, effect and approval rule. */
export async function toolTable(signal) {
  const table = new Map();
  for (const agent of await agentList(signal).catch(() => [])) {
    for (const tool of agent.tools ?? []) table.set(`${agent.name} ${tool.name}`, tool);
  }
  return table;
}

function filtersForm(query, agents, admin) {
  const chosen = new Set(query.getAll("status"));
  const agentId = uid("agent");
  const sessionId = uid("session");
  const agentSelect = h(
    "select",
    { id: agentId, name: "agent" },
    h("option", { value: "" }, "any agent"),
    agents.map((name) => h("option", { value: name, selected: query.get("agent") === name }, name)),
  );
  return h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    h(
      "fieldset",
      {},
      h("legend", {}, "Status"),
      STATUSES.map((status) =>
        h(
          "label",
          { class: "check" },
          h("input", {
            type: "checkbox",
            name: "status",
            value: status,
            checked: chosen.has(status),
          }),
          ` ${status.replaceAll("_", " ")}`,
        ),
      ),
    ),
    h("label", { for: agentId }, "Agent"),
    agentSelect,
    h("label", { for: sessionId }, "Session"),
    h("input", {
      id: sessionId,
      name: "session_id",
      type: "text",
      value: query.get("session_id") ?? "",
      autocomplete: "off",
    }),
    admin ? tenantField(query) : null,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Apply filters"),
      h("a", { href: "#/runs" }, "Clear"),
    ),
  );
}

function excerpt(text) {
  return text.length > EXCERPT ? `${text.slice(0, EXCERPT)}…` : text;
}

/** `showTenant`: the list spans tenants (an admin's), so each run says whose it is. */
function runItem(run, showTenant) {
  const asked = inputText(run.input);
  // A structured output is any JSON value: its excerpt is its JSON text, never markup.
  const output =
    run.final_output === null || run.final_output === undefined
      ? null
      : typeof run.final_output === "string"
        ? run.final_output
        : JSON.stringify(run.final_output);
  return h(
    "li",
    { class: "run", "data-run-id": run.id },
    h("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, h("code", {}, run.id)),
    " ",
    statusBadge(run.status),
    h(
      "p",
      { class: "meta" },
      showTenant ? `tenant ${run.tenant} · ` : "",
      `agent ${run.agent}`,
      run.session_id ? ` · session ${run.session_id}` : "",
      " · created ",
      age(run.created_at),
    ),
    asked ? h("p", { class: "input" }, h("span", { class: "label" }, "Input: "), excerpt(asked)) : null,
    run.error
      ? h(
          "p",
          { class: "run-error" },
          h("span", { class: "label" }, "Error: "),
          excerpt(`${run.error.code}: ${run.error.message}`),
        )
      : null,
    output
      ? h("p", { class: "excerpt" }, h("span", { class: "label" }, "Output: "), excerpt(output))
      : null,
  );
}

/** What a run's entry shows, but its age: an entry that would look the same is kept. */
function shown(run) {
  return JSON.stringify([run.status, run.input, run.error, run.final_output, run.session_id]);
}

export function showRuns(main, { query }) {
  const controller = new AbortController();
  const signal = controller.signal;
  const list = h("ol", { class: "runs" });
  const older = h("ol", { class: "runs" }); // pages past the newest 100: as they were read
  const more = h("button", { type: "button", hidden: true }, "Older runs");
  const problems = h("div");
  const filters = h("div");
  const params = {
    status: query.getAll("status"),
    agent: query.get("agent"),
    session_id: query.get("session_id"),
    tenant: query.get("tenant"),
  };
  // Admins list every tenant's runs: each entry then names its tenant.
  const admin = whoAmI().then(isAdmin, () => false);
  const entries = new Map(); // run id -> {element, shown}
  let wanted = PAGE; // runs kept current: the newest page, and older ones asked for, up to 100
  let cursor = null; // past those, the next older page
  let timer = null;
  document.title = "Runs · agent-runs";

  replace(
    main,
    h("h1", { tabindex: "-1" }, "Runs"),
    filters,
    h("p", { class: "muted" }, "Newest first. New runs and changes appear by themselves."),
    problems,
    list,
    older,
    more,
  );

  // The newest `wanted` runs (at most 100, the API's page), in place: an unchanged entry is
  // kept, so a reader's focus or selection in it survives the refresh.
  async function load() {
    let page;
    try {
      page = await request("GET", "/runs", { params: { ...params, limit: wanted }, signal });
    } catch (error) {
      if (!signal.aborted) replace(problems, problemView(error));
      return;
    }
    replace(problems);
    const showTenant = await admin;
    const seen = new Set();
    const order = page.items.map((run) => {
      seen.add(run.id);
      let entry = entries.get(run.id);
      if (!entry || entry.shown !== shown(run)) {
        const element = runItem(run, showTenant);
        entry?.element.replaceWith(element);
        entry = { element, shown: shown(run) };
        entries.set(run.id, entry);
      }
      return entry.element;
    });
    for (const [id, entry] of entries) {
      if (!seen.has(id)) {
        entry.element.remove();
        entries.delete(id);
      }
    }
    list.querySelector(".none")?.remove();
    order.forEach((element, index) => {
      const there = list.children[index] ?? null;
      if (there !== element) list.insertBefore(element, there);
    });
    if (!order.length) list.append(h("li", { class: "muted none" }, "No run matches."));
    refreshAges(list);
    refreshAges(older);
    if (!older.children.length) cursor = page.next_cursor;
    more.hidden = !cursor;
  }

  async function loadOlder() {
    try {
      const page = await request("GET", "/runs", { params: { ...params, cursor }, signal });
      const showTenant = await admin;
      const olderRuns = page.items.filter((run) => !entries.has(run.id));
      older.append(...olderRuns.map((run) => runItem(run, showTenant)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      if (!signal.aborted) replace(problems, problemView(error));
    }
  }

  let polling = false;

  async function poll() {
    timer = null;
    polling = true;
    await load();
    polling = false;
    if (!signal.aborted && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function onVisibility() {
    if (!document.hidden && timer === null && !polling) poll();
  }

  more.addEventListener("click", () => {
    if (wanted >= 100) return loadOlder();
    wanted = Math.min(100, wanted + PAGE);
    clearTimeout(timer);
    if (!polling) poll();
  });

  Promise.all([agentNames(signal).catch(() => []), admin]).then(([agents, isAdminCaller]) => {
    if (signal.aborted) return;
    const form = filtersForm(query, agents, isAdminCaller);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = new URLSearchParams();
      for (const [name, value] of new FormData(form)) if (value) chosen.append(name, value);
      const search = chosen.toString();
      const hash = `#/runs${search ? `?${search}` : ""}`;
      if (hash !== location.hash) location.hash = hash;
    });
    replace(filters, form);
  });
  document.addEventListener("visibilitychange", onVisibility);
  poll();
  return () => {
    controller.abort();
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}
