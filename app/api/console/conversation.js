// A run's conversation, built from its events as they arrive: messages, text as the model
// writes it, tool calls with their arguments, decisions (who, when, after how long, what they
// changed), outputs and status, handoffs, and guardrails' checks (a question to a person with
// its answer); each entry with the time it happened.

import { clock, contentText, h, pretty, replace, span, statusBadge } from "./dom.js";

const ROLES = {
  user: "User",
  assistant: "Assistant",
  tool: "Tool result",
  system: "System",
  developer: "Developer",
};

const LIFECYCLE = {
  "run.queued": "Queued",
  "run.started": "Started",
  "run.pending_approval": "Waiting for approval",
  "run.resumed": "Resumed",
  "run.completed": "Completed",
  "run.failed": "Failed",
  "run.cancelled": "Cancelled",
};

const DECIDERS = {
  human: "by a person",
  handler: "by the agent's approval handler",
  remember: "by an earlier approval of this tool (remember)",
};

/** One stored message as a conversation entry (tool calls listed by name). */
export function messageView(message) {
  const role = typeof message.role === "string" ? message.role : "unknown";
  const text = contentText(message.content);
  const calls = (message.tool_calls ?? []).map((call) => {
    const args = String(call?.function?.arguments ?? "");
    const shown = args.length > 200 ? `${args.slice(0, 200)}…` : args;
    return `${call?.function?.name ?? "?"} ${shown}`;
  });
  return h(
    "li",
    { class: `message message-${/^[a-z]+$/.test(role) ? role : "unknown"}` },
    h("span", { class: "role" }, ROLES[role] ?? role),
    text ? h("div", { class: "text" }, text) : null,
    calls.length ? h("p", { class: "muted" }, `Asks for: ${calls.join("; ")}`) : null,
  );
}

const GUARDRAIL_RESULTS = {
  passed: "passed",
  tripped: "tripped",
  ask_human: "asks a person",
};

/** "input" or "output": a guardrail's pending item names its stage only in its id. */
export function guardrailStage(callId) {
  return String(callId).startsWith("guardrail_output_") ? "output" : "input";
}

