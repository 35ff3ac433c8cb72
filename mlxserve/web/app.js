// mlxserve chat page: plain JS modules, no build step, no third-party code.
//
// Safety rule: model (and user) text only ever reaches the DOM as text nodes
// (markdown.js builds elements itself), never as HTML, so a hostile answer is
// shown literally instead of being run.

import { ApiError, chatBody, listModels, parseTools, streamChat } from "./api.js";
import { askApiKey } from "./keydialog.js";
import { el, fillMessage, formatStats, messageElement, wireMessages } from "./messages.js";
import * as store from "./store.js";

// Retries while the server says to come back: 429 (queue full) and 503 (a model loading,
// or no slot within the queue timeout). Loading a large model can take a while.
const MAX_RETRIES = { 429: 5, 503: 40 };

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), chats: $("chats"), messages: $("messages"), error: $("error"),
  stats: $("stats"), form: $("composer"), prompt: $("prompt"), send: $("send"),
  stop: $("stop"), newChat: $("new-chat"), conversation: $("conversation"), announce: $("announce"),
  sidebar: $("sidebar"), toggleChats: $("toggle-chats"),
  settings: $("settings"), openSettings: $("open-settings"), settingsForm: $("settings-form"),
  settingsProblem: $("settings-problem"), keyState: $("key-state"), forgetKey: $("forget-key"),
};

let state = store.loadChats();
let settings = store.loadSettings();
let apiKey = store.loadApiKey();
let controller = null; // the AbortController of the answer in flight, if any

function save() {
  const problem = store.saveChats(state);
  if (problem) showError("Could not save the conversation in this browser: " + problem);
}

function currentChat() {
  return state.chats.find((c) => c.id === state.current) || state.chats[state.chats.length - 1];
}

// ---- messages ----------------------------------------------------------------

// The form under an answer's tool calls: the person plays the tools and types their
// results; all are sent together, as the model expects one result per call.
function toolResultsForm(chat, calls) {
  const form = el("form", "toolresult");
  const inputs = calls.map((call, i) => {
    const input = el("textarea");
    input.id = `tool-result-${i}`;
    input.rows = 2;
    input.required = true;
    const label = el("label", "", `Result of ${call.function.name}`);
    label.htmlFor = input.id;
    form.append(label, input);
    return input;
  });
  const button = el("button", "", calls.length > 1 ? "Send results" : "Send result");
  button.type = "submit";
  form.append(button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (controller) return;
    calls.forEach((call, i) => {
      chat.messages.push({ role: "tool", tool_call_id: call.id, name: call.function.name, content: inputs[i].value.trim() });
    });
    answer(chat);
  });
  return form;
}

// Tool calls of the last answer that have no result yet.
function unansweredCalls(chat) {
  const last = chat.messages[chat.messages.length - 1];
  if (!last || last.role !== "assistant" || !last.tool_calls) return [];
  return last.tool_calls.filter((c) => c && c.id);
}

function renderMessages() {
  const chat = currentChat();
  ui.messages.replaceChildren(...chat.messages.map(messageElement));
  const pending = controller ? [] : unansweredCalls(chat);
  if (pending.length) ui.messages.lastElementChild.append(toolResultsForm(chat, pending));
  scrollDown();
}

// ---- conversations list ------------------------------------------------------

function chatItem(chat) {
  const li = el("li");
  const open = el("button", "open", chat.title);
  open.type = "button";
  open.title = chat.title;
  open.setAttribute("aria-current", String(chat.id === state.current));
  open.addEventListener("click", () => {
    state.current = chat.id;
    save();
    renderAll();
    closeSidebar();
    ui.prompt.focus();
  });
  const rename = el("button", "icon rename", "✎");
  rename.type = "button";
  rename.setAttribute("aria-label", `Rename chat: ${chat.title}`);
  rename.title = "Rename";
  rename.addEventListener("click", () => startRename(li, chat));
  const remove = el("button", "icon delete", "✕");
  remove.type = "button";
  remove.setAttribute("aria-label", `Delete chat: ${chat.title}`);
  remove.title = "Delete";
  remove.addEventListener("click", () => {
    // Two steps, so a stray click cannot lose a conversation.
    if (!remove.classList.contains("confirm")) {
      remove.classList.add("confirm");
      remove.textContent = "Delete?";
      remove.setAttribute("aria-label", `Confirm: delete chat ${chat.title}`);
      setTimeout(() => remove.isConnected && renderChats(), 4000);
      return;
    }
    deleteChat(chat.id);
  });
  for (const b of [open, rename, remove]) b.disabled = Boolean(controller);
  li.append(open, rename, remove);
  return li;
}

