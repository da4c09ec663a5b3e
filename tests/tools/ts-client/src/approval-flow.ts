/**
 * An approval UI's round trip, made with a client generated from openapi.yaml and used unedited:
 * openapi-typescript writes generated/openapi.d.ts, openapi-fetch makes every call with it.
 *
 * Reads AGENT_RUNS_URL, AGENT_RUNS_API_KEY (optional), RUN_AGENT and RUN_INPUT. Creates the run,
 * follows its event stream until it waits for a human, approves every pending call, follows the
 * stream again from the last event seen until the run ends, and prints what it saw as one JSON
 * line. Any surprise exits non-zero with the reason on stderr.
 */
import createClient from "openapi-fetch";

import type { components, paths } from "../generated/openapi.js";

type Run = components["schemas"]["RunOut"];
type RunStatus = Run["status"];
type Problem = components["schemas"]["Problem"];

/** One server-sent event; `message.delta` events have no id. */
interface StreamedEvent {
  id: number | null;
  event: string;
  data: unknown;
}

/** What the caller checks: every call was answered as the document says. */
interface Summary {
  run_id: string;
  waited_for: { tool: string; arguments: Record<string, unknown> }[];
  events: { id: number; event: string }[];
  status: RunStatus;
  final_output: unknown; // text, or the JSON value a run's output schema asked for
  // Typed as always sent: the document lists them as required.
  model_requests: number;
  max_turns: number;
  decisions: { call_id: string; approved: boolean; source: string }[];
  unauthorized: string | null;
}

// Every request of the flow shares one deadline: a stream that never ends cannot hang it.
const FLOW_LIMIT_MS = 60_000;
const ENDED: ReadonlySet<RunStatus> = new Set(["completed", "failed", "cancelled"]);

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

function refused(what: string, response: Response, problem: Problem): never {
  throw new Error(`${what}: ${response.status} ${problem.type} (${problem.detail})`);
}

/** The events of a stream as the WHATWG rules frame them (any line ending; comments skipped). */
async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamedEvent> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = "";
  let id: number | null = null;
  let event = "message";
  let data: string[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      // A "\r" at the end may be the first half of "\r\n": keep it for the next chunk.
      const lines = buffer.split(/\r\n|\r(?!$)|\n/);
      buffer = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "") {
          if (data.length > 0) {
            yield { id, event, data: JSON.parse(data.join("\n")) };
          }
          id = null;
          event = "message";
          data = [];
          continue;
        }
        const colon = line.indexOf(":");
        if (colon === 0) {
          continue;
        }
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") {
          id = Number(value);
        } else if (field === "event") {
          event = value;
        } else if (field === "data") {
          data.push(value);
        }
      }
    }
  } finally {
    await reader.cancel();
  }
}

function statusOf(event: StreamedEvent): RunStatus | null {
  const data = event.data;
  if (event.event.startsWith("run.") && typeof data === "object" && data !== null && "status" in data) {
    return data.status as RunStatus;
  }
  return null;
}

async function main(): Promise<Summary> {
  const baseUrl = required("AGENT_RUNS_URL");
  const key = process.env.AGENT_RUNS_API_KEY;
  const deadline = AbortSignal.timeout(FLOW_LIMIT_MS);
  const client = createClient<paths>({
    baseUrl,
    headers: key ? { Authorization: `Bearer ${key}` } : {},
    signal: deadline,
  });

  const events: Summary["events"] = [];
  let lastEventId: number | null = null;
  /** Follows the run's stream from the last event seen until `stop` says so or it closes. */
  async function follow(runId: string, stop: (status: RunStatus) => boolean): Promise<void> {
    const { data: body, error, response } = await client.GET("/runs/{run_id}/events", {
      params: { path: { run_id: runId }, header: { "last-event-id": lastEventId } },
      parseAs: "stream",
    });
    if (error) {
      refused("stream the run's events", response, error);
    }
    if (body === null) {
      throw new Error("the event stream has no body");
    }
    for await (const event of serverSentEvents(body)) {
      if (event.id === null) {
        continue; // a text delta: live only, never replayed
      }
      lastEventId = event.id;
      events.push({ id: event.id, event: event.event });
      const status = statusOf(event);
      if (status !== null && stop(status)) {
        return;
      }
    }
  }

  const created = await client.POST("/runs", {
    body: { agent: required("RUN_AGENT"), input: required("RUN_INPUT") },
  });
  if (created.error) {
    refused("create the run", created.response, created.error);
  }
  const runId = created.data.id;
  const path = { params: { path: { run_id: runId } } };

  await follow(runId, (status) => status === "pending_approval" || ENDED.has(status));
  const parked = await client.GET("/runs/{run_id}", path);
  if (parked.error) {
    refused("read the run", parked.response, parked.error);
  }
  if (parked.data.status !== "pending_approval") {
    throw new Error(`the run rested at ${parked.data.status}, not pending_approval`);
  }
  const pending = parked.data.pending_approvals;

  // An approval inbox lists the calls across runs; this run's are the ones to decide.
  const inbox = await client.GET("/approvals", { params: { query: { limit: 100 } } });
  if (inbox.error) {
    refused("list the approvals", inbox.response, inbox.error);
  }
  const cards = inbox.data.items.filter((card) => card.run_id === runId && card.status === "pending");
  const decided = await client.POST("/runs/{run_id}/approvals", {
    ...path,
    body: { decisions: cards.map((card) => ({ call_id: card.call_id, approved: true })) },
  });
  if (decided.error) {
    refused("decide", decided.response, decided.error);
  }

  await follow(runId, () => false);
  const ended = await client.GET("/runs/{run_id}", path);
  if (ended.error) {
    refused("read the run", ended.response, ended.error);
  }

  // A wrong key is answered with a problem, typed as the document says.
  const stranger = createClient<paths>({ baseUrl, headers: { Authorization: "Bearer wrong" }, signal: deadline });
  const refusal = await stranger.GET("/runs/{run_id}", path);

  return {
    run_id: runId,
    waited_for: pending.map((call) => ({ tool: call.tool, arguments: call.arguments })),
    events,
    status: ended.data.status,
    final_output: ended.data.final_output,
    model_requests: ended.data.usage.requests,
    max_turns: ended.data.config.max_turns,
    decisions: ended.data.decisions.map((made) => ({
      call_id: made.call_id,
      approved: made.approved,
      source: made.source,
    })),
    unauthorized: refusal.error ? refusal.error.type : null,
  };
}

main().then(
  (summary) => {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  },
  (failure: unknown) => {
    process.stderr.write(`${failure instanceof Error ? failure.message : String(failure)}\n`);
    process.exitCode = 1;
  },
);
