// The service's HTTP API as the console uses it: the bearer key, problem+json errors, and the
// event stream read with fetch (EventSource cannot send an Authorization header).

const KEY_NAME = "agent-runs.api-key";

// The service's root, from this module's own URL (/console/api.js -> /), so a console behind a
// proxy that mounts the service under a prefix calls the API under that prefix too.
const ROOT = new URL("../", import.meta.url);

const ENDED = new Set(["run.completed", "run.failed", "run.cancelled"]);
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10_000;

export class ApiError extends Error {
  constructor(status, problem) {
    const body = problem && typeof problem === "object" ? problem : {};
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.type = typeof body.type === "string" ? body.type : "";
    this.title = typeof body.title === "string" ? body.title : `HTTP ${status}`;
    this.detail = typeof body.detail === "string" ? body.detail : "";
    this.errors = Array.isArray(body.errors) ? body.errors : [];
  }
}

let unauthorized = () => {};

/** Who to tell when the service answers 401: the console asks for a key. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

// The key lives in this tab's session storage only: gone when the tab closes, never in a URL.
export function getKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
  principal = null;
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
  principal = null;
}

let principal = null; // {key, promise}: who the service took the key for

/** Who the service takes this tab's key for (`GET /me`: name, tenant, roles), asked once per key. */
export function whoAmI() {
  const key = getKey();
  if (principal === null || principal.key !== key) {
    const promise = request("GET", "/me").catch((error) => {
      if (principal?.promise === promise) principal = null; // asked again next time
      throw error;
    });
    principal = { key, promise };
  }
  return principal.promise;
}

/** Whether the principal acts across tenants: the console then shows tenants and filters by one. */
export function isAdmin(who) {
  return Boolean(who?.roles?.includes("admin"));
}

function urlOf(path, params = {}) {
  const url = new URL(path.replace(/^\//, ""), ROOT);
  for (const [name, value] of Object.entries(params)) {
    for (const item of [value].flat()) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, item);
    }
  }
  return url;
}

function headersWith(extra) {
  const headers = new Headers(extra);
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function send(url, init) {
  try {
    return await fetch(url, { cache: "no-store", credentials: "omit", ...init });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, {
      title: "Network error",
      detail: `The service did not answer (${error.message}).`,
    });
  }
}

async function failure(response) {
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    // A proxy's HTML error page, say: the status alone has to do.
  }
  const error = new ApiError(response.status, problem);
  if (response.status === 401) unauthorized(error);
  return error;
}

/** One JSON call; resolves to the parsed body, rejects with an ApiError. */
export async function request(method, path, { params, body, signal } = {}) {
  const headers = headersWith({ Accept: "application/json" });
  if (body !== undefined) headers.set("Content-Type", "application/json");
  const response = await send(urlOf(path, params), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

/**
 * Follow a run's events until the run ends or `signal` aborts. A dropped stream is resumed
 * with Last-Event-ID after a growing pause, so no stored event is lost or seen twice.
 * `onEvent({event, id, data})` gets each event; `onState(state, detail)` hears "live",
 * "reconnecting" and "ended". Rejects with an ApiError the service gave for good (401, 404).
 */
export async function followEvents(path, { onEvent, onState, signal }) {
  let lastId = null;
  let pause = RETRY_FIRST_MS;
  while (!signal.aborted) {
    let reason = "the stream closed";
    try {
      const headers = headersWith({ Accept: "text/event-stream" });
      if (lastId !== null) headers.set("Last-Event-ID", lastId);
      const response = await send(urlOf(path), { headers, signal });
      if (!response.ok) {
        const error = await failure(response);
        if (error.status < 500 && error.status !== 429) throw error;
        reason = error.message;
      } else {
        onState("live");
        pause = RETRY_FIRST_MS;
        for await (const event of parseEvents(response.body)) {
          if (event.id !== null) lastId = event.id;
          onEvent(event);
          if (ENDED.has(event.event)) {
            onState("ended");
            return;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status !== 0 && error.status < 500) throw error;
      reason = error.message;
    }
    onState("reconnecting", `${reason}; reconnecting in ${Math.round(pause / 100) / 10} s`);
    await sleep(pause, signal);
    pause = Math.min(pause * 2, RETRY_MAX_MS);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Server-sent events from a byte stream, as the HTML standard parses them. */
export async function* parseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "", data: [], id: null };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (;;) {
        const end = /\r\n|\r|\n/.exec(buffer);
        // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
        if (end === null || (end[0] === "\r" && end.index === buffer.length - 1)) break;
        const line = buffer.slice(0, end.index);
        buffer = buffer.slice(end.index + end[0].length);
        if (line === "") {
          if (event.data.length > 0) yield decoded(event);
          event = { event: "", data: [], id: event.id };
          continue;
        }
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.event = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id" && !text.includes("\0")) event.id = text;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function decoded(event) {
  const text = event.data.join("\n");
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = { text };
  }
  return { event: event.event || "message", id: event.id, data };
}
