// A run's page: its summary (status, input, context, usage, timings, steps), its pending
// approvals and a Cancel button while it has not ended, and its conversation streamed live from
// `GET /runs/{id}/events`, each entry with its time.

import { followEvents, request } from "./api.js";
import { Timeline } from "./conversation.js";
import { decisionCard } from "./decide.js";
import {
  facts,
  h,
  inputText,
  pretty,
  problemView,
  refreshAges,
  replace,
  statusBadge,
  time,
} from "./dom.js";
import { toolTable } from "./runs.js";

const ENDED = new Set(["completed", "failed", "cancelled"]);
const AGE_TICK_MS = 5000;

function usageText(usage) {
  if (!usage) return "—";
  const requests = `${usage.requests ?? 0} model request${usage.requests === 1 ? "" : "s"}`;
  const prompt = usage.prompt_tokens ?? 0;
  const completion = usage.completion_tokens ?? 0;
  const total = usage.total_tokens ?? 0;
  return `${requests}; ${prompt} prompt + ${completion} completion = ${total} tokens`;
}

function seconds(from, to) {
  if (!from || !to) return null;
  const ms = new Date(to) - new Date(from);
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : null;
}

function stepsView(steps) {
  if (!steps?.length) return h("p", { class: "muted" }, "No step yet.");
  return h(
    "ol",
    { class: "steps" },
    steps.map((step) => {
      const calls = (step.tool_calls ?? []).map((call) => `${call.name} (${call.status})`);
      const took =
        step.duration_ms === null || step.duration_ms === undefined
          ? ""
          : ` · ${step.duration_ms} ms`;
      return h(
        "li",
        {},
        `${step.agent}${took}`,
        calls.length ? ` · ${calls.join(", ")}` : " · answer",
      );
    }),
  );
}

function summaryView(run) {
  const agent =
    run.current_agent && run.current_agent !== run.agent
      ? `${run.agent} (now ${run.current_agent})`
      : run.agent;
  const session = run.session_id
    ? h("a", { href: `#/runs?session_id=${encodeURIComponent(run.session_id)}` }, run.session_id)
    : "—";
  const metadata = run.metadata && Object.keys(run.metadata).length;
  const context = run.context && Object.keys(run.context).length;
  const asked = inputText(run.input);
  // A posted conversation (more than its one user message) is shown whole.
  const input =
    run.input?.length === 1 && asked
      ? h("div", { class: "text input" }, asked)
      : h("pre", { class: "json input" }, pretty(run.input ?? []));
  return [
    facts([
      ["Status", statusBadge(run.status)],
      ["Agent", agent],
      ["Session", session],
      ["Input", input],
      [
        "Context",
        context
          ? h("pre", { class: "json context-variables" }, pretty(run.context))
          : h("span", { class: "muted" }, "none"),
      ],
      ["Created", time(run.created_at)],
      ["Started", time(run.started_at)],
      ["Finished", time(run.finished_at)],
      ["Wall time", seconds(run.created_at, run.finished_at) ?? "—"],
      ["Usage", usageText(run.usage)],
      run.error ? ["Error", `${run.error.code}: ${run.error.message}`] : null,
      metadata ? ["Metadata", h("pre", { class: "json" }, pretty(run.metadata))] : null,
    ]),
    finalOutputView(run.final_output),
    h("h3", {}, "Steps"),
    stepsView(run.steps),
  ];
}

/** Text as text; a structured output (any JSON value, `false` and `0` too) as indented JSON. */
function finalOutputView(output) {
  if (output === null || output === undefined || output === "") return null;
  const shown =
    typeof output === "string"
      ? h("div", { class: "final text" }, output)
      : h("pre", { class: "final json structured-output" }, pretty(output));
  return [h("h3", {}, "Final output"), shown];
}

