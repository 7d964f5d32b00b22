// Markdown for chat messages, safe by construction: every piece of model text is
// HTML-escaped before it reaches the output; the only markup is what this file writes
// (and what highlight.js and KaTeX write, both of which escape text themselves).
//
// Blocks: fenced code (``` and ~~~, highlighted by highlight.js when loaded, with a copy
// button; an unclosed fence runs to the end, for a reply still streaming), display math
// ($$…$$ and \[…\], by KaTeX when loaded), GitHub pipe tables, headings, nested lists,
// blockquotes, horizontal rules and paragraphs. Inline: code spans, math ($…$ and
// \(…\), pandoc's rule so "$5 and $10" stays text), bold, italics, strikethrough,
// links and bare URLs (http and https only), backslash escapes.
//
// Code spans and math are cut out of the RAW text first (so "<" in TeX and "$" in
// code work) and held behind \u0000 placeholders while the escaped rest is formatted.
// Every scan is linear in the text: a reply is re-rendered on each streamed piece.
"use strict";

(function (global) {
  const document = global.document;
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }

  /** A small first-in-first-out cache: a streamed reply re-renders the same code and math. */
  function cache(limit) {
    const entries = new Map();
    return (key, make) => {
      let value = entries.get(key);
      if (value === undefined) {
        value = make();
        if (entries.size >= limit) entries.delete(entries.keys().next().value);
        entries.set(key, value);
      }
      return value;
    };
  }

  const highlighted = cache(200);
  const typeset = cache(2000);

  // ---------------------------------------------------------------- code and math

  const LANGUAGE = /^[A-Za-z0-9_+#.-]{1,32}$/;

  /** The fence's language if highlight.js knows it, else "" (shown as plain text). */
  function knownLanguage(info) {
    const name = (info.trim().split(/\s/, 1)[0] || "").toLowerCase();
    const hljs = global.hljs;
    if (!LANGUAGE.test(name) || !hljs || typeof hljs.getLanguage !== "function") return "";
    try { return hljs.getLanguage(name) ? name : ""; } catch (_) { return ""; }
  }

  function codeBlock(code, info) {
    const language = knownLanguage(info);
    const body = !language ? escapeHtml(code) : highlighted(language + "\u0000" + code, () => {
      try {
        return global.hljs.highlight(code, { language, ignoreIllegals: true }).value;
      } catch (_) {
        return escapeHtml(code);
      }
    });
    const classes = language ? "hljs language-" + escapeHtml(language) : "hljs";
    return '<div class="code-block"><div class="code-head"><span class="lang">' +
      escapeHtml(language) + '</span><button type="button" class="copy-code">Copy</button>' +
      '</div><pre><code class="' + classes + '">' + body + "</code></pre></div>";
  }

  const KATEX_LIMITS = { throwOnError: false, trust: false, strict: "ignore", maxSize: 20,
                         maxExpand: 1000 };

  /** KaTeX's HTML for tex, or the TeX itself as code when KaTeX is not loaded.
   *
   * KaTeX lays math out with style attributes, which the portal's CSP (style-src 'self')
   * refuses in parsed HTML; they are renamed data-tex-style here and applied through the
   * CSSOM (which CSP allows) by applyMathStyles once the HTML is in the page. KaTeX
   * escapes all text and attribute values, so ' style="' occurs only as its attribute. */
  function math(tex, displayMode) {
    const katex = global.katex;
    if (!katex || typeof katex.renderToString !== "function") {
      return '<code class="math">' + escapeHtml(tex.trim()) + "</code>";
    }
    return typeset((displayMode ? "D" : "I") + tex, () => {
      let html;
      try {
        html = katex.renderToString(tex, Object.assign({ displayMode }, KATEX_LIMITS));
      } catch (_) {
        html = '<code class="math">' + escapeHtml(tex) + "</code>";
      }
      return html.replace(/\u0000/g, "").replace(/ style="/g, ' data-tex-style="');
    });
  }

  // ---------------------------------------------------------------- inline text

  const ESCAPABLE = "\\`*_{}#+-.!|~$<>";

  /** Splits raw inline text into pieces: {text} to escape and format, or {html} ready.
   *
   * Code spans first, so nothing inside one is math; then math and backslash escapes in
   * the text between them. Closers found absent are remembered per kind, so a text full
   * of unmatched openers is still scanned once. */
  function tokenize(text) {
    const pieces = [];
    const missing = Object.create(null);
    const special = /[`\\]/g;
    let pending = 0;
    let match;
    while ((match = special.exec(text)) !== null) {
      const i = match.index;
      if (text[i] === "\\") {
        const next = text[i + 1];
        if (next === "`" || next === "\\") special.lastIndex = i + 2;  // an escape, for later
        continue;
      }
      let run = 1;
      while (text[i + run] === "`") run++;
      const close = closingTicks(text, i + run, run, missing);
      if (close < 0) { special.lastIndex = i + run; continue; }
      let code = text.slice(i + run, close).replace(/\n/g, " ");
      if (code.length > 2 && code[0] === " " && code.endsWith(" ") && code.trim()) {
        code = code.slice(1, -1);
      }
      if (i > pending) mathAndEscapes(text.slice(pending, i), pieces);
      pieces.push({ html: "<code>" + escapeHtml(code) + "</code>" });
      pending = close + run;
      special.lastIndex = pending;
    }
    if (pending < text.length) mathAndEscapes(text.slice(pending), pieces);
    return pieces;
  }

  /** Where the run of exactly `run` backticks closing a code span starts, or -1. */
  function closingTicks(text, from, run, missing) {
    const key = "`" + run;
    if (missing[key]) return -1;
    const ticks = /`+/g;
    ticks.lastIndex = from;
    let found;
    while ((found = ticks.exec(text)) !== null) {
      if (found[0].length === run) return found.index;
    }
    missing[key] = true;
    return -1;
  }

  /** Adds text's pieces to `pieces`: math, escaped characters and the text around them. */
  function mathAndEscapes(text, pieces) {
    const missing = Object.create(null);
    const special = /[$\\]/g;
    let dollarClosers = null;
    let closerAt = 0;
    let lineEnd = -1;
    let pending = 0;
    const emit = (start, end, html) => {
      if (start > pending) pieces.push({ text: text.slice(pending, start) });
      pieces.push({ html });
      pending = end;
      special.lastIndex = end;
    };
    const find = (closer, from) => {
      if (missing[closer]) return -1;
      const at = text.indexOf(closer, from);
      if (at < 0) missing[closer] = true;
      return at;
    };
    let match;
    while ((match = special.exec(text)) !== null) {
      const i = match.index;
      const next = text[i + 1];
      if (text[i] === "\\") {
        if (next === "(" || next === "[") {
          const close = find(next === "(" ? "\\)" : "\\]", i + 2);
          if (close > i + 2) { emit(i, close + 2, math(text.slice(i + 2, close), next === "[")); continue; }
        } else if (next !== undefined && ESCAPABLE.includes(next)) {
          emit(i, i + 2, escapeHtml(next));
          continue;
        }
        special.lastIndex = i + 1;
      } else if (next === "$") {
        const close = find("$$", i + 2);
        if (close > i + 2 && text.slice(i + 2, close).trim()) {
          emit(i, close + 2, math(text.slice(i + 2, close), true));
        } else {
          special.lastIndex = i + 2;
        }
      } else if (next !== undefined && !/\s/.test(next)) {
        // pandoc's rule: "$" opens before a non-space; it closes after a non-space and
        // not before a digit; both on one line.
        if (dollarClosers === null) dollarClosers = validDollarClosers(text);
        while (closerAt < dollarClosers.length && dollarClosers[closerAt] <= i) closerAt++;
        if (lineEnd < i) { lineEnd = text.indexOf("\n", i); if (lineEnd < 0) lineEnd = text.length; }
        const close = closerAt < dollarClosers.length ? dollarClosers[closerAt] : -1;
        if (close > i + 1 && close < lineEnd) emit(i, close + 1, math(text.slice(i + 1, close), false));
      }
    }
    if (pending < text.length) pieces.push({ text: text.slice(pending) });
  }

  function validDollarClosers(text) {
    const positions = [];
    for (let at = text.indexOf("$"); at >= 0; at = text.indexOf("$", at + 1)) {
      const before = text[at - 1];
      const after = text[at + 1];
      if (before !== undefined && !/\s/.test(before) && before !== "\\" &&
          !(after >= "0" && after <= "9")) positions.push(at);
    }
    return positions;
  }

  const LINK = /\[([^\[\]\n]{1,500})\]\((https?:\/\/(?:[^\s()\u0000]|\([^\s()\u0000]*\))+)\)/gi;
  const BARE_URL = /\bhttps?:\/\/(?:[^\s\u0000&<>()]|&amp;|\([^\s\u0000&<>()]*\))+/gi;
  const LINK_ATTRIBUTES = ' rel="noopener noreferrer nofollow" target="_blank"';

  function emphasis(html) {
    return html
      .replace(/\*\*(?=[^\s*])([^*\n]*?[^\s*])\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w])__(?=[^\s_])([^_\n]*?[^\s_])__(?!\w)/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
      .replace(/(^|[^\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>")
      .replace(/~~(?=[^\s~])([^~\n]*?[^\s~])~~/g, "<del>$1</del>");
  }

  /** Formats escaped text; `held` keeps the HTML behind the \u0000 placeholders. */
  function formatInline(pieces) {
    const held = [];
    const hold = (html) => "\u0000" + (held.push(html) - 1) + "\u0000";
    const restore = (html) => html.replace(/\u0000(\d+)\u0000/g, (_, i) => held[Number(i)]);
    let html = "";
    for (const piece of pieces) html += piece.html !== undefined ? hold(piece.html) : escapeHtml(piece.text);
    html = html.replace(LINK, (_, label, url) =>
      hold('<a href="' + url + '"' + LINK_ATTRIBUTES + ">" + restore(emphasis(label)) + "</a>"));
    html = html.replace(BARE_URL, (url) => {
      const trimmed = url.replace(/[.,:;!?*_~]+$/, "");
      return hold('<a href="' + trimmed + '"' + LINK_ATTRIBUTES + ">" + trimmed + "</a>") +
        url.slice(trimmed.length);
    });
    return restore(emphasis(html).replace(/\n/g, "<br>"));
  }

  function inline(text) {
    return formatInline(tokenize(text));
  }

  // ---------------------------------------------------------------- tables

  /** A row's cells as inline HTML; pipes inside code spans, math or after "\" don't split. */
  function tableCells(line) {
    let row = line.trim();
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
    const cells = [[]];
    for (const piece of tokenize(row)) {
      if (piece.html !== undefined) { cells[cells.length - 1].push(piece); continue; }
      const parts = piece.text.split("|");
      parts.forEach((part, index) => {
        if (index > 0) cells.push([]);
        if (part) cells[cells.length - 1].push({ text: part });
      });
    }
    return cells.map((pieces) => formatInline(pieces).trim());
  }

  /** The alignments of a delimiter row such as "|:---|---:|", or null if it is not one. */
  function tableAlignments(line) {
    let row = line.trim();
    if (!row.includes("-") || /[^|:\s-]/.test(row)) return null;
    const piped = row.includes("|");
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|")) row = row.slice(0, -1);
    const alignments = [];
    for (const cell of row.split("|")) {
      const spec = cell.trim();
      if (!/^:?-+:?$/.test(spec)) return null;
      const left = spec.startsWith(":");
      const right = spec.endsWith(":");
      alignments.push(left && right ? "center" : right ? "right" : left ? "left" : "");
    }
    return alignments.length > 1 || piped ? alignments : null;
  }

  function table(header, alignments, rows) {
    const cell = (tag, html, index) =>
      "<" + tag + (alignments[index] ? ' align="' + alignments[index] + '"' : "") + ">" +
      html + "</" + tag + ">";
    const row = (tag, cells) => {
      let html = "<tr>";
      for (let i = 0; i < alignments.length; i++) html += cell(tag, cells[i] || "", i);
      return html + "</tr>";
    };
    let html = '<div class="table-wrap"><table><thead>' + row("th", header) + "</thead>";
    if (rows.length) html += "<tbody>" + rows.map((cells) => row("td", cells)).join("") + "</tbody>";
    return html + "</table></div>";
  }

  // ---------------------------------------------------------------- blocks

  const FENCE = /^(\s*)(`{3,}|~{3,})(.*)$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])(?:\s+(.*))?$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  const MAX_QUOTE_DEPTH = 8;

  function indentOf(line) {
    let width = 0;
    for (const c of line) {
      if (c === " ") width++;
      else if (c === "\t") width += 4;
      else break;
    }
    return width;
  }

  function isRule(line) {
    if (!/^\s{0,3}[-*_]/.test(line) || /[^-*_\s]/.test(line)) return false;
    const marks = line.replace(/\s/g, "");
    return marks.length >= 3 && marks.split(marks[0]).length === marks.length + 1;
  }

  /** Where the display math opened on `lines[start]` closes: {line, at}, or null. */
  function displayMathEnd(lines, start, opener, missing) {
    const closer = opener === "$$" ? "$$" : "\\]";
    if (missing[closer] !== undefined && missing[closer] <= start) return null;
    for (let j = start + 1; j < lines.length; j++) {
      const at = lines[j].indexOf(closer);
      if (at >= 0) return { line: j, at };
    }
    missing[closer] = start;
    return null;
  }

  function renderBlocks(lines, depth) {
    const out = [];
    const lists = [];          // open lists, innermost last: {kind, indent}; each has an open <li>
    const missingMath = {};
    let paragraph = [];
    let item = null;           // raw lines of the open list item's current text
    let itemParagraph = false; // that text follows a blank line: its own <p>
    let blankInList = false;

    const flushParagraph = () => {
      if (paragraph.length) out.push("<p>" + inline(paragraph.join("\n")) + "</p>");
      paragraph = [];
    };
    const flushItem = () => {
      if (item) {
        const html = inline(item.join("\n"));
        out.push(itemParagraph ? "<p>" + html + "</p>" : html);
      }
      item = null;
      itemParagraph = false;
    };
    const closeList = () => { flushItem(); out.push("</li></" + lists.pop().kind + ">"); };
    const closeLists = () => { while (lists.length) closeList(); blankInList = false; };
    /** Before a block: it belongs to the open list item if indented under it. */
    const startBlock = (line) => {
      flushParagraph();
      if (lists.length && indentOf(line) > lists[lists.length - 1].indent) {
        flushItem();
        blankInList = false;
      } else {
        closeLists();
      }
    };

    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const trimmed = line.trim();

      const fence = FENCE.exec(line);
      if (fence && !(fence[2][0] === "`" && fence[3].includes("`"))) {
        startBlock(line);
        const marker = fence[2];
        const indent = fence[1].length;
        const code = [];
        for (i++; i < lines.length; i++) {
          const closing = /^\s*(`{3,}|~{3,})\s*$/.exec(lines[i]);
          if (closing && closing[1][0] === marker[0] && closing[1].length >= marker.length) break;
          const strip = Math.min(indent, /^\s*/.exec(lines[i])[0].length);
          code.push(lines[i].slice(strip));
        }
        if (i >= lines.length && code.length && !code[code.length - 1].trim()) code.pop();
        out.push(codeBlock(code.join("\n"), fence[3]));
        continue;
      }

      const opener = trimmed.startsWith("$$") ? "$$" : trimmed.startsWith("\\[") ? "\\[" : "";
      if (opener && !trimmed.slice(2).includes(opener === "$$" ? "$$" : "\\]")) {
        const end = displayMathEnd(lines, i, opener, missingMath);
        if (end) {
          startBlock(line);
          const parts = [trimmed.slice(2)];
          for (let j = i + 1; j < end.line; j++) parts.push(lines[j]);
          parts.push(lines[end.line].slice(0, end.at));
          out.push('<div class="math-display">' + math(parts.join("\n"), true) + "</div>");
          const rest = lines[end.line].slice(end.at + 2);
          if (rest.trim()) { lines[end.line] = rest; i = end.line - 1; } else { i = end.line; }
          continue;
        }
      }

      if (!trimmed) {
        flushParagraph();
        if (lists.length) blankInList = true;
        continue;
      }

      if (isRule(line)) { startBlock(line); out.push("<hr>"); continue; }

      const heading = HEADING.exec(line);
      if (heading) {
        startBlock(line);
        const tag = "h" + Math.min(heading[1].length + 2, 5);
        out.push("<" + tag + ">" + inline(heading[2]) + "</" + tag + ">");
        continue;
      }

      if (QUOTE.test(line)) {
        startBlock(line);
        const quoted = [];
        for (; i < lines.length; i++) {
          const inner = QUOTE.exec(lines[i]);
          if (!inner) break;
          quoted.push(inner[1]);
        }
        i--;
        const body = depth < MAX_QUOTE_DEPTH ? renderBlocks(quoted, depth + 1)
          : "<p>" + inline(quoted.join("\n")) + "</p>";
        out.push("<blockquote>" + body + "</blockquote>");
        continue;
      }

      if (line.includes("|") && i + 1 < lines.length) {
        const alignments = tableAlignments(lines[i + 1]);
        const header = alignments && tableCells(line);
        if (header && header.length === alignments.length) {
          startBlock(line);
          const rows = [];
          for (i += 2; i < lines.length && lines[i].trim() && lines[i].includes("|"); i++) {
            rows.push(tableCells(lines[i]));
          }
          i--;
          out.push(table(header, alignments, rows));
          continue;
        }
      }

      const listItem = ITEM.exec(line);
      if (listItem) {
        flushParagraph();
        const indent = indentOf(listItem[1]);
        const kind = /\d/.test(listItem[2]) ? "ol" : "ul";
        // Close deeper lists, but an item still indented under the parent's stays a sibling.
        while (lists.length && lists[lists.length - 1].indent > indent &&
               !(lists.length > 1 && indent >= lists[lists.length - 2].indent + 2)) closeList();
        const top = lists[lists.length - 1];
        const sibling = top && indent < top.indent + 2;
        if (sibling && top.kind === kind) {
          flushItem();
          out.push("</li><li>");
        } else {
          if (sibling) closeList(); else flushItem();
          const number = kind === "ol" ? parseInt(listItem[2], 10) : 1;
          out.push("<" + kind + (number !== 1 ? ' start="' + number + '"' : "") + "><li>");
          lists.push({ kind, indent });
        }
        item = [listItem[3] || ""];
        blankInList = false;
        continue;
      }

      if (lists.length) {
        if (!blankInList) {
          if (item) item.push(trimmed);
          else { item = [trimmed]; itemParagraph = true; }
          continue;
        }
        if (indentOf(line) > lists[lists.length - 1].indent) {
          flushItem();
          item = [trimmed];
          itemParagraph = true;
          blankInList = false;
          continue;
        }
        closeLists();
      }
      paragraph.push(line);
    }
    flushParagraph();
    closeLists();
    return out.join("");
  }

  function renderMarkdown(source) {
    const text = String(source == null ? "" : source).replace(/\u0000/g, "").replace(/\r\n?/g, "\n");
    return renderBlocks(text.split("\n"), 0);
  }

  // ---------------------------------------------------------------- in the page

  /** KaTeX's layout styles (see math()), through the CSSOM, for math added to the page. */
  function applyMathStyles(root) {
    for (const node of root.querySelectorAll("[data-tex-style]")) {
      if (node.closest(".katex, .katex-error")) {
        node.style.cssText = node.getAttribute("data-tex-style");
        node.removeAttribute("data-tex-style");
      }
    }
  }

  function copyText(text) {
    const withTextarea = () => {
      const focused = document.activeElement;
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.top = "0";
      area.style.left = "-9999px";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      let copied = false;
      try { copied = document.execCommand("copy"); } catch (_) { copied = false; }
      area.remove();
      if (focused && typeof focused.focus === "function") focused.focus();
      return copied;
    };
    const clipboard = global.navigator && global.navigator.clipboard;
    if (clipboard && typeof clipboard.writeText === "function") {
      return clipboard.writeText(text).then(() => true, withTextarea);
    }
    return Promise.resolve(withTextarea());
  }

  const resetTimers = new WeakMap();

  function onCopyClick(event) {
    const button = event.target && event.target.closest ? event.target.closest(".copy-code") : null;
    const block = button && button.closest(".code-block");
    const code = block && block.querySelector("pre code");
    if (!code) return;
    copyText(code.textContent).then((copied) => {
      button.textContent = copied ? "Copied" : "Copy failed";
      clearTimeout(resetTimers.get(button));
      resetTimers.set(button, setTimeout(() => { button.textContent = "Copy"; }, 1500));
    });
  }

  /** Once per page, even if this file is loaded twice: one click listener, one observer. */
  function installInPage() {
    if (!document || global.__markdownInstalled) return;
    global.__markdownInstalled = true;
    document.addEventListener("click", onCopyClick);
    if (typeof global.MutationObserver === "function") {
      new global.MutationObserver((records) => {
        const roots = new Set();
        for (const record of records) {
          if (record.addedNodes.length && record.target.querySelectorAll) roots.add(record.target);
        }
        roots.forEach(applyMathStyles);
      }).observe(document, { childList: true, subtree: true });
    }
    if (document.body) applyMathStyles(document.body);
  }

  installInPage();
  global.renderMarkdown = renderMarkdown;
  global.escapeHtml = escapeHtml;
})(window);
