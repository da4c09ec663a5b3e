// The console's shell: hash routes to views, the API key prompt, the count of pending approvals
// in the navigation, and spoken announcements.

import { forgetKey, getKey, isAdmin, onUnauthorized, request, setKey, whoAmI } from "./api.js";
import { h, replace } from "./dom.js";
import { showInbox } from "./inbox.js";
import { showRun } from "./run.js";
import { showRuns } from "./runs.js";
import { showStart } from "./start.js";

const main = document.getElementById("main");
const announcer = document.getElementById("announcer");
const keyDialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyReason = document.getElementById("key-reason");
const keyButton = document.getElementById("key-button");
const forgetButton = document.getElementById("forget-key");
const pendingCount = document.getElementById("pending-count");
const who = document.getElementById("who");

// As the inbox: one small query every 2 s while the tab is shown, and at once after a decision.
const COUNT_POLL_MS = 2000;
const COUNT_PAGE = 100;

let leave = () => {};
// Once the person closes the prompt, a refused call (the inbox polls) must not reopen it: the
// refusal shows in the page, and "Enter key" is one button away.
let declined = false;

function announce(text) {
  // Emptied first, so the same words said twice are read twice.
  announcer.textContent = "";
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

function navigate(hash) {
  location.hash = hash;
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return null; // a malformed %-escape: no such page
  }
}

function route() {
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?", 2);
  const query = new URLSearchParams(search);
  const context = { announce, navigate, query };
  const run = /^\/runs\/([^/]+)$/.exec(path);
  if (path === "" || path === "/" || path === "/approvals")
    return ["approvals", (m) => showInbox(m, context)];
  if (path === "/runs") return ["runs", (m) => showRuns(m, context)];
  if (path === "/new") return ["new", (m) => showStart(m, context)];
  const id = run ? safeDecode(run[1]) : null;
  if (id) return ["runs", (m) => showRun(m, { ...context, id })];
  return [
    null,
    (m) => {
      replace(
        m,
        h("h1", { tabindex: "-1" }, "Not found"),
        h("p", {}, "No such page. ", h("a", { href: "#/approvals" }, "Go to the approvals.")),
      );
      return () => {};
    },
  ];
}

function render({ focus }) {
  leave();
  const [section, show] = route();
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = "agent-runs console";
  leave = show(main); // a view may name the page more precisely
  // A new page moves the focus to its heading, as a page load would for a screen reader.
  if (focus) main.querySelector("h1")?.focus();
}

function showKeyState() {
  const held = getKey();
  keyButton.textContent = held ? "Change key" : "Enter key";
  forgetButton.hidden = !held;
  who.hidden = true;
  whoAmI()
    .then((principal) => {
      if (getKey() !== held) return; // the key changed meanwhile: its own answer shows
      replace(
        who,
        h("span", { class: "visually-hidden" }, "Signed in as "),
        `${principal.name} · ${principal.tenant}`,
        isAdmin(principal) ? " (admin)" : "",
      );
      who.hidden = false;
    })
    .catch(() => {}); // a refused key shows in the prompt and the page
}

function askForKey(reason, { asked = false } = {}) {
  keyReason.textContent = reason;
  if (asked) declined = false;
  if (!keyDialog.open && !declined) {
    keyInput.value = "";
    keyDialog.showModal();
  }
}

onUnauthorized((error) => {
  // The service's own words say it needs a key; the prompt says so once, in its own.
  askForKey(
    getKey()
      ? `The key this tab holds was refused (${error.detail || error.title}).`
      : "This service needs an API key.",
  );
});

let countTimer = null;
let counting = false;

/** "Approvals 3" in the navigation: every pending request, whatever page is shown. */
async function countPending() {
  clearTimeout(countTimer);
  countTimer = null;
  if (counting) return;
  counting = true;
  try {
    const page = await request("GET", "/approvals", {
      params: { status: "pending", limit: COUNT_PAGE },
    });
    const n = page.items.length;
    pendingCount.hidden = n === 0;
    // Read as "Approvals 3 pending"; seen as a badge.
    replace(
      pendingCount,
      ` ${n}${page.next_cursor ? "+" : ""}`,
      h("span", { class: "visually-hidden" }, " pending"),
    );
  } catch {
    pendingCount.hidden = true; // the page shows why the service refused
  } finally {
    counting = false;
  }
  if (!document.hidden) countTimer = setTimeout(countPending, COUNT_POLL_MS);
}

document.addEventListener("approvals-changed", countPending);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && countTimer === null && !counting) countPending();
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  setKey(key);
  declined = false;
  keyInput.value = "";
  keyDialog.close();
  showKeyState();
  render({ focus: true });
  countPending();
});

document.getElementById("key-cancel").addEventListener("click", () => {
  declined = true;
  keyDialog.close();
});
keyDialog.addEventListener("cancel", () => {
  declined = true; // Escape
});
keyButton.addEventListener("click", () =>
  askForKey("Keys are kept in this tab only.", { asked: true }),
);
forgetButton.addEventListener("click", () => {
  forgetKey();
  showKeyState();
  announce("The key is forgotten.");
  render({ focus: false });
});

window.addEventListener("hashchange", () => render({ focus: true }));
showKeyState();
render({ focus: false });
countPending();