export function showRun(main, { id, announce }) {
  const controller = new AbortController();
  const path = `/runs/${encodeURIComponent(id)}`;
  const summary = h("div", { class: "summary" }, "Loading…");
  const stream = h("p", { class: "stream-state", role: "status" }, "Connecting…");
  const cancel = h("button", { type: "button", class: "danger", hidden: true }, "Cancel run");
  const actionResult = h("div", { tabindex: "-1" });
  const approvals = h("div", { class: "cards" });
  const conversation = h("ol", { class: "conversation" });
  const timeline = new Timeline(conversation);
  const approvalsHeading = h("h2", { id: "run-approvals", tabindex: "-1" }, "Pending approvals");
  const approvalsSection = h(
    "section",
    { "aria-labelledby": "run-approvals", hidden: true },
    approvalsHeading,
    approvals,
  );
  const summaryHeading = h("h2", { id: "run-summary", tabindex: "-1" }, "Summary");
  document.title = `Run ${id} · agent-runs`;
  let pendingKeys = "";
  const cards = new Map(); // call id -> its decision card
  let tools = null; // read once the run first waits for a person

  replace(
    main,
    h("h1", { tabindex: "-1" }, "Run ", h("code", {}, id)),
    h(
      "section",
      { "aria-labelledby": "run-summary" },
      summaryHeading,
      summary,
      h("div", { class: "actions" }, cancel),
      actionResult,
    ),
    approvalsSection,
    h(
      "section",
      { "aria-labelledby": "run-conversation" },
      h("h2", { id: "run-conversation" }, "Conversation"),
      stream,
      conversation,
    ),
  );

  // The run's requests as `GET /approvals` has them: with when each was asked, so a card says
  // how long it has waited.
  async function requested(run) {
    try {
      const params = { run_id: run.id, status: "pending", limit: 100 };
      const page = await request("GET", "/approvals", { params, signal: controller.signal });
      return page.items;
    } catch {
      return []; // the cards go without their waiting time
    }
  }

  async function showApprovals(run) {
    const pending = run.pending_approvals ?? [];
    const keys = pending.map((item) => item.call_id).join(" ");
    if (keys === pendingKeys) return; // keep cards someone may be editing
    pendingKeys = keys;
    const hadFocus = approvals.contains(document.activeElement);
    const waiting = new Set(pending.map((item) => item.call_id));
    // A card decided here keeps its outcome while the turn waits for its other calls.
    for (const [callId, card] of cards) {
      if (!waiting.has(callId) && (!pending.length || !card.settled())) {
        card.element.remove();
        cards.delete(callId);
      }
    }
    // Nothing to decide (and never on a run that has ended): no section saying "none".
    approvalsSection.hidden = !pending.length;
    const fresh = pending.filter((item) => !cards.has(item.call_id));
    if (fresh.length) {
      tools ??= await toolTable(controller.signal);
      const asked = new Map((await requested(run)).map((item) => [item.call_id, item]));
      if (controller.signal.aborted) return;
      for (const item of fresh) {
        const found = asked.get(item.call_id) ?? { ...item, run_id: run.id };
        const card = decisionCard(found, {
          heading: "h3",
          tool: tools.get(`${found.agent} ${found.tool}`) ?? null,
        });
        cards.set(item.call_id, card);
        approvals.append(card.element);
      }
    }
    // The card a keyboard user was in is gone: keep them near, not at the page top.
    if (hadFocus && !approvals.contains(document.activeElement)) {
      (approvalsSection.hidden ? summaryHeading : approvalsHeading).focus();
    }
  }

  let loading = false;
  let again = false;

  // Every stored event may change the summary; a burst of them costs one request at a time.
  async function refresh() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      do {
        again = false;
        try {
          const run = await request("GET", path, { signal: controller.signal });
          replace(summary, summaryView(run));
          // An ended run cannot be cancelled: no button, rather than a disabled one.
          cancel.hidden = ENDED.has(run.status);
          await showApprovals(run);
          refreshAges(approvals);
        } catch (error) {
          if (!controller.signal.aborted) replace(summary, problemView(error));
        }
      } while (again && !controller.signal.aborted);
    } finally {
      loading = false;
    }
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const run = await request("POST", `${path}/cancel`);
      replace(
        actionResult,
        h(
          "p",
          { role: "status" },
          "Cancel requested; the run is now ",
          statusBadge(run.status),
          ".",
        ),
      );
      announce("Cancel requested.");
    } catch (error) {
      replace(actionResult, problemView(error));
      cancel.disabled = false;
    }
    actionResult.focus();
    refresh();
  });

  const states = {
    live: () => "Live: new events appear as they happen.",
    reconnecting: (detail) => `Connection lost (${detail}).`,
    ended: () => "The run has ended; everything is shown.",
  };

  refresh();
  followEvents(`${path}/events`, {
    signal: controller.signal,
    onEvent(event) {
      timeline.handle(event);
      if (event.event !== "message.delta") refresh();
      if (event.event === "run.completed" || event.event === "run.failed") {
        announce(`Run ${event.event.slice(4)}.`);
      }
    },
    onState(state, detail) {
      stream.textContent = states[state](detail);
    },
  }).catch((error) => {
    if (!controller.signal.aborted) replace(stream, problemView(error));
  });

  // A parked run sends no events while it waits: its cards' "waiting for" still move on.
  const ticker = setInterval(() => refreshAges(approvals), AGE_TICK_MS);
  return () => {
    controller.abort();
    clearInterval(ticker);
  };
}
