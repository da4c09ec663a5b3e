// Building the page from data. Server data (tool arguments, model output, error texts) is
// untrusted: it only ever becomes text nodes and attribute values, never markup.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "open"]);

/** h("button", {class: "primary", onclick: fn}, "Approve") -> an element. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

/** Strings become text nodes; arrays are flattened; null and undefined are skipped. */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

let ids = 0;

/** A unique id, for label `for` and aria references. */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** An admin's "Tenant" filter: a label and its field, named `tenant` as the API's query. */
export function tenantField(query) {
  const id = uid("tenant");
  return [
    h("label", { for: id }, "Tenant"),
    h("input", {
      id,
      name: "tenant",
      type: "text",
      value: query.get("tenant") ?? "",
      placeholder: "every tenant",
      pattern: "[A-Za-z0-9_\\-]{1,64}",
      title: "A tenant's name: letters, digits, - and _",
      autocomplete: "off",
    }),
  ];
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** Statuses are words, never a colour alone. */
export function statusBadge(status) {
  const known = /^[a-z_]+$/.test(status) ? status : "unknown";
  return h("span", { class: `status status-${known}` }, String(status).replaceAll("_", " "));
}

export function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const text = Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  return h("time", { datetime: String(iso) }, text);
}

/** The text of a Chat Completions message's content (a string, or a list of parts). */
export function contentText(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((part) => (part && typeof part.text === "string" ? part.text : ""))
    .filter(Boolean)
    .join("\n");
}

/** An API error as a person reads it: title, status, detail and each field's message. */
export function problemView(error, hint) {
  const box = h("div", { class: "problem", role: "alert" });
  if (error && typeof error.status === "number") {
    const status = error.status ? ` (${error.status})` : "";
    append(box, [
      h("strong", {}, `${error.title}${status}`),
      error.detail ? `: ${error.detail}` : "",
    ]);
    if (error.errors?.length) {
      const items = error.errors.map((item) => {
        const where = Array.isArray(item.loc) ? item.loc.join(".") : "";
        return h("li", {}, where ? `${where}: ${item.msg}` : String(item.msg));
      });
      append(box, h("ul", {}, items));
    }
  } else {
    append(box, h("strong", {}, "Error"), `: ${error?.message ?? error}`);
  }
  if (hint) append(box, h("p", {}, hint));
  return box;
}

/** A labelled list of facts: [["Status", node], ...]. */
export function facts(rows) {
  return h(
    "dl",
    { class: "facts" },
    rows.filter(Boolean).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

/** A span of time as a person says it: "45 s", "3 min 5 s", "2 h 10 min", "3 d 4 h". */
export function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 24) return m % 60 ? `${hours} h ${m % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

function ageText(element) {
  const since = new Date(element.getAttribute("datetime"));
  const words = element.dataset.words;
  return Number.isNaN(since.getTime())
    ? ""
    : words.replace("{}", span(Date.now() - since.getTime()));
}

/**
 * How long ago `iso` was, said with `words` ("{} ago", "waiting {}"), the exact time in its
 * title; `refreshAges` brings every such element of a page up to date.
 */
export function age(iso, words = "{} ago") {
  if (!iso) return "—";
  const element = h("time", { class: "age", datetime: String(iso), "data-words": words });
  const date = new Date(iso);
  if (!Number.isNaN(date.getTime())) element.title = date.toLocaleString();
  element.textContent = ageText(element);
  return element;
}

export function refreshAges(root) {
  for (const element of root.querySelectorAll("time.age")) {
    const text = ageText(element);
    if (element.textContent !== text) element.textContent = text;
  }
}

/** The clock time of an event, to the second. */
export function clock(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return null;
  return h(
    "time",
    { class: "clock", datetime: String(iso), title: date.toLocaleString() },
    date.toLocaleTimeString(),
  );
}

/** What a run was asked: its input's last user message (a posted conversation ends with it). */
export function inputText(messages) {
  const users = (messages ?? []).filter((message) => message?.role === "user");
  return users.length ? contentText(users[users.length - 1].content) : "";
}
