// A decision card: one pending tool call (what the tool does, why it asks, how long it has
// waited), its arguments editable, Approve and Reject. A call the client runs (kind
// "external") is answered with its output instead: its arguments are shown as asked, and the
// output is required. An approval may carry an output too: done by hand, the tool is not run.
// A guardrail's question (kind "guardrail") is no call: it takes a yes or no and a reason only.
// Used by the inbox (with the run's last messages) and by the run page.

import { request } from "./api.js";
import { guardrailStage, messageView } from "./conversation.js";
import { age, append, h, pretty, problemView, replace, time, uid } from "./dom.js";
import { origin } from "./tools.js";

const EFFECTS = {
  read: "read: it only reads",
  idempotent: "idempotent: it changes something; running it twice does no more harm",
  unsafe: "unsafe: it changes something; running it twice may do it twice",
};

const RULES = {
  always: "every call of this tool needs a person's approval.",
  conditional: "the tool's approval rule asked for a person for these arguments.",
};

const EXTERNAL_WHY =
  "the client runs this tool, not the service: the run waits for the output it got.";

/** Why a person is asked: the call is in doubt, runs at the client, or the tool's rule. */
function whyAsked(item, tool) {
  if (item.kind === "external") return EXTERNAL_WHY;
  if (item.in_doubt) {
    return "the call started before a crash and left no result: it may or may not have taken effect.";
  }
  return RULES[tool?.needs_approval] ?? null;
}

/** What a person is asked about, as a sentence names it: a tool, or the guardrail asking. */
export function subject(item) {
  if (item.kind !== "guardrail") return item.tool;
  return `guardrail ${item.tool} (${guardrailStage(item.call_id)})`;
}

function guardrailFacts(item) {
  const stage = guardrailStage(item.call_id);
  // The reason is the guardrail's own text: shown as text, like everything the service sends.
  return h(
    "div",
    { class: "tool-facts" },
    h(
      "p",
      { class: "why" },
      h("strong", {}, `Guardrail ${item.tool} (${stage}) asks: `),
      item.reason,
    ),
    h(
      "p",
      {},
      stage === "input"
        ? "The model has not seen the run's input yet. "
        : "The run's final answer waits for this check. ",
      "Approving lets the run go on; rejecting fails it (guardrail_tripped).",
    ),
  );
}

/** An output guardrail checks the final answer: the last assistant message the run holds. */
function answerUnderCheck(item) {
  if (item.kind !== "guardrail" || guardrailStage(item.call_id) !== "output") return null;
  const answer = (item.last_messages ?? []).findLast((message) => message?.role === "assistant");
  if (!answer) return null;
  return h(
    "div",
    { class: "held" },
    h("p", { class: "label" }, "The answer under check"),
    h("ol", { class: "conversation compact" }, messageView(answer)),
  );
}

function toolFacts(item, tool) {
  const why = whyAsked(item, tool);
  return h(
    "div",
    { class: "tool-facts" },
    tool?.description ? h("p", { class: "tool-description" }, tool.description) : null,
    tool?.effect && item.kind !== "external"
      ? h("p", { class: "effect" }, h("strong", {}, "Effect: "), EFFECTS[tool.effect] ?? tool.effect)
      : null,
    // A call the client runs says so in why it waits; an MCP server is named here.
    tool?.server ? h("p", { class: "origin" }, h("strong", {}, "From: "), origin(tool)) : null,
    why
      ? h(
          "p",
          { class: "why" },
          h("strong", {}, item.kind === "external" ? "Why it waits: " : "Why approval is needed: "),
          why,
        )
      : null,
  );
}

const CONFLICT_HINT =
  "This call was decided elsewhere, or its run moved on (resumed or cancelled): " +
  "there is nothing left to decide here.";
const FORBIDDEN_HINT = "Deciding approvals needs an approver's key: use “Change key” at the top.";

