// The runs list, filtered as `GET /runs` allows (status, agent, session), newest first, paged.

import { request } from "./api.js";
import { append, h, problemView, replace, statusBadge, time, uid } from "./dom.js";

export const STATUSES = [
  "queued",
  "running",
  "pending_approval",
  "completed",
  "failed",
  "cancelled",
];

/** The agents' names for a select, or [] when they cannot be listed (the error shows elsewhere). */
export async function agentNames(signal) {
  const names = [];
  let cursor = null;
  // Bounded: 10 pages of 100 agents is more than any registry here holds.
  for (let page = 0; page < 10; page += 1) {
    const found = await request("GET", "/agents", { params: { limit: 100, cursor }, signal });
    names.push(...found.items.map((agent) => agent.name));
    cursor = found.next_cursor;
    if (!cursor) break;
  }
  return names;
}

function filtersForm(query, agents) {
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
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Apply filters"),
      h("a", { href: "#/runs" }, "Clear"),
    ),
  );
}

function runItem(run) {
  return h(
    "li",
    { class: "run" },
    h("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, h("code", {}, run.id)),
    " ",
    statusBadge(run.status),
    h(
      "p",
      { class: "meta" },
      `agent ${run.agent}`,
      run.session_id ? ` · session ${run.session_id}` : "",
      " · created ",
      time(run.created_at),
    ),
    run.final_output ? h("p", { class: "excerpt" }, run.final_output.slice(0, 200)) : null,
  );
}

export function showRuns(main, { query }) {
  const controller = new AbortController();
  const signal = controller.signal;
  const list = h("ol", { class: "runs" });
  const more = h("button", { type: "button", hidden: true }, "Older runs");
  const problems = h("div");
  const filters = h("div");
  const params = {
    status: query.getAll("status"),
    agent: query.get("agent"),
    session_id: query.get("session_id"),
    limit: 20,
  };
  let cursor = null;
  document.title = "Runs · agent-runs";

  replace(
    main,
    h("h1", { tabindex: "-1" }, "Runs"),
    filters,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", onclick: () => load(true) }, "Refresh"),
    ),
    problems,
    list,
    more,
  );

  async function load(fromStart) {
    try {
      const page = await request("GET", "/runs", {
        params: { ...params, cursor: fromStart ? null : cursor },
        signal,
      });
      if (fromStart) replace(list);
      append(list, page.items.map(runItem));
      if (!list.children.length) append(list, h("li", { class: "muted" }, "No run matches."));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      replace(problems);
    } catch (error) {
      if (!signal.aborted) replace(problems, problemView(error));
    }
  }

  more.addEventListener("click", () => load(false));

  agentNames(signal)
    .catch(() => [])
    .then((agents) => {
      if (signal.aborted) return;
      const form = filtersForm(query, agents);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const chosen = new URLSearchParams();
        for (const [name, value] of new FormData(form)) if (value) chosen.append(name, value);
        const search = chosen.toString();
        const hash = `#/runs${search ? `?${search}` : ""}`;
        if (hash === location.hash) load(true);
        else location.hash = hash;
      });
      replace(filters, form);
    });
  load(true);
  return () => controller.abort();
}
