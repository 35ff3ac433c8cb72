// A small Markdown renderer that builds DOM nodes only.
//
// Model text never passes through an HTML parser: every piece of it goes into
// the page as a text node or an attribute set by code, so raw HTML in an
// answer (<img onerror=...>, <script>) is shown literally and nothing runs.
// Links are kept only for http:, https: and mailto: targets. Images are never
// loaded (an answer could otherwise make the browser fetch any URL); they are
// shown as links.
//
// Covers what chat models write: paragraphs, headings, fenced and indented
// code (with a copy button), block quotes, ordered and bullet lists (nested),
// GFM tables, rules, inline code, **strong**, *emphasis*, ~~strike~~, links
// and bare URLs. Unclosed constructs (mid-stream) render as best they can.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(\s+|$)/;
const TABLE_DELIMITER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const BARE_URL = /^https?:\/\/[^\s<>"]*[^\s<>".,;:!?)\]'*_~]/i;
const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>\"'";
// How far ahead a link label or an emphasis may close: bounds the work per
// character, so text full of unmatched brackets or stars cannot stall the page.
const LOOKAHEAD = 2000;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/** Renders `text` as Markdown into `target`, replacing what was there. */
export function renderMarkdown(target, text) {
  target.replaceChildren(...blocks(String(text).replace(/\r\n?/g, "\n").split("\n")));
}

/** A link element for `url`, or null when the URL is not http(s)/mailto. */
function safeLink(url) {
  const trimmed = url.trim();
  if (!SAFE_URL.test(trimmed)) return null;
  let parsed;
  try {
    parsed = new URL(trimmed);
  } catch (e) {
    return null;
  }
  if (!["http:", "https:", "mailto:"].includes(parsed.protocol)) return null;
  const a = el("a");
  a.href = parsed.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

// ---- blocks -------------------------------------------------------------------

function isBlank(line) {
  return line.trim() === "";
}

// Does `line` start a block other than a paragraph (so it ends a paragraph)?
function startsBlock(line, next) {
  return (
    FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
    ITEM.test(line) || (line.includes("|") && next !== undefined && TABLE_DELIMITER.test(next) && next.includes("-"))
  );
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (isBlank(line)) {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end, mid-stream)
      out.push(codeBlock(body.join("\n"), m[2]));
    } else if (/^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || (isBlank(lines[i]) && /^( {4}|\t)/.test(lines[i + 1] || "")))) {
        body.push(lines[i].replace(/^( {4}|\t)/, ""));
        i += 1;
      }
      out.push(codeBlock(body.join("\n"), ""));
    } else if ((m = HEADING.exec(line))) {
      const h = el("h" + m[1].length);
      inline(h, m[2] || "");
      out.push(h);
      i += 1;
    } else if (RULE.test(line)) {
      out.push(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        body.push(lines[i].replace(QUOTE, ""));
        i += 1;
      }
      const quote = el("blockquote");
      quote.append(...blocks(body));
      out.push(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, out);
    } else if (line.includes("|") && TABLE_DELIMITER.test(lines[i + 1] || "") && lines[i + 1].includes("-")) {
      i = table(lines, i, out);
    } else {
      const body = [line];
      i += 1;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i], lines[i + 1])) {
        body.push(lines[i]);
        i += 1;
      }
      const p = el("p");
      inline(p, body.map((l) => l.trim()).join("\n"));
      out.push(p);
    }
  }
  return out;
}

