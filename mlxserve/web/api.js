// Talking to mlxserve: the request body, the SSE stream, and errors as one type.

/**
 * Everything that can go wrong with a request, sorted by what the page does about it.
 * kind: "auth" (401: ask for the key), "busy" (429, or 503 with Retry-After: wait and retry),
 * "context" (400 context_length_exceeded), "http" (any other status), "network" (no
 * response), "lost" (connection dropped mid-answer), "stream" (an error event in the stream),
 * "settings" (the page's own settings are invalid).
 */
export class ApiError extends Error {
  constructor(kind, message, { status = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// The server's Retry-After for a queue timeout (its gate.py), which an in-band error cannot carry.
const QUEUE_TIMEOUT_RETRY_AFTER = 5;

function headers(apiKey, json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

async function errorFrom(response) {
  let message = response.statusText || "request failed";
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code;
    }
  } catch (e) {
    // Not JSON (a proxy's page, say): keep the status text.
  }
  const status = response.status;
  const after = parseInt(response.headers.get("Retry-After"), 10);
  const retryAfter = Number.isFinite(after) && after >= 0 ? after : null;
  if (status === 401) return new ApiError("auth", message, { status });
  if (status === 429 || (status === 503 && retryAfter !== null)) {
    return new ApiError("busy", message, { status, retryAfter: retryAfter ?? 2 });
  }
  if (status === 400 && code === "context_length_exceeded") return new ApiError("context", message, { status });
  return new ApiError("http", `Error ${status}: ${message}`, { status });
}

async function request(path, init) {
  try {
    return await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("network", `Could not reach the server at ${location.origin}. Is mlxserve running?`);
  }
}

/** The server's models, from /v1/models: [{id, loaded}], loaded ones first. */
export async function listModels(apiKey) {
  const response = await request("/v1/models", { headers: headers(apiKey, false) });
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  const models = body.data.map((m) => ({ id: String(m.id), loaded: !m.mlxserve || m.mlxserve.loaded !== false }));
  return models.filter((m) => m.loaded).concat(models.filter((m) => !m.loaded));
}

function numberSetting(value, name, { min, max, integer }) {
  if (String(value).trim() === "") return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new ApiError("settings", `Settings: ${name} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max}.`);
  }
  return n;
}

/** The tools setting as a list, or undefined when empty; ApiError("settings") when invalid. */
export function parseTools(text) {
  if (!text.trim()) return undefined;
  let tools;
  try {
    tools = JSON.parse(text);
  } catch (e) {
    throw new ApiError("settings", `Settings: Tools (JSON) is not valid JSON (${e.message}).`);
  }
  if (!Array.isArray(tools) || !tools.every((t) => t && t.type === "function" && t.function && t.function.name)) {
    throw new ApiError("settings", 'Settings: Tools (JSON) must be a list of {"type": "function", "function": {"name": ...}}.');
  }
  return tools;
}

/**
 * The /v1/chat/completions body for `messages` (already in wire form) under `settings`.
 * Values left empty in the settings are not sent, so the server's defaults apply.
 */
export function chatBody(settings, messages, model) {
  const body = {
    model: model || undefined,
    messages: settings.system.trim() ? [{ role: "system", content: settings.system }, ...messages] : messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberSetting(settings.temperature, "temperature", { min: 0, max: 2 }),
    top_p: numberSetting(settings.top_p, "top_p", { min: 0, max: 1 }),
    max_tokens: numberSetting(settings.max_tokens, "max tokens", { min: 1, max: 1e9, integer: true }),
    tools: parseTools(settings.tools),
  };
  return JSON.parse(JSON.stringify(body)); // drops the undefined fields
}

/**
 * Streams a chat completion. Yields {type: "queued", position} for each
 * `: queued position=N` comment (sent while the request waits for a slot) and
 * {type: "chunk", chunk} for each data event, until `data: [DONE]`.
 * Throws ApiError, or an AbortError once `signal` is aborted (checked per event,
 * so nothing already received is shown after Stop).
 */
export async function* streamChat(body, { apiKey, signal }) {
  const response = await request("/v1/chat/completions", {
    method: "POST",
    headers: headers(apiKey, true),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e.name === "AbortError" || signal.aborted) throw new DOMException("Stopped", "AbortError");
      throw new ApiError("lost", "The connection to the server was lost mid-answer.");
    }
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop(); // a partial line waits for the next read
    for (const line of lines) {
      if (signal.aborted) throw new DOMException("Stopped", "AbortError");
      if (line === "") {
        // A blank line ends an event.
        if (!data.length) continue;
        const payload = data.join("\n");
        data = [];
        if (payload === "[DONE]") return;
        const event = JSON.parse(payload);
        // Once the stream has started, errors arrive as an event, not a status. A queued
        // stream that got no slot in time is told so this way: like a 503, worth a retry.
        if (event.error && event.error.code === "queue_timeout") {
          throw new ApiError("busy", event.error.message, { status: 503, retryAfter: QUEUE_TIMEOUT_RETRY_AFTER });
        }
        if (event.error) throw new ApiError("stream", event.error.message || "The server reported an error.");
        yield { type: "chunk", chunk: event };
      } else if (line.startsWith(":")) {
        const queued = /^:\s*queued position=(\d+)/.exec(line);
        if (queued) yield { type: "queued", position: parseInt(queued[1], 10) };
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
  if (signal.aborted) throw new DOMException("Stopped", "AbortError");
  throw new ApiError("lost", "The server closed the connection before the answer was complete.");
}
