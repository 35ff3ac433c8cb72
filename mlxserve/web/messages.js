// How a message looks: on the page (built as elements, text as text nodes) and on the wire.
//
// Message, as stored: { role: "user" | "assistant" | "tool", content, reasoning?,
// tool_calls?, tool_call_id?, name?, note?, stats? }

import { renderMarkdown } from "./markdown.js";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (e) {
    return text; // still streaming, or not JSON: show it as it is
  }
}

function toolCallCard(call) {
  const card = el("div", "toolcall");
  const head = el("div", "toolhead");
  head.append(el("span", "label", "Tool call"), el("strong", "", call.function.name || "…"));
  if (call.id) head.append(el("span", "muted", call.id));
  const args = el("pre");
  args.append(el("code", "", prettyJson(call.function.arguments || "")));
  card.append(head, args);
  return card;
}

// Fills a message's element from the message (called again as an answer streams in).
export function fillMessage(li, message) {
  const body = li.querySelector(".body");
  if (message.role === "user") {
    body.textContent = message.content; // what the person typed, exactly as typed
  } else if (message.role === "tool") {
    body.replaceChildren(el("span", "label", `Tool result (${message.name || message.tool_call_id})`));
    const pre = el("pre");
    pre.append(el("code", "", prettyJson(message.content)));
    body.append(pre);
  } else {
    renderMarkdown(body, message.content || "");
  }
  const reasoning = li.querySelector(".reasoning");
  if (reasoning) {
    reasoning.hidden = !message.reasoning;
    reasoning.querySelector(".text").textContent = message.reasoning || "";
  }
  const calls = li.querySelector(".toolcalls");
  if (calls) calls.replaceChildren(...(message.tool_calls || []).filter(Boolean).map(toolCallCard));
  li.querySelector(".note").textContent = message.note || "";
  li.querySelector(".stats").textContent = message.stats || "";
}

export function messageElement(message) {
  const li = el("li", "message " + message.role);
  const names = { user: "You", assistant: "Assistant", tool: "Tool" };
  li.append(el("div", "role", names[message.role] || message.role));
  if (message.role === "assistant") {
    const reasoning = el("details", "reasoning");
    reasoning.append(el("summary", "", "Reasoning"), el("div", "text"));
    li.append(reasoning);
  }
  li.append(el("div", "body"));
  if (message.role === "assistant") li.append(el("div", "toolcalls"));
  li.append(el("div", "note"), el("div", "stats muted"));
  fillMessage(li, message);
  return li;
}

// The chat in the wire form: assistant tool calls go only with their results.
export function wireMessages(chat) {
  const results = new Set(chat.messages.filter((m) => m.role === "tool").map((m) => m.tool_call_id));
  const out = [];
  for (const m of chat.messages) {
    if (m.role === "user") {
      out.push({ role: "user", content: m.content });
    } else if (m.role === "tool") {
      out.push({ role: "tool", tool_call_id: m.tool_call_id, content: m.content });
    } else {
      const calls = (m.tool_calls || []).filter((c) => c && results.has(c.id));
      if (calls.length) out.push({ role: "assistant", content: m.content || null, tool_calls: calls });
      // Empty answers (failed or stopped before any token) would only confuse the model.
      else if (m.content) out.push({ role: "assistant", content: m.content });
    }
  }
  return out;
}

export function formatStats(figures, usage, live) {
  const parts = [];
  if (figures.firstToken) parts.push(`first token ${((figures.firstToken - figures.started) / 1000).toFixed(2)} s`);
  const seconds = (figures.last - (figures.firstToken || figures.started)) / 1000;
  // The first token's time is in TTFT, so the rate counts the tokens after it. It needs
  // a few streamed deltas: a tool call, say, arrives whole at the end, with no rate to see.
  const tokens = usage ? usage.completion_tokens : figures.chunks;
  if (seconds > 0 && tokens > 1 && figures.chunks >= 3) parts.push(`${((tokens - 1) / seconds).toFixed(1)} tokens/s`);
  if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
  else if (live) parts.push(`${figures.chunks} chunks so far`);
  // The server's sliding window left earlier messages out: the model did not see them.
  const dropped = usage && usage.context_dropped_messages;
  if (dropped) parts.push(`${dropped} earlier message${dropped === 1 ? "" : "s"} left out to fit the context`);
  return parts.join(" · ");
}
