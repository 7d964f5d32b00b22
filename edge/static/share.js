// A shared conversation: the snapshot's messages, drawn with the chat's escaped
// Markdown. The page shows them as plain text first, so it reads without scripts.
"use strict";

(function () {
  // The server writes times in UTC (ISO 8601); the reader sees them in their own zone.
  document.querySelectorAll("time[datetime]").forEach((element) => {
    const when = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      element.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    }
  });
  const data = document.getElementById("snapshot");
  if (!data || !window.renderMarkdown) return;
  const messages = JSON.parse(data.textContent);
  const bodies = document.querySelectorAll("#messages .msg .body");
  messages.forEach((message, i) => {
    if (bodies[i]) bodies[i].innerHTML = window.renderMarkdown(message.text || "");
  });
})();