function startRename(li, chat) {
  const input = el("input", "rename-input");
  input.value = chat.title;
  input.setAttribute("aria-label", "Chat title");
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (keep && title) {
      chat.title = title;
      save();
    }
    renderChats();
    ui.chats.querySelector(`[data-id="${CSS.escape(chat.id)}"] .rename`)?.focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== "Escape") return;
    // Focus moves to the rename button: the key must not go on to "click" it.
    event.preventDefault();
    finish(event.key === "Enter");
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function deleteChat(id) {
  const index = state.chats.findIndex((c) => c.id === id);
  state.chats.splice(index, 1);
  if (!state.chats.length) state.chats.push(store.newChat());
  if (!state.chats.some((c) => c.id === state.current)) state.current = state.chats[state.chats.length - 1].id;
  save();
  renderAll();
  ui.newChat.focus();
}

function renderChats() {
  ui.chats.replaceChildren(
    ...state.chats.slice().reverse().map((chat) => {
      const li = chatItem(chat);
      li.dataset.id = chat.id;
      return li;
    })
  );
}

function renderAll() {
  renderChats();
  renderMessages();
  hideError();
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
  renderChats();
}

function closeSidebar() {
  ui.sidebar.classList.remove("open");
  ui.toggleChats.setAttribute("aria-expanded", "false");
}

// ---- API key -------------------------------------------------------------------

/** Runs `call(apiKey)`, asking for the key (and retrying) while the server answers 401. */
async function withKey(call) {
  for (;;) {
    try {
      return await call(apiKey);
    } catch (e) {
      if (!(e instanceof ApiError && e.kind === "auth")) throw e;
      const key = await askApiKey(Boolean(apiKey));
      if (key === null) throw new ApiError("auth", "This server needs an API key: " + e.message, { status: 401 });
      apiKey = key;
      store.saveApiKey(key);
      renderKeyState();
    }
  }
}

// Fills the model picker from /v1/models; the choice is kept with the settings.
async function loadModels() {
  let models;
  try {
    models = await withKey(listModels);
  } catch (e) {
    ui.model.replaceChildren(new Option("unavailable", ""));
    showError(e.message);
    return;
  }
  ui.model.replaceChildren(...models.map((m) => new Option(m.loaded ? m.id : `${m.id} (not loaded)`, m.id)));
  if (models.some((m) => m.id === settings.model)) ui.model.value = settings.model;
}

ui.model.addEventListener("change", () => {
  settings.model = ui.model.value;
  store.saveSettings(settings);
});

// ---- answering -------------------------------------------------------------------

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("Stopped", "AbortError"));
    });
  });
}

