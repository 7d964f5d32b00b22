// A small Markdown renderer for chat messages. It escapes ALL HTML first, then
// adds the few constructs chat needs: fenced and inline code, bold, italics,
// links (http/https only), headings, lists and paragraphs. No raw HTML survives.
"use strict";

(function (global) {
  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function inline(text) {
    // text is already escaped; code spans are protected from the other rules
    const spans = [];
    text = text.replace(/`([^`\n]+)`/g, (_, code) => {
      spans.push("<code>" + code + "</code>");
      return "\u0000" + (spans.length - 1) + "\u0000";
    });
    text = text
      .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>")
      .replace(/\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g,
               '<a href="$2" rel="noopener noreferrer nofollow" target="_blank">$1</a>');
    return text.replace(/\u0000(\d+)\u0000/g, (_, i) => spans[Number(i)]);
  }

  function render(source) {
    const lines = escapeHtml(source || "").split("\n");
    const out = [];
    let list = null;
    let paragraph = [];
    const flush = () => {
      if (paragraph.length) out.push("<p>" + inline(paragraph.join("<br>")) + "</p>");
      paragraph = [];
      if (list) { out.push("</" + list + ">"); list = null; }
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (line.startsWith("```")) {
        flush();
        const code = [];
        for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
        out.push("<pre><code>" + code.join("\n") + "</code></pre>");
        continue;
      }
      const heading = /^(#{1,4}) (.*)$/.exec(line);
      const bullet = /^\s*[-*] (.*)$/.exec(line);
      const numbered = /^\s*\d+[.)] (.*)$/.exec(line);
      if (heading) { flush(); out.push("<h4>" + inline(heading[2]) + "</h4>"); }
      else if (bullet || numbered) {
        if (paragraph.length) { out.push("<p>" + inline(paragraph.join("<br>")) + "</p>"); paragraph = []; }
        const kind = bullet ? "ul" : "ol";
        if (list !== kind) { if (list) out.push("</" + list + ">"); out.push("<" + kind + ">"); list = kind; }
        out.push("<li>" + inline((bullet || numbered)[1]) + "</li>");
      } else if (!line.trim()) { flush(); }
      else { if (list) { out.push("</" + list + ">"); list = null; } paragraph.push(line); }
    }
    flush();
    return out.join("");
  }

  global.renderMarkdown = render;
  global.escapeHtml = escapeHtml;
})(window);
