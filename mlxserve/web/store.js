// What the page keeps in localStorage: conversations, settings and the API key.
//
// Each key carries a version, so a later format can migrate. Corrupt or
// missing values never brick the page: they fall back to a fresh start.

export const CHATS_KEY = "mlxserve.chats.v1";
export const SETTINGS_KEY = "mlxserve.settings.v1";
export const API_KEY_KEY = "mlxserve.apiKey.v1";

// Chats: { current: "<id>", chats: [{ id, title, messages: [Message] }] }
// (a Message's fields: see messages.js)

export const DEFAULT_SETTINGS = {
  model: "", // the model picked in the header; empty = the server's first loaded model
  system: "", // system prompt; empty = none
  temperature: "", // empty = the model's default
  top_p: "",
  max_tokens: "",
  tools: "", // a JSON array of OpenAI tool definitions; empty = none
};

function read(key) {
  try {
    return JSON.parse(localStorage.getItem(key));
  } catch (e) {
    return null;
  }
}

/** Writes `value`; returns an error message when the browser refuses (quota, privacy mode). */
function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return null;
  } catch (e) {
    return e.message;
  }
}

export function newChat() {
  const id = Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  return { id, title: "New chat", messages: [] };
}

export function loadChats() {
  const saved = read(CHATS_KEY);
  if (saved && Array.isArray(saved.chats) && saved.chats.length) {
    // Keep only well-formed chats, so a hand-edited store cannot break rendering.
    const chats = saved.chats.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages));
    if (chats.length) {
      for (const c of chats) {
        c.title = String(c.title ?? "Untitled");
        c.messages = c.messages.filter((m) => m && ["user", "assistant", "tool"].includes(m.role)).map(cleanMessage);
      }
      return { current: saved.current, chats };
    }
  }
  const chat = newChat();
  return { current: chat.id, chats: [chat] };
}

const text = (value) => (value == null ? "" : String(value));

// A stored message with every field the page reads in the type it expects.
function cleanMessage(m) {
  const calls = Array.isArray(m.tool_calls) ? m.tool_calls.filter((c) => c && c.function) : [];
  return {
    ...m,
    content: text(m.content),
    reasoning: text(m.reasoning),
    note: text(m.note),
    stats: text(m.stats),
    tool_calls: calls.length
      ? calls.map((c) => ({ id: text(c.id), type: "function", function: { name: text(c.function.name), arguments: text(c.function.arguments) } }))
      : undefined,
  };
}

export const saveChats = (state) => write(CHATS_KEY, state);

export function loadSettings() {
  const saved = read(SETTINGS_KEY);
  const settings = { ...DEFAULT_SETTINGS };
  if (saved && typeof saved === "object") {
    for (const key of Object.keys(DEFAULT_SETTINGS)) {
      if (typeof saved[key] === "string") settings[key] = saved[key];
    }
  }
  return settings;
}

export const saveSettings = (settings) => write(SETTINGS_KEY, settings);

export const loadApiKey = () => {
  const key = read(API_KEY_KEY);
  return typeof key === "string" ? key : "";
};

export const saveApiKey = (key) => (key ? write(API_KEY_KEY, key) : localStorage.removeItem(API_KEY_KEY));
