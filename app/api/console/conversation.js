// A run's conversation, built from its events as they arrive: messages, text as the model
// writes it, tool calls with their arguments, decisions, outputs and status, and handoffs.

import { contentText, h, pretty, replace, statusBadge } from "./dom.js";

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

function parsed(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A tool call's entry, filled in as its events arrive. */
class ToolCallView {
  constructor(callId, name) {
    this.status = h("span", {}, statusBadge("requested"));
    this.agent = h("span", { class: "muted" });
    this.args = h("pre", { class: "json" });
    this.decision = h("p", { class: "decision", hidden: true });
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
      h("p", { class: "label" }, "Arguments"),
      this.args,
      this.decision,
      this.outputLabel,
      this.output,
    );
  }

  setArguments(value) {
    this.args.textContent = typeof value === "string" ? value : pretty(value ?? {});
  }

  setStatus(status) {
    replace(this.status, statusBadge(status));
  }

  setAgent(agent) {
    if (agent) this.agent.textContent = ` · agent ${agent}`;
  }

  setOutput(output) {
    this.outputLabel.hidden = false;
    this.output.hidden = false;
    this.output.textContent = output ?? "";
  }

  setDecision(decision) {
    const verb = decision.approved ? "Approved" : "Rejected";
    const why = decision.reason ? `: ${decision.reason}` : "";
    this.decision.hidden = false;
    this.decision.textContent = `${verb} ${DECIDERS[decision.source] ?? "by a person"}${
      decision.decided_by ? ` (${decision.decided_by})` : ""
    }${why}`;
    if (decision.approved && decision.arguments && Object.keys(decision.arguments).length) {
      this.setArguments(decision.arguments);
    }
  }
}

export class Timeline {
  constructor(list) {
    this.list = list;
    this.calls = new Map();
    this.writing = null; // the entry of the text the model is generating now
  }

  handle({ event, data }) {
    switch (event) {
      case "message":
        return this.message(data.message ?? {});
      case "message.delta":
        return this.delta(data);
      case "tool_call.started": {
        const call = this.call(data.call_id, data.name);
        call.setArguments(data.arguments);
        call.setAgent(data.agent);
        return call.setStatus("running");
      }
      case "tool_call.completed": {
        const call = this.call(data.call_id, data.name);
        call.setOutput(data.output);
        return call.setStatus(data.status);
      }
      case "approval.requested": {
        const call = this.call(data.call_id, data.tool);
        call.setArguments(data.arguments);
        call.setAgent(data.agent);
        return call.setStatus(data.in_doubt ? "in_doubt" : "pending_approval");
      }
      case "approval.decided":
        return this.call(data.call_id, "?").setDecision(data);
      case "agent.changed":
        return this.add(h("li", { class: "event handoff" }, `Handoff: ${data.from} → ${data.to}`));
      default:
        if (event in LIFECYCLE) return this.lifecycle(event, data);
    }
    return undefined;
  }

  add(entry) {
    this.list.append(entry);
  }

  call(callId, name) {
    let call = this.calls.get(callId);
    if (!call) {
      call = new ToolCallView(callId, name);
      this.calls.set(callId, call);
      this.add(call.element);
    }
    return call;
  }

  lifecycle(event, data) {
    if (event !== "run.started" && event !== "run.resumed") this.interrupt();
    const error = data.error ? `: ${data.error.code}: ${data.error.message}` : "";
    this.add(
      h("li", { class: "event lifecycle" }, `Run ${LIFECYCLE[event].toLowerCase()}${error}`),
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

  message(message) {
    const writing = this.writing;
    if (message.role === "assistant") this.writing = null;
    if (message.role === "tool" && this.calls.has(message.tool_call_id)) {
      return; // its tool call's entry shows the output
    }
    const hasText = Boolean(contentText(message.content));
    const entry = hasText || !message.tool_calls?.length ? messageView(message) : null;
    if (writing && message.role === "assistant") {
      if (entry) writing.entry.replaceWith(entry);
      else writing.entry.remove();
    } else if (entry) {
      this.add(entry);
    }
    for (const call of message.tool_calls ?? []) {
      this.call(call.id, call.function?.name ?? "?").setArguments(parsed(call.function?.arguments));
    }
    return undefined;
  }
}
