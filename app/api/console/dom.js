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
