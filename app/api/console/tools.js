// An agent's tools and MCP servers as `GET /agents` shows them: each tool's effect, approval
// rule and origin (an MCP server, or the client); each server's status, and why one is
// unavailable, since its tools are then missing from the list.

import { h, statusBadge, uid } from "./dom.js";

const RULES = {
  never: "no approval",
  always: "always asks a person",
  conditional: "asks a person for some arguments",
};

/** Where a tool runs when it is not the service's own code: an MCP server, or the client. */
export function origin(tool) {
  if (tool?.server) return `MCP server ${tool.server}`;
  if (tool?.external) return "the client";
  return null;
}

function toolItem(tool) {
  const from = origin(tool);
  const rules = [tool.effect, RULES[tool.needs_approval] ?? tool.needs_approval];
  if (from) rules.push(`from ${from}`);
  return h(
    "li",
    { "data-tool": tool.name },
    h("code", {}, tool.name),
    " ",
    h("span", { class: "rules" }, rules.join(" · ")),
    tool.description ? h("p", { class: "tool-description" }, tool.description) : null,
  );
}

function serverItem(server) {
  const down = server.status !== "available";
  return h(
    "li",
    { class: down ? "unavailable" : null, "data-server": server.name },
    h("code", {}, server.name),
    ` (${server.transport}) `,
    statusBadge(server.status),
    // Its tools could not be listed: the reason says why they are missing above.
    down
      ? h(
          "p",
          { class: "why" },
          `Its tools could not be listed: ${server.error ?? "no reason given"}`,
        )
      : null,
  );
}

/** What an agent offers its model: its description, tools and MCP servers. */
export function agentTools(agent) {
  const title = uid("tools");
  const servers = agent.mcp_servers ?? [];
  const tools = agent.tools ?? [];
  return h(
    "section",
    { class: "agent-tools", "aria-labelledby": title },
    h("h2", { id: title }, `Tools of ${agent.name}`),
    agent.description ? h("p", { class: "help" }, agent.description) : null,
    tools.length
      ? h("ul", { class: "tools" }, tools.map(toolItem))
      : h("p", { class: "muted" }, "None."),
    servers.length
      ? [h("h3", {}, "MCP servers"), h("ul", { class: "mcp-servers" }, servers.map(serverItem))]
      : null,
  );
}