function parsed(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The lines of `before` and `after` (JSON objects) by key: kept, removed and added. */
function argumentsDiff(before, after) {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  const line = (sign, key, value, kind) =>
    h("span", { class: kind }, `${sign} ${JSON.stringify(key)}: ${JSON.stringify(value)}\n`);
  return keys.flatMap((key) => {
    const had = Object.hasOwn(before, key);
    const has = Object.hasOwn(after, key);
    if (had && has && JSON.stringify(before[key]) === JSON.stringify(after[key])) {
      return [line(" ", key, after[key], "kept")];
    }
    return [
      had ? line("-", key, before[key], "removed") : null,
      has ? line("+", key, after[key], "added") : null,
    ].filter(Boolean);
  });
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** A tool call's entry, filled in as its events arrive. */
class ToolCallView {
  constructor(callId, name) {
    this.status = h("span", {}, statusBadge("requested"));
    this.agent = h("span", { class: "muted" });
    this.args = h("pre", { class: "json" });
    this.asked = null; // the arguments the model asked with, before any person edited them
    this.requestedAt = null;
    this.times = h("p", { class: "times", hidden: true });
    this.decision = h("div", { class: "decision", hidden: true });
    this.output = h("pre", { class: "output", hidden: true });
    this.outputLabel = h("p", { class: "label", hidden: true }, "Output");
    this.element = h(
      "li",
      { class: "tool-call", "data-call-id": callId },
      h(
        "p",
        { class: "heading" },
        h("strong", {}, `Tool call: ${name}`),
        " ",
        this.status,
        this.agent,
      ),
      this.times,
      h("p", { class: "label" }, "Arguments"),
      this.args,
      this.decision,
      this.outputLabel,
      this.output,
    );
  }

  setArguments(value) {
    if (this.asked === null && isObject(value)) this.asked = value;
    this.args.textContent = typeof value === "string" ? value : pretty(value ?? {});
  }

  setStatus(status) {
    replace(this.status, statusBadge(status));
  }

  setAgent(agent) {
    if (agent) this.agent.textContent = ` · agent ${agent}`;
  }

  /** "asked 10:02:03 · started 10:05:08 · finished 10:05:09": when each part happened. */
  mark(what, at) {
    const when = clock(at);
    if (!when) return;
    this.times.hidden = false;
    if (this.times.childNodes.length) this.times.append(" · ");
    this.times.append(`${what} `, when);
  }

  setOutput(output) {
    this.outputLabel.hidden = false;
    this.output.hidden = false;
    this.output.textContent = output ?? "";
  }

  setDecision(decision) {
    const edited =
      decision.approved &&
      isObject(this.asked) &&
      isObject(decision.arguments) &&
      JSON.stringify(this.asked) !== JSON.stringify(decision.arguments);
    replace(
      this.decision,
      verdictView(decision, this.requestedAt),
      edited
        ? [
            h("p", { class: "label" }, "Arguments edited before approving"),
            h("pre", { class: "diff" }, argumentsDiff(this.asked, decision.arguments)),
          ]
        : null,
    );
    this.decision.hidden = false;
    // Decided, though the turn may still wait for its other calls: no longer this call's wait.
    this.setStatus(decision.approved ? "approved" : "rejected");
    if (decision.approved && isObject(decision.arguments) && Object.keys(decision.arguments).length) {
      this.args.textContent = pretty(decision.arguments);
    }
  }
}

/** "Approved by a person (lead) at 10:02:09, after waiting 6 s: reason". */
function verdictView(decision, requestedAt) {
  // An output in the decision means the tool was not run: a person or the client gave it.
  const verb = !decision.approved
    ? "Rejected"
    : decision.output != null
      ? "Output given"
      : "Approved";
  const who = `${DECIDERS[decision.source] ?? "by a person"}${
    decision.decided_by ? ` (${decision.decided_by})` : ""
  }`;
  const waited =
    requestedAt && decision.decided_at
      ? new Date(decision.decided_at) - new Date(requestedAt)
      : Number.NaN;
  return h(
    "p",
    { class: "verdict" },
    `${verb} ${who}`,
    decision.decided_at ? [" at ", clock(decision.decided_at)] : null,
    Number.isFinite(waited) ? `, after waiting ${span(waited)}` : null,
    decision.reason ? `: ${decision.reason}` : "",
  );
}

/** A guardrail's question to a person (its `guardrail.checked` and pending item), answered. */
class GuardrailAskView {
  constructor(callId, name, stage, reason) {
    this.status = h("span", {}, statusBadge("pending_approval"));
    this.requestedAt = null;
    this.answered = false;
    this.decision = h("div", { class: "decision", hidden: true });
    this.element = h(
      "li",
      { class: "guardrail-ask", "data-call-id": callId },
      h(
        "p",
        { class: "heading" },
        h("strong", {}, `Guardrail ${name} (${stage}) asks a person`),
        " ",
        this.status,
      ),
      h("p", { class: "reason" }, reason ?? ""),
      this.decision,
    );
  }

  setDecision(decision) {
    this.answered = true;
    replace(this.decision, verdictView(decision, this.requestedAt));
    this.decision.hidden = false;
    replace(this.status, statusBadge(decision.approved ? "approved" : "rejected"));
  }

  /** A run cancelled while it asked ends the question with no event of its own. */
  cancel() {
    if (!this.answered) replace(this.status, statusBadge("cancelled"));
  }
}

export class Timeline {
  constructor(list) {
    this.list = list;
    this.calls = new Map();
    this.writing = null; // the entry of the text the model is generating now
  }

  handle({ event, data }) {
    const at = data.stored_at;
    switch (event) {
      case "message":
        return this.message(data.message ?? {}, at);
      case "message.delta":
        return this.delta(data);
      case "tool_call.started": {
        const call = this.call(data.call_id, data.name, at);
        call.setArguments(data.arguments);
        call.setAgent(data.agent);
        call.mark("started", at);
        return call.setStatus("running");
      }
      case "tool_call.completed": {
        const call = this.call(data.call_id, data.name, at);
        call.setOutput(data.output);
        call.mark("finished", at);
        return call.setStatus(data.status);
      }
      case "guardrail.checked":
        return this.guardrail(data, at);
      case "approval.requested": {
        if (data.kind === "guardrail") {
          const stage = guardrailStage(data.call_id);
          this.ask(data.call_id, data.tool, stage, data.reason, at).requestedAt = at;
          return undefined;
        }
        const call = this.call(data.call_id, data.tool, at);
        call.setArguments(data.arguments);
        call.setAgent(data.agent);
        call.requestedAt = at; // a person's wait is counted from here
        call.mark("asked for approval", at);
        return call.setStatus(data.in_doubt ? "in_doubt" : "pending_approval");
      }
      case "approval.decided":
        return this.call(data.call_id, "?", at).setDecision(data);
      case "agent.changed":
        return this.add(
          h("li", { class: "event handoff" }, `Handoff: ${data.from} → ${data.to}`),
          at,
        );
      default:
        if (event in LIFECYCLE) return this.lifecycle(event, data, at);
    }
    return undefined;
  }

  add(entry, at) {
    const when = clock(at);
    if (when) entry.prepend(when);
    this.list.append(entry);
  }

  call(callId, name, at) {
    let call = this.calls.get(callId);
    if (!call) {
      call = new ToolCallView(callId, name);
      this.calls.set(callId, call);
      this.add(call.element, at);
    }
    return call;
  }

  guardrail({ name, stage, result, reason }, at) {
    if (result === "ask_human") {
      this.ask(`guardrail_${stage}_${name}`, name, stage, reason, at);
      return;
    }
    const said = `Guardrail ${name} (${stage}) ${GUARDRAIL_RESULTS[result] ?? result}`;
    const entry = h("li", { class: "event guardrail", "data-result": result }, said);
    if (reason) entry.append(`: ${reason}`);
    this.add(entry, at);
  }

  /** The entry of a guardrail's question: its check and its pending item name the same one. */
  ask(callId, name, stage, reason, at) {
    let ask = this.calls.get(callId);
    if (!ask) {
      ask = new GuardrailAskView(callId, name, stage, reason);
      this.calls.set(callId, ask);
      this.add(ask.element, at);
    }
    return ask;
  }

  lifecycle(event, data, at) {
    if (event !== "run.started" && event !== "run.resumed") this.interrupt();
    if (event === "run.cancelled") {
      for (const view of this.calls.values()) if (view instanceof GuardrailAskView) view.cancel();
    }
    const error = data.error ? `: ${data.error.code}: ${data.error.message}` : "";
    this.add(
      h("li", { class: "event lifecycle" }, `Run ${LIFECYCLE[event].toLowerCase()}${error}`),
      at,
    );
  }

  /** Text written with no message to follow (a failed or cancelled model call) stays, marked. */
  interrupt() {
    if (this.writing === null) return;
    this.writing.entry.classList.remove("writing");
    this.writing.entry.querySelector(".role").textContent = "Assistant (interrupted)";
    this.writing = null;
  }

  delta({ turn, attempt, text }) {
    if (this.writing !== null && this.writing.turn !== turn) this.interrupt();
    if (this.writing === null) {
      const body = h("div", { class: "text" });
      const entry = h(
        "li",
        { class: "message message-assistant writing" },
        h("span", { class: "role" }, "Assistant (writing…)"),
        body,
      );
      this.writing = { turn, attempt, entry, body };
      this.add(entry);
    }
    if (this.writing.attempt !== attempt) {
      // The model call was repeated (a takeover): its text starts over.
      this.writing.body.replaceChildren();
      this.writing.attempt = attempt;
    }
    this.writing.body.append(text ?? "");
  }

  message(message, at) {
    const writing = this.writing;
    if (message.role === "assistant") this.writing = null;
    if (message.role === "tool" && this.calls.has(message.tool_call_id)) {
      return; // its tool call's entry shows the output
    }
    const hasText = Boolean(contentText(message.content));
    const entry = hasText || !message.tool_calls?.length ? messageView(message) : null;
    if (writing && message.role === "assistant") {
      if (entry) {
        const when = clock(at);
        if (when) entry.prepend(when);
        writing.entry.replaceWith(entry);
      } else writing.entry.remove();
    } else if (entry) {
      this.add(entry, at);
    }
    for (const call of message.tool_calls ?? []) {
      const view = this.call(call.id, call.function?.name ?? "?", at);
      view.setArguments(parsed(call.function?.arguments));
    }
    return undefined;
  }
}