// Streams one answer into `reply`, redrawing `li` as deltas arrive.
async function streamAnswer(body, reply, li, signal) {
  const figures = { started: performance.now(), firstToken: null, last: null, chunks: 0 };
  let usage = null;
  const draw = () => {
    frame = null;
    // Follow the answer only if the reader has not scrolled up to read something else.
    const c = ui.conversation;
    const following = c.scrollHeight - c.scrollTop - c.clientHeight < 60;
    fillMessage(li, reply);
    ui.stats.textContent = formatStats(figures, usage, true);
    if (following) scrollDown();
  };
  // The first token shows at once; then at most one redraw per frame, as a fast
  // model sends more tokens than the screen can show.
  let frame = null;
  let drawn = false;
  const redraw = () => {
    if (!drawn && figures.firstToken !== null) {
      drawn = true;
      draw();
    } else {
      frame ??= requestAnimationFrame(draw);
    }
  };
  try {
    for await (const event of streamChat(body, { apiKey, signal })) {
      if (event.type === "queued") {
        // Only while waiting for a slot: the first token clears it.
        if (figures.firstToken === null) {
          reply.note = `waiting (${event.position} ahead)`;
          redraw();
        }
        continue;
      }
      const chunk = event.chunk;
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      if (delta.content || delta.reasoning_content || delta.tool_calls) {
        figures.last = performance.now();
        figures.chunks += 1;
        if (figures.firstToken === null) {
          figures.firstToken = figures.last;
          reply.note = "";
          li.querySelector(".reasoning").open = Boolean(delta.reasoning_content);
        }
      }
      if (delta.content) reply.content += delta.content;
      if (delta.reasoning_content) reply.reasoning = (reply.reasoning || "") + delta.reasoning_content;
      for (const part of delta.tool_calls || []) {
        // OpenAI's streaming shape: id and name come first, arguments in fragments, by index.
        reply.tool_calls = reply.tool_calls || [];
        const call = (reply.tool_calls[part.index] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
        if (part.id) call.id = part.id;
        if (part.function && part.function.name) call.function.name = part.function.name;
        if (part.function && part.function.arguments) call.function.arguments += part.function.arguments;
      }
      if (choice.finish_reason === "length") reply.note = "(cut off: max tokens reached, finish_reason length)";
      redraw();
    }
  } finally {
    // A frame still pending would draw into the page after the final render.
    if (frame !== null) cancelAnimationFrame(frame);
    // Figures for what arrived, a stopped or broken answer included.
    figures.last = figures.last || performance.now();
    if (figures.firstToken !== null || usage) reply.stats = formatStats(figures, usage, false);
  }
}

/** Gets the assistant's next message in `chat`: streamed, with retries for 401 and 429. */
async function answer(chat) {
  const reply = { role: "assistant", content: "" };
  let body;
  try {
    body = chatBody(settings, wireMessages(chat), ui.model.value);
  } catch (e) {
    save();
    renderMessages();
    showError(e.message);
    return;
  }
  chat.messages.push(reply);
  controller = new AbortController();
  const signal = controller.signal;
  setBusy(true);
  save();
  renderMessages();
  hideError();
  const li = ui.messages.lastElementChild;
  reply.note = "…";
  fillMessage(li, reply);
  let retries = 0;
  try {
    for (;;) {
      try {
        await withKey(() => streamAnswer(body, reply, li, signal));
        hideError();
        break;
      } catch (e) {
        const limit = MAX_RETRIES[e.status] || 0;
        if (!(e instanceof ApiError && e.kind === "busy" && retries < limit)) throw e;
        retries += 1;
        for (let left = e.retryAfter; left > 0; left--) {
          showError(
            `The server is ${e.status === 429 ? "busy" : "unavailable"} (${e.status}, Retry-After: ${e.retryAfter} s): ${e.message} ` +
              `Retrying in ${left} s (try ${retries} of ${limit}); Stop cancels.`
          );
          await sleep(1000, signal);
        }
        showError(`Retrying now (try ${retries} of ${limit}).`);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      reply.note = "(stopped)";
    } else {
      reply.note = "(failed)";
      let text = e.message;
      if (e.kind === "context") text += " Start a new chat, or shorten the message or the max tokens setting.";
      else if (e.kind === "busy") text = `The server is still busy after ${retries} retries: ${e.message}`;
      else if (!(e instanceof ApiError)) text = "Unexpected error: " + e.message;
      showError(text);
    }
  } finally {
    controller = null;
    ui.stats.textContent = ""; // the live figures; the final ones stay under the answer
    setBusy(false);
    save();
    renderMessages();
    ui.announce.textContent = ["Answer:", ui.messages.lastElementChild.querySelector(".body").textContent,
      ...(reply.tool_calls || []).map((c) => "Tool call: " + c.function.name), reply.note].filter(Boolean).join(" ");
    ui.prompt.focus();
  }
}

async function send(text) {
  const chat = currentChat();
  if (!chat.messages.length && chat.title === "New chat") chat.title = text.slice(0, 40);
  chat.messages.push({ role: "user", content: text });
  renderChats();
  await answer(chat);
}

// ---- settings ----------------------------------------------------------------------

function renderKeyState() {
  ui.keyState.textContent = apiKey ? "An API key is stored in this browser." : "No API key stored.";
  ui.forgetKey.disabled = !apiKey;
}

function fillSettings() {
  for (const [name, value] of Object.entries(settings)) {
    const field = ui.settingsForm.elements[name];
    if (field) field.value = value;
  }
  renderKeyState();
  checkSettings();
}

function checkSettings() {
  try {
    parseTools(settings.tools);
    chatBody(settings, [], null);
    ui.settingsProblem.textContent = "";
  } catch (e) {
    ui.settingsProblem.textContent = e.message;
  }
}

ui.settingsForm.addEventListener("input", (event) => {
  const name = event.target.name;
  if (!(name in settings)) return;
  settings[name] = event.target.value;
  store.saveSettings(settings);
  checkSettings();
});

ui.openSettings.addEventListener("click", () => {
  fillSettings();
  ui.settings.showModal();
});

ui.forgetKey.addEventListener("click", () => {
  apiKey = "";
  store.saveApiKey("");
  renderKeyState();
});

// ---- events ------------------------------------------------------------------------

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || controller) return;
  try {
    chatBody(settings, [], null); // invalid settings: say so and keep the message
  } catch (e) {
    showError(e.message);
    return;
  }
  ui.prompt.value = "";
  send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter falls through to a newline; never send mid-IME composition.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.form.requestSubmit();
  }
  if (event.key === "Escape" && controller) controller.abort();
});

// Aborting the fetch closes the connection, which is what makes the server stop generating.
ui.stop.addEventListener("click", () => controller && controller.abort());

ui.newChat.addEventListener("click", () => {
  const chat = store.newChat();
  state.chats.push(chat);
  state.current = chat.id;
  save();
  renderAll();
  closeSidebar();
  ui.prompt.focus();
});

ui.toggleChats.addEventListener("click", () => {
  const open = ui.sidebar.classList.toggle("open");
  ui.toggleChats.setAttribute("aria-expanded", String(open));
});

renderAll();
loadModels();