function codeBlock(code, language) {
  const wrap = el("div", "codeblock");
  const head = el("div", "codehead");
  const label = el("span", "lang");
  label.textContent = language || "code";
  const copy = el("button", "copy");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy ${language || "code"} to the clipboard`);
  copy.addEventListener("click", () => copyText(copy, code));
  head.append(label, copy);
  const pre = el("pre");
  const codeEl = el("code");
  if (language) codeEl.dataset.language = language;
  codeEl.textContent = code;
  pre.append(codeEl);
  wrap.append(head, pre);
  return wrap;
}

async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (e) {
    // No clipboard access (plain http on another host, or denied): say so.
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

// Lists: items at the first item's indent; deeper lines belong to the item.
function list(lines, i, out) {
  const first = ITEM.exec(lines[i]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const listEl = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) listEl.start = parseInt(first[2], 10);
  let loose = false;
  const items = [];
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const contentIndent = m[1].length + m[2].length + Math.min(Math.max(m[3].length, 1), 4);
    const body = [lines[i].slice(m[0].length)];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        // A blank line continues the item only if an indented line follows.
        const next = lines[i + 1];
        if (next !== undefined && leadingSpaces(next) > indent && !isBlank(next)) {
          body.push("");
          loose = true;
          i += 1;
          continue;
        }
        if (next !== undefined && ITEM.test(next) && leadingSpaces(next) === indent) loose = true;
        i += 1;
        break;
      }
      const nested = ITEM.exec(line);
      if (leadingSpaces(line) > indent) {
        body.push(line.slice(Math.min(leadingSpaces(line), contentIndent)));
      } else if (nested) {
        break;
      } else if (startsBlock(line, lines[i + 1])) {
        break;
      } else {
        body.push(line.trim()); // a lazy continuation line
      }
      i += 1;
    }
    items.push(body);
    if (i < lines.length && !ITEM.test(lines[i])) break;
  }
  for (const body of items) {
    const li = el("li");
    const content = blocks(body);
    if (!loose) {
      // A tight list: a paragraph's text goes straight into the item.
      for (const node of content) {
        if (node.tagName === "P") li.append(...node.childNodes);
        else li.append(node);
      }
    } else {
      li.append(...content);
    }
    listEl.append(li);
  }
  out.push(listEl);
  return i;
}

function leadingSpaces(line) {
  return line.length - line.trimStart().length;
}

function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  // Split on pipes that are not escaped and not inside a code span.
  const out = [];
  let cell = "";
  let ticks = false;
  for (let k = 0; k < row.length; k++) {
    const c = row[k];
    if (c === "\\" && row[k + 1] === "|") {
      cell += "|";
      k += 1;
    } else if (c === "`") {
      ticks = !ticks;
      cell += c;
    } else if (c === "|" && !ticks) {
      out.push(cell.trim());
      cell = "";
    } else {
      cell += c;
    }
  }
  out.push(cell.trim());
  return out;
}

function table(lines, i, out) {
  const head = cells(lines[i]);
  const aligns = cells(lines[i + 1]).map((d) =>
    d.startsWith(":") && d.endsWith(":") ? "center" : d.endsWith(":") ? "right" : d.startsWith(":") ? "left" : ""
  );
  i += 2;
  const wrap = el("div", "tablewrap");
  const tableEl = el("table");
  const thead = el("thead");
  thead.append(row(head, "th", aligns, head.length));
  const tbody = el("tbody");
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    tbody.append(row(cells(lines[i]), "td", aligns, head.length));
    i += 1;
  }
  tableEl.append(thead, tbody);
  wrap.append(tableEl);
  out.push(wrap);
  return i;
}

function row(values, tag, aligns, width) {
  const tr = el("tr");
  for (let k = 0; k < width; k++) {
    const cell = el(tag);
    if (tag === "th") cell.scope = "col";
    if (aligns[k]) cell.style.textAlign = aligns[k];
    inline(cell, values[k] || "");
    tr.append(cell);
  }
  return tr;
}

// ---- inline -------------------------------------------------------------------

const EMPHASIS = [
  ["**", "strong"],
  ["__", "strong"],
  ["~~", "del"],
  ["*", "em"],
  ["_", "em"],
];

