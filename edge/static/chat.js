// The chat page: one WebSocket to the room, messages rendered as escaped
// Markdown, replies streamed piece by piece, a stop button, reconnection that
// asks for what was missed.
"use strict";

(function () {
  const root = document.getElementById("chat");
  if (!root) return;
  const csrf = root.dataset.csrf;

  // Rooms: join by name, or make a private one.
  const join = document.getElementById("join-room");
  join.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = join.elements.room.value.trim();
    if (name) window.location.href = "/chat/" + encodeURIComponent(name);
  });
  document.getElementById("new-private").addEventListener("click", async () => {
    const response = await fetch("/api/rooms", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ private: true }),
    });
    const room = await response.json();
    if (response.ok) window.location.href = "/chat/" + encodeURIComponent(room.name);
  });

  const roomName = root.dataset.room;
  if (!roomName) return;

  const list = document.getElementById("messages");
  const statusLine = document.getElementById("status");
  const conn = document.getElementById("conn");
  const members = document.getElementById("members");
  const composer = document.getElementById("composer");
  const stopButton = document.getElementById("stop");
  const balance = document.getElementById("balance");
  const you = root.dataset.you;
  const rendered = new Map(); // message id -> {node, text}
  const mine = new Set(); // reply ids I asked for and that are still going
  const asked = new Set(); // ids of my messages
  let lastId = 0;
  let socket = null;
  let retry = 500;

  function formatTime(iso) {
    try { return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }
    catch (error) { return ""; }
  }

  function show(message) {
    lastId = Math.max(lastId, message.id);
    let entry = rendered.get(message.id);
    if (!entry) {
      const node = document.createElement("article");
      node.className = "msg " + message.role;
      node.dataset.id = message.id;
      node.innerHTML = '<div class="who"></div><div class="body"></div><div class="meta"></div>';
      node.querySelector(".who").textContent = message.who;
      list.appendChild(node);
      entry = { node: node, text: "" };
      rendered.set(message.id, entry);
    }
    entry.text = message.text || "";
    entry.node.querySelector(".body").innerHTML = window.renderMarkdown(entry.text);
    const meta = [formatTime(message.time)];
    if (message.status && message.status !== "done") meta.push(message.status);
    entry.node.querySelector(".meta").textContent = meta.join(" · ");
    list.scrollTop = list.scrollHeight;
  }

  function append(replyId, piece) {
    const entry = rendered.get(replyId);
    if (!entry) return;
    entry.text += piece;
    entry.node.querySelector(".body").innerHTML = window.renderMarkdown(entry.text);
    list.scrollTop = list.scrollHeight;
  }

  function finish(done) {
    const entry = rendered.get(done.reply_id);
    if (entry) {
      entry.text = done.text || entry.text;
      entry.node.querySelector(".body").innerHTML = window.renderMarkdown(entry.text);
      const usage = done.usage || {};
      const parts = [done.status, (usage.completion_tokens || 0) + " tokens", "$" + done.cost];
      if (done.error) parts.push(done.error);
      entry.node.querySelector(".meta").textContent = parts.join(" · ");
    }
    mine.delete(done.reply_id);
    stopButton.hidden = mine.size === 0;
    if (done.balance !== undefined && done.balance !== null) {
      balance.textContent = "$" + (done.balance / 1e6).toFixed(6);
    }
    statusLine.textContent = "";
  }

  function showMembers(event) {
    const more = (event.count || 0) - event.members.length;
    members.textContent = event.members.join(", ") + (more > 0 ? " and " + more + " more" : "");
  }

  function handle(event) {
    switch (event.type) {
      case "ready":
        conn.textContent = "connected";
        conn.className = "state ok";
        if (!rendered.size) event.messages.forEach(show);
        showMembers(event);
        retry = 500;
        break;
      case "sent": asked.add(event.id); break;
      case "message":
        show(event);
        if (event.role === "assistant" && event.status === "streaming" && asked.has(event.reply_to)) {
          mine.add(event.id);
          stopButton.hidden = false;
        }
        break;
      case "delta": append(event.reply_id, event.text); break;
      case "done": finish(event); break;
      case "status": statusLine.textContent = event.message || event.kind; break;
      case "presence": showMembers(event); break;
      case "history": event.messages.forEach(show); break;
      case "error": statusLine.textContent = event.message; break;
    }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/chat/" + encodeURIComponent(roomName));
    socket.addEventListener("open", () => {
      if (lastId) socket.send(JSON.stringify({ type: "resume", after: lastId }));
    });
    socket.addEventListener("message", (message) => {
      try { handle(JSON.parse(message.data)); } catch (error) { console.error(error); }
    });
    socket.addEventListener("close", (event) => {
      conn.textContent = "reconnecting…";
      conn.className = "state";
      if (event.code >= 4000 && event.code < 4100) {
        statusLine.textContent = event.reason || "The room refused the connection.";
        return;
      }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const form = composer.elements;
    const text = form.text.value;
    if (!text.trim()) return;
    const params = {};
    if (form.temperature.value) params.temperature = Number(form.temperature.value);
    if (form.max_tokens.value) params.max_tokens = Math.round(Number(form.max_tokens.value));
    const frame = { type: "message", text: text, model: form.model.value, ask: form.ask.checked, params: params };
    if (form.system.value.trim()) frame.system = form.system.value;
    socket.send(JSON.stringify(frame));
    form.text.value = "";
  });

  composer.elements.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  stopButton.addEventListener("click", () => {
    mine.forEach((id) => socket.send(JSON.stringify({ type: "stop", reply_id: id })));
  });

  connect();
})();
