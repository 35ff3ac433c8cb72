// mlxserve chat page: plain JS, no build step, no third-party code.
//
// Safety rule: model (and user) text only ever reaches the DOM through
// textContent / text nodes, never innerHTML, so a hostile answer is shown
// literally instead of being run.
"use strict";

// Stored shape (version in the key so a later format can migrate):
// { current: "<id>", chats: [{ id, title, messages: [{ role, content, note?, stats? }] }] }
const STORAGE_KEY = "mlxserve.chats.v1";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), chats: $("chats"), messages: $("messages"), error: $("error"),
  stats: $("stats"), form: $("composer"), prompt: $("prompt"), send: $("send"),
  stop: $("stop"), newChat: $("new-chat"), conversation: $("conversation"),
};

let state = load();
let modelName = null;
let controller = null; // the AbortController of the request in flight, if any

// ---- storage ---------------------------------------------------------------

function newChat() {
  return { id: String(Date.now()) + Math.random().toString(16).slice(2, 6), title: "New chat", messages: [] };
}

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY));
    if (saved && Array.isArray(saved.chats) && saved.chats.length) return saved;
  } catch (e) {
    // Corrupt storage must not brick the page: start fresh.
  }
  const chat = newChat();
  return { current: chat.id, chats: [chat] };
}

function save() {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(state));
  } catch (e) {
    showError("Could not save the conversation in this browser: " + e.message);
  }
}

function currentChat() {
  return state.chats.find((c) => c.id === state.current) || state.chats[0];
}

// ---- rendering ---------------------------------------------------------------

// Fills `el` with `text`, turning ``` fenced blocks into <pre><code>. Every piece
// of text goes in as a text node.
function renderText(el, text) {
  el.replaceChildren();
  const parts = String(text).split("```");
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      if (part) el.append(document.createTextNode(part));
      return;
    }
    // Inside a fence: the first line may name the language; it is not shown.
    const newline = part.indexOf("\n");
    const code = newline >= 0 ? part.slice(newline + 1) : part;
    const pre = document.createElement("pre");
    const codeEl = document.createElement("code");
    codeEl.textContent = code;
    pre.append(codeEl);
    el.append(pre);
  });
}

function messageElement(message) {
  const li = document.createElement("li");
  li.className = "message " + (message.role === "user" ? "user" : "assistant");
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  renderText(body, message.content || "");
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = message.note || "";
  li.append(role, body, note);
  return li;
}

function renderChats() {
  ui.chats.replaceChildren();
  for (const chat of state.chats.slice().reverse()) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = chat.title;
    button.setAttribute("aria-current", String(chat.id === state.current));
    button.addEventListener("click", () => {
      if (controller) return; // switching mid-answer would orphan the stream
      state.current = chat.id;
      save();
      renderAll();
    });
    li.append(button);
    ui.chats.append(li);
  }
}

function renderAll() {
  renderChats();
  ui.messages.replaceChildren(...currentChat().messages.map(messageElement));
  const last = currentChat().messages.at(-1);
  ui.stats.textContent = last && last.stats ? last.stats : "";
  hideError();
  scrollDown();
}

function scrollDown() {
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.newChat.disabled = busy;
}

// ---- server ------------------------------------------------------------------

async function loadModelName() {
  try {
    const r = await fetch("/v1/models");
    const body = await r.json();
    modelName = body.data[0].id;
    ui.model.textContent = "model: " + modelName;
  } catch (e) {
    ui.model.textContent = "model: unavailable (is the server running?)";
  }
}

// Turns a non-2xx response into one readable sentence, from the error envelope.
async function describeError(response) {
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (e) {
    // Not JSON (a proxy page, say): keep the status text.
  }
  if (response.status === 429) {
    const after = response.headers.get("Retry-After");
    return "The server is busy" + (after ? `; retry after ${after} s.` : "; retry shortly.") + ` (${message})`;
  }
  return `Error ${response.status}: ${message}`;
}

// Yields the JSON payloads of an SSE body; stops at [DONE].
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    // Events are separated by a blank line; keep any partial event for the next read.
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      for (const line of event.split(/\r?\n/)) {
        if (!line.startsWith("data:")) continue; // ":" keep-alive comments, etc.
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function formatStats(started, firstToken, finished, usage) {
  const parts = [];
  if (firstToken) parts.push(`first token ${((firstToken - started) / 1000).toFixed(2)} s`);
  if (usage) {
    const seconds = (finished - (firstToken || started)) / 1000;
    if (seconds > 0 && usage.completion_tokens > 1) {
      // The first token's time is in TTFT, so the rate counts the tokens after it.
      parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
    }
    parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
  }
  return parts.join(" · ");
}

async function send(text) {
  const chat = currentChat();
  if (!chat.messages.length) chat.title = text.slice(0, 40);
  chat.messages.push({ role: "user", content: text });
  // Empty replies (failed or stopped before any token) would only confuse the model.
  const history = chat.messages.filter((m) => m.content).map(({ role, content }) => ({ role, content }));
  const reply = { role: "assistant", content: "" };
  chat.messages.push(reply);
  save();
  renderAll();
  const replyEl = ui.messages.lastElementChild;
  const body = replyEl.querySelector(".body");
  const note = replyEl.querySelector(".note");
  note.textContent = "…";

  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: modelName || undefined,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
      }),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await describeError(response));
    for await (const chunk of sseEvents(response)) {
      // Once the stream has started, errors arrive as an event, not a status.
      if (chunk.error) throw new Error(chunk.error.message || "the server reported an error");
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta && choice.delta.content;
      if (delta) {
        if (firstToken === null) firstToken = performance.now();
        reply.content += delta;
        renderText(body, reply.content);
        scrollDown();
      }
      if (choice.finish_reason === "length") reply.note = "(cut off: token limit reached)";
    }
    reply.stats = formatStats(started, firstToken, performance.now(), usage);
    ui.stats.textContent = reply.stats;
  } catch (e) {
    if (e.name === "AbortError") {
      reply.note = "(stopped)";
    } else {
      // A TypeError from fetch means no response at all: the server is unreachable.
      const text = e instanceof TypeError ? "Network error: could not reach the server." : e.message;
      reply.note = "(failed)";
      showError(text);
    }
  } finally {
    controller = null;
    setBusy(false);
    note.textContent = reply.note || "";
    save();
    ui.prompt.focus();
  }
}

// ---- events ------------------------------------------------------------------

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || controller) return;
  ui.prompt.value = "";
  send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter falls through to a newline; never send mid-IME composition.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.form.requestSubmit();
  }
});

// Aborting the fetch closes the connection, which is what makes the server stop generating.
ui.stop.addEventListener("click", () => controller && controller.abort());

ui.newChat.addEventListener("click", () => {
  const chat = newChat();
  state.chats.push(chat);
  state.current = chat.id;
  save();
  renderAll();
  ui.prompt.focus();
});

renderAll();
loadModelName();