// Appends the inline Markdown `text` to `parent`. `inLink` stops nested links.
function inline(parent, text, inLink = false) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = "";
  };
  let k = 0;
  while (k < text.length) {
    const c = text[k];
    const rest = text.slice(k);
    let m;
    if (c === "\\" && ESCAPABLE.includes(text[k + 1] || "x")) {
      plain += text[k + 1];
      k += 2;
      continue;
    }
    if (c === "\n") {
      flush();
      parent.append(el("br"));
      k += 1;
      continue;
    }
    if (c === "`") {
      const run = /^`+/.exec(rest)[0];
      const close = text.indexOf(run, k + run.length);
      if (close > 0) {
        flush();
        const code = el("code");
        code.textContent = text.slice(k + run.length, close).replace(/\n/g, " ");
        parent.append(code);
        k = close + run.length;
        continue;
      }
      plain += run;
      k += run.length;
      continue;
    }
    if (!inLink && (c === "[" || (c === "!" && text[k + 1] === "["))) {
      const image = c === "!";
      const link = parseLink(text, image ? k + 1 : k);
      if (link) {
        const a = safeLink(link.url);
        flush();
        if (a) {
          if (link.title) a.title = link.title;
          if (image) a.textContent = "image: " + (link.label || link.url);
          else inline(a, link.label, true);
          parent.append(a);
        } else {
          // Not a link we allow: keep the label, drop the target.
          inline(parent, link.label, true);
        }
        k = link.end;
        continue;
      }
    }
    if (!inLink && c === "<" && (m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(rest))) {
      const a = safeLink(m[1]);
      if (a) {
        flush();
        a.textContent = m[1];
        parent.append(a);
        k += m[0].length;
        continue;
      }
    }
    if (!inLink && (c === "h" || c === "H") && /\w/.test(text[k - 1] || "") === false && (m = BARE_URL.exec(rest))) {
      const a = safeLink(m[0]);
      if (a) {
        flush();
        a.textContent = m[0];
        parent.append(a);
        k += m[0].length;
        continue;
      }
    }
    const span = emphasis(text, k);
    if (span) {
      flush();
      const node = el(span.tag);
      inline(node, span.inner, inLink);
      parent.append(node);
      k = span.end;
      continue;
    }
    plain += c;
    k += 1;
  }
  flush();
}

// [label](url "title") starting at `k`, or null.
function parseLink(text, k) {
  let depth = 0;
  let j = k;
  const end = Math.min(text.length, k + LOOKAHEAD);
  for (; j < end; j++) {
    if (text[j] === "\\") j += 1;
    else if (text[j] === "[") depth += 1;
    else if (text[j] === "]" && --depth === 0) break;
  }
  if (j >= end || text[j + 1] !== "(") return null;
  const m = /^\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+"([^"]*)")?\s*\)/.exec(text.slice(j + 1));
  if (!m) return null;
  return { label: text.slice(k + 1, j), url: m[1], title: m[2], end: j + 1 + m[0].length };
}

// **strong**, __strong__, ~~del~~, *em*, _em_ starting at `k`, or null.
function emphasis(text, k) {
  for (const [marker, tag] of EMPHASIS) {
    if (!text.startsWith(marker, k)) continue;
    const after = text[k + marker.length];
    if (after === undefined || /\s/.test(after) || after === marker[0]) continue;
    // Underscores inside words (snake_case) are not emphasis.
    if (marker[0] === "_" && /\w/.test(text[k - 1] || "")) continue;
    let from = k + marker.length + 1;
    for (;;) {
      const close = text.indexOf(marker, from);
      if (close < 0 || close > k + LOOKAHEAD) break;
      const before = text[close - 1];
      const next = text[close + marker.length];
      const wordy = marker[0] === "_" && /\w/.test(next || "");
      const doubled = marker.length === 1 && next === marker;
      if (!/\s/.test(before) && before !== "\\" && !wordy && !doubled) {
        return { tag, inner: text.slice(k + marker.length, close), end: close + marker.length };
      }
      from = close + (doubled ? 2 : 1);
    }
  }
  return null;
}
