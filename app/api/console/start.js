// Start a run: an agent from `GET /agents` (its tools and MCP servers shown once chosen), the
// input, and optional session and context JSON.

import { request } from "./api.js";
import { h, problemView, replace, uid } from "./dom.js";
import { agentList } from "./runs.js";
import { agentTools } from "./tools.js";

function field(label, control, help) {
  const error = h("p", { class: "field-error", id: uid("error"), hidden: true });
  const helpText = help ? h("p", { class: "help", id: uid("help") }, help) : null;
  control.setAttribute("aria-describedby", [helpText?.id, error.id].filter(Boolean).join(" "));
  return {
    control,
    element: h(
      "div",
      { class: "field" },
      h("label", { for: control.id }, label),
      helpText,
      control,
      error,
    ),
    show(message) {
      error.hidden = !message;
      error.textContent = message ?? "";
      control.setAttribute("aria-invalid", message ? "true" : "false");
    },
  };
}

function contextProblem(text) {
  if (!text.trim()) return null;
  try {
    const value = JSON.parse(text);
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return null;
    return 'Context must be a JSON object, like {"user_id": "u_1"}.';
  } catch (error) {
    return `Not valid JSON: ${error.message}`;
  }
}

export function showStart(main, { navigate }) {
  const controller = new AbortController();
  const agent = field(
    "Agent",
    h(
      "select",
      { id: uid("agent"), required: true },
      h("option", { value: "" }, "Loading agents…"),
    ),
  );
  const input = field(
    "Input",
    h("textarea", { id: uid("input"), rows: 4, required: true }),
    "The user's message.",
  );
  const session = field(
    "Session (optional)",
    h("input", { id: uid("session"), type: "text", autocomplete: "off" }),
    "Runs of one session share their conversation and run one at a time.",
  );
  const context = field(
    "Context (optional JSON object)",
    h("textarea", { id: uid("context"), rows: 3, spellcheck: "false" }),
    "Variables for the agent's tools and instructions; the model does not see them.",
  );
  const fields = { agent, input, session_id: session, context };
  const submit = h("button", { type: "submit", class: "primary" }, "Start run");
  const problems = h("div", { tabindex: "-1" });
  const agents = new Map(); // by name, as `GET /agents` lists them
  const about = h("div"); // the chosen agent's tools and MCP servers
  const form = h(
    "form",
    { class: "start", novalidate: true },
    agent.element,
    about,
    [input, session, context].map((f) => f.element),
    h("div", { class: "actions" }, submit),
    problems,
  );

  replace(main, h("h1", { tabindex: "-1" }, "Start a run"), form);
  document.title = "Start a run · agent-runs";

  agentList(controller.signal)
    .then((found) => {
      for (const item of found) agents.set(item.name, item);
      const names = [...agents.keys()];
      replace(
        agent.control,
        h("option", { value: "" }, names.length ? "Choose an agent" : "No agent is registered"),
        names.map((name) => h("option", { value: name }, name)),
      );
    })
    .catch((error) => {
      if (!controller.signal.aborted) replace(problems, problemView(error));
    });

  agent.control.addEventListener("change", () => {
    const chosen = agents.get(agent.control.value);
    replace(about, chosen ? agentTools(chosen) : null);
  });

  context.control.addEventListener("input", () =>
    context.show(contextProblem(context.control.value)),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const checks = [
      [agent, agent.control.value ? null : "Choose an agent."],
      [input, input.control.value.trim() ? null : "Type the input."],
      [session, null],
      [context, contextProblem(context.control.value)],
    ];
    for (const [item, message] of checks) item.show(message);
    const invalid = checks.find(([, message]) => message);
    if (invalid) {
      invalid[0].control.focus();
      return;
    }
    const body = { agent: agent.control.value, input: input.control.value };
    if (session.control.value.trim()) body.session_id = session.control.value.trim();
    if (context.control.value.trim()) body.context = JSON.parse(context.control.value);
    submit.disabled = true;
    replace(problems);
    try {
      const run = await request("POST", "/runs", { body, signal: controller.signal });
      navigate(`#/runs/${encodeURIComponent(run.id)}`);
    } catch (error) {
      if (controller.signal.aborted) return;
      // Point at the fields the service named (`loc`: ["body", "context", ...]).
      for (const item of error.errors ?? []) {
        const name = Array.isArray(item.loc) && item.loc[0] === "body" ? item.loc[1] : null;
        if (Object.hasOwn(fields, name)) fields[name].show(String(item.msg));
      }
      replace(problems, problemView(error));
      problems.focus();
      submit.disabled = false;
    }
  });

  return () => controller.abort();
}