/** Where the arguments' text fails to be a JSON object, or null when it is one. */
function argumentsProblem(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `Not valid JSON: ${error.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return 'The arguments must be a JSON object, like {"name": "value"}.';
  }
  return null;
}

/**
 * `item`: a `GET /approvals` item; `tool`: the tool as `GET /agents` shows it, or null.
 * Returns {element, settled(), touched(), markGone(), append(...nodes)}.
 * `onDecided(item, approved, run)` hears a success; `onSettled()` hears that nothing is left
 * to decide here (decided here, or a conflict). `showTenant`: name the run's tenant (an
 * admin's inbox spans tenants).
 */
export function decisionCard(
  item,
  {
    context = null,
    tool = null,
    onDecided = () => {},
    onSettled = () => {},
    heading = "h3",
    showTenant = false,
  } = {},
) {
  const ids = { title: uid("approval"), args: uid("arguments"), error: uid("arguments-error") };
  const reasonId = uid("reason");
  const rememberId = uid("remember");
  const outputIds = { field: uid("output"), error: uid("output-error") };
  const external = item.kind === "external";
  const guardrail = item.kind === "guardrail";
  const original = item.arguments ?? {};
  const text = pretty(original);
  let edited = false;
  let settled = false;

  const textarea = h("textarea", {
    id: ids.args,
    rows: Math.min(14, text.split("\n").length + 1),
    spellcheck: "false",
    autocomplete: "off",
    "aria-describedby": ids.error,
    value: text,
    // The client's call is answered as the model asked it: its arguments are not to edit.
    readonly: external,
  });
  const output = h("textarea", {
    id: outputIds.field,
    rows: 4,
    spellcheck: "false",
    autocomplete: "off",
    "aria-describedby": outputIds.error,
    required: external,
  });
  const outputError = h("p", { id: outputIds.error, class: "field-error", hidden: true });
  const argsError = h("p", { id: ids.error, class: "field-error", hidden: true });
  const reason = h("input", { id: reasonId, type: "text", maxlength: 2000, autocomplete: "off" });
  const remember = h("input", { id: rememberId, type: "checkbox" });
  const approve = h(
    "button",
    { type: "button", class: "approve" },
    external ? "Send output" : "Approve",
  );
  const reject = h("button", { type: "button", class: "reject" }, "Reject");
  const notice = h("p", { class: "notice", hidden: true });
  const outcome = h("div", { class: "outcome", tabindex: "-1" });

  const element = h(
    "article",
    { class: "card approval", "aria-labelledby": ids.title, "data-call-id": item.call_id },
    h(
      heading,
      { id: ids.title },
      guardrail ? `Guardrail ${item.tool} (${guardrailStage(item.call_id)})` : item.tool,
      h("span", { class: "muted" }, ` · agent ${item.agent}`),
    ),
    h(
      "p",
      { class: "meta" },
      showTenant ? `Tenant ${item.tenant} · run ` : "Run ",
      h("a", { href: `#/runs/${encodeURIComponent(item.run_id)}` }, item.run_id),
      item.requested_at ? [" · requested ", time(item.requested_at)] : null,
      guardrail ? ` · item ${item.call_id}` : ` · call ${item.call_id}`,
    ),
    item.requested_at
      ? h("p", { class: "waited" }, age(item.requested_at, "Waiting for a decision for {}."))
      : null,
    guardrail ? guardrailFacts(item) : toolFacts(item, tool),
    item.in_doubt
      ? h(
          "p",
          { class: "warning" },
          h("strong", {}, "In doubt: "),
          "approving runs it again; rejecting tells the model it was not done.",
        )
      : null,
    answerUnderCheck(item),
    context,
    // A guardrail's question has no call behind it: nothing to edit, run by hand or remember.
    guardrail
      ? null
      : [
          h(
            "label",
            { for: ids.args },
            external
              ? "Arguments (as the model asked)"
              : "Arguments (JSON, editable before approving)",
          ),
          textarea,
          argsError,
          h(
            "label",
            { for: outputIds.field },
            external
              ? "Output (required: what the client got; the model gets it as the call's result)"
              : "Done by hand: output (optional; when given, nothing is run and the model gets this)",
          ),
          output,
          outputError,
        ],
    h(
      "label",
      { for: reasonId },
      guardrail
        ? "Reason (optional; kept with your decision, and in the run's error when you reject)"
        : "Reason (told to the model when you reject)",
    ),
    reason,
    external || guardrail
      ? null
      : h(
          "label",
          { class: "check", for: rememberId },
          remember,
          ` Approving also approves this run's later calls of ${item.tool}`,
        ),
    h("div", { class: "actions" }, approve, reject),
    notice,
    outcome,
  );

  function showArgumentsProblem(problem) {
    argsError.hidden = problem === null;
    argsError.textContent = problem ?? "";
    textarea.setAttribute("aria-invalid", problem === null ? "false" : "true");
  }

  function showOutputProblem(problem) {
    outputError.hidden = problem === null;
    outputError.textContent = problem ?? "";
    output.setAttribute("aria-invalid", problem === null ? "false" : "true");
  }

  function lock(locked) {
    approve.disabled = locked;
    reject.disabled = locked;
    textarea.readOnly = locked || external;
    output.readOnly = locked;
    reason.readOnly = locked;
    remember.disabled = locked;
  }

  textarea.addEventListener("input", () => {
    edited = true;
    showArgumentsProblem(argumentsProblem(textarea.value));
  });
  for (const [control, change] of [
    [output, "input"],
    [reason, "input"],
    [remember, "change"],
  ]) {
    control.addEventListener(change, () => {
      edited = true;
    });
  }

  async function decide(approved) {
    const decision = { call_id: item.call_id, approved };
    const said = reason.value.trim();
    if (guardrail) {
      // Approved or not, the person's reason is the record of why the run went on or failed.
      if (said) decision.reason = said;
    } else if (approved && external) {
      const problem = output.value ? null : "Give the tool's output, or reject the call.";
      showOutputProblem(problem);
      if (problem !== null) {
        output.focus();
        return;
      }
      decision.output = output.value;
    } else if (approved) {
      if (output.value) decision.output = output.value;
      const problem = argumentsProblem(textarea.value);
      showArgumentsProblem(problem);
      if (problem !== null) {
        textarea.focus();
        return;
      }
      const args = JSON.parse(textarea.value);
      if (JSON.stringify(args) !== JSON.stringify(original)) decision.arguments = args;
      if (remember.checked) decision.remember = true;
    } else if (said) {
      decision.reason = said;
    }
    lock(true);
    replace(outcome, h("p", {}, "Sending…"));
    try {
      const path = `/runs/${encodeURIComponent(item.run_id)}/approvals`;
      const run = await request("POST", path, { body: { decisions: [decision] } });
      settled = true;
      const verb = !approved ? "Rejected" : decision.output !== undefined ? "Output sent" : "Approved";
      replace(
        outcome,
        h("p", { class: "done" }, `${verb}. The run is now `, statusText(run.status), "."),
      );
      onDecided(item, approved, run);
      // The navigation's count need not wait for its next poll.
      document.dispatchEvent(new Event("approvals-changed"));
    } catch (error) {
      const conflict = error.status === 409;
      const hint = conflict ? CONFLICT_HINT : error.status === 403 ? FORBIDDEN_HINT : null;
      replace(outcome, problemView(error, hint));
      settled = conflict;
      lock(conflict);
    }
    if (settled) onSettled();
    outcome.focus();
  }

  approve.addEventListener("click", () => decide(true));
  reject.addEventListener("click", () => decide(false));

  return {
    element,
    /** Nothing is left to decide here: decided, or refused as decided elsewhere. */
    settled: () => settled,
    /** Holding what the person typed, or their focus: not to be removed under them. */
    touched: () => edited || element.contains(document.activeElement),
    markGone() {
      notice.hidden = false;
      notice.textContent = "No longer pending: decided or cancelled elsewhere.";
    },
    append: (...nodes) => append(element, nodes),
  };
}

function statusText(status) {
  return String(status).replaceAll("_", " ");
}
