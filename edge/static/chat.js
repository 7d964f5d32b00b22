// The chat page: the account's conversations in a sidebar (search, pin, rename,
// delete and restore, share, export), one WebSocket to the open room, messages
// rendered as escaped Markdown, replies streamed piece by piece, regenerate and
// edit with their alternatives to flip through, reconnection that asks for what
// was missed. Text from people and models only ever reaches the page through
// textContent or renderMarkdown (which escapes it).
"use strict";

(function () {
  const root = document.getElementById("chat");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const roomName = root.dataset.room;
  const $ = (id) => document.getElementById(id);

  async function api(method, path, body) {
    const options = { method: method, headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
    return data;
  }
  const conversationPath = (name) => "/api/conversations/" + encodeURIComponent(name);

  // ---- The sidebar ---------------------------------------------------------
  const list = $("conversation-list");
  const noResults = $("no-results");
  const search = $("search");

  // An untitled private room's title is its random name: call it what it is.
  const shownTitle = (c) => (c.private && c.title === c.name ? "New chat" : c.title);

  function conversationItem(conversation, restore) {
    const item = document.createElement("li");
    item.dataset.name = conversation.name;
    if (conversation.name === roomName) item.className = "active";
    const link = document.createElement(restore ? "span" : "a");
    if (!restore) link.href = "/chat/" + encodeURIComponent(conversation.name);
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = shownTitle(conversation);
    link.appendChild(title);
    if (conversation.pinned) {
      const pin = document.createElement("span");
      pin.className = "pin"; pin.title = "Pinned"; pin.textContent = "★";
      link.appendChild(pin);
    }
    if (!conversation.private) {
      const tag = document.createElement("span");
      tag.className = "tag"; tag.textContent = "public";
      link.appendChild(tag);
    }
    if (conversation.match) {
      const match = document.createElement("span");
      match.className = "match"; match.textContent = conversation.match;
      link.appendChild(match);
    }
    item.appendChild(link);
    if (restore) {
      const button = document.createElement("button");
      button.type = "button"; button.className = "small secondary restore";
      button.textContent = "Restore";
      button.addEventListener("click", () => {
        api("POST", conversationPath(conversation.name) + "/restore").then(() => {
          window.location.href = "/chat/" + encodeURIComponent(conversation.name);
        }).catch(showError);
      });
      item.appendChild(button);
    }
    return item;
  }

  async function refreshList() {
    const query = search.value.trim();
    const data = await api("GET", "/api/conversations" + (query ? "?q=" + encodeURIComponent(query) : ""));
    list.replaceChildren(...data.data.map((c) => conversationItem(c, false)));
    noResults.hidden = data.data.length > 0;
    noResults.textContent = query ? "No conversation matches." : "No conversations yet: start one.";
    return data.data;
  }

  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => refreshList().catch(showError), 250);
  });

  $("bin").addEventListener("toggle", (event) => {
    if (event.target.open) showBin().catch(showError);
  });
  async function showBin() {
    const data = await api("GET", "/api/conversations?deleted=1");
    const bin = $("deleted-list");
    bin.replaceChildren(...data.data.map((c) => conversationItem(c, true)));
    if (!data.data.length) {
      const empty = document.createElement("li");
      empty.className = "muted"; empty.textContent = "Nothing deleted.";
      bin.appendChild(empty);
    }
  }

  $("new-chat").addEventListener("click", () => {
    api("POST", "/api/rooms", { private: true }).then((room) => {
      window.location.href = "/chat/" + encodeURIComponent(room.name);
    }).catch(showError);
  });

  const join = $("join-room");
  join.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = join.elements.room.value.trim();
    if (name) window.location.href = "/chat/" + encodeURIComponent(name);
  });

  $("close-sidebar").addEventListener("click", () => root.classList.remove("sidebar-open"));

  function showError(error) {
    const line = $("status") || noResults;
    line.textContent = error.message || String(error);
    line.hidden = false;
  }

  if (!roomName) return;

  // ---- The open conversation -----------------------------------------------
  const messagesBox = $("messages");
  const statusLine = $("status");
  const conn = $("conn");
  const members = $("members");
  const composer = $("composer");
  const form = composer.elements;
  const stopButton = $("stop");
  const balance = $("balance");
  const titleLine = $("room-title");
  const messages = new Map(); // id -> message as the server sent it (current or not)
  const nodes = new Map(); // id -> its <article>
  const mine = new Set(); // reply ids I asked for and that are still going
  const own = new Set(); // ids of messages my account sent
  const asked = new Set(); // questions whose coming reply I asked for (and may stop)
  let expecting = false; // the next "sent" is a question I asked the model
  const dirty = new Set(); // ids whose body needs drawing at the next frame
  let owner = false;
  let pinned = false;
  let lastId = 0;
  let socket = null;
  let retry = 500;
  let editing = null;
  let titled = root.dataset.titled === "yes";

  $("open-sidebar").addEventListener("click", () => root.classList.add("sidebar-open"));

  function formatTime(iso) {
    try { return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }
    catch (error) { return ""; }
  }

  // Follow new text to the bottom, unless the reader scrolled up to read.
  let stick = true;
  messagesBox.addEventListener("scroll", () => {
    stick = messagesBox.scrollHeight - messagesBox.scrollTop - messagesBox.clientHeight < 48;
  });
  function draw() {
    dirty.forEach((id) => {
      const message = messages.get(id);
      const node = nodes.get(id);
      if (message && node && node.dataset.editing !== "yes") {
        node.querySelector(".body").innerHTML = window.renderMarkdown(message.text || "");
      }
    });
    dirty.clear();
    if (stick) messagesBox.scrollTop = messagesBox.scrollHeight;
  }
  function redraw(id) {
    if (!dirty.size) window.requestAnimationFrame(draw);
    dirty.add(id);
  }

  function button(label, className, onClick) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = "small link " + className;
    element.textContent = label;
    element.addEventListener("click", onClick);
    return element;
  }

  function nodeFor(message) {
    let node = nodes.get(message.id);
    if (node) return node;
    node = document.createElement("article");
    node.className = "msg " + (message.role === "assistant" ? "assistant" : "user");
    node.dataset.id = message.id;
    node.innerHTML = '<div class="who"></div><div class="body"></div>' +
      '<div class="meta"><span class="info"></span><span class="variants"></span><span class="actions"></span></div>';
    node.querySelector(".who").textContent = message.who;
    // Messages arrive mostly in order; older ones (history) go where their id says.
    let before = null;
    for (const [id, other] of nodes) if (id > message.id && (!before || id < Number(before.dataset.id))) before = other;
    messagesBox.insertBefore(node, before);
    nodes.set(message.id, node);
    return node;
  }

  function info(message) {
    if (message.role !== "assistant") return formatTime(message.time);
    const parts = [];
    if (message.status && message.status !== "done") parts.push(message.status);
    if (message.usage) {
      parts.push(message.usage.prompt_tokens + " + " + message.usage.completion_tokens + " tokens");
    }
    if (message.cost !== null && message.cost !== undefined) parts.push("$" + message.cost);
    if (message.model) parts.push(message.model);
    if (message.error) parts.push(message.error);
    return parts.join(" · ");
  }

  function show(message) {
    const known = messages.get(message.id);
    messages.set(message.id, Object.assign(known || {}, message));
    lastId = Math.max(lastId, message.id);
    const node = nodeFor(message);
    node.querySelector(".meta .info").textContent = info(messages.get(message.id));
    redraw(message.id);
  }

  // The last exchange: the newest current question and what may flip around it.
  function lastQuestion() {
    let last = null;
    messages.forEach((m) => { if (m.role === "user" && m.current !== false && (!last || m.id > last.id)) last = m; });
    return last;
  }
  const rootOf = (m) => m.variant_of || m.id;
  function siblings(message) {
    const all = [];
    messages.forEach((m) => {
      if (m.role !== message.role) return;
      if (message.role === "assistant" ? m.reply_to === message.reply_to : rootOf(m) === rootOf(message)) all.push(m);
    });
    return all.sort((a, b) => a.id - b.id);
  }

  function refreshControls() {
    const last = lastQuestion();
    let busy = false;
    messages.forEach((m) => { if (m.status === "streaming") busy = true; });
    messages.forEach((message, id) => {
      const node = nodes.get(id);
      if (!node) return;
      node.hidden = message.current === false;
      const variants = node.querySelector(".variants");
      const actions = node.querySelector(".actions");
      variants.replaceChildren();
      actions.replaceChildren();
      if (node.hidden || !last) return;
      const inLast = message.role === "assistant" ? message.reply_to === last.id : rootOf(message) === rootOf(last);
      if (!inLast) return;
      const set = siblings(message);
      if (set.length > 1) {
        const at = set.findIndex((m) => m.id === id);
        const previous = button("‹", "prev", () => choose(set[at - 1]));
        previous.disabled = at === 0 || busy;
        previous.setAttribute("aria-label", "Previous alternative");
        const next = button("›", "next", () => choose(set[at + 1]));
        next.disabled = at === set.length - 1 || busy;
        next.setAttribute("aria-label", "Next alternative");
        const count = document.createElement("span");
        count.className = "count";
        count.textContent = (at + 1) + "/" + set.length;
        variants.append(previous, count, next);
      }
      if (busy) return;
      if (message.role === "assistant" && message.status !== "streaming") {
        actions.appendChild(button("Regenerate", "regenerate", () => {
          asked.add(message.reply_to);
          send(Object.assign({ type: "regenerate", reply_id: id }, asking()));
        }));
      }
      if (message.role === "user" && own.has(id)) {
        actions.appendChild(button("Edit", "edit", () => startEdit(id)));
      }
    });
  }

  function choose(message) {
    if (message) send({ type: "choose", message_id: message.id });
  }

  function startEdit(id) {
    const node = nodes.get(id);
    if (!node || editing !== null) return;
    editing = id;
    node.dataset.editing = "yes";
    const body = node.querySelector(".body");
    const editor = document.createElement("form");
    editor.className = "edit-form";
    const area = document.createElement("textarea");
    area.name = "text"; area.rows = 3; area.maxLength = 8000; area.value = messages.get(id).text;
    area.setAttribute("aria-label", "Edit your message");
    const save = document.createElement("button");
    save.type = "submit"; save.className = "small"; save.textContent = "Save and ask";
    const cancel = button("Cancel", "cancel", () => stopEdit());
    editor.append(area, save, cancel);
    editor.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!area.value.trim()) return;
      expecting = true;
      send(Object.assign({ type: "edit", message_id: id, text: area.value }, asking()));
      stopEdit();
    });
    body.replaceChildren(editor);
    area.focus();
  }
  function stopEdit() {
    if (editing === null) return;
    const node = nodes.get(editing);
    delete node.dataset.editing;
    redraw(editing);
    editing = null;
  }

  function finish(done) {
    const message = messages.get(done.reply_id);
    if (message) {
      show(Object.assign({}, message, { text: done.text || message.text, status: done.status,
        usage: done.usage, cost: done.cost, error: done.error }));
      draw(); // the final text now, with the final line under it (not a frame later)
    }
    // Every member gets "done"; its balance is the payer's, so only the asker shows it.
    const paid = mine.delete(done.reply_id);
    stopButton.hidden = mine.size === 0;
    if (paid && done.balance !== undefined && done.balance !== null) {
      balance.textContent = "$" + (done.balance / 1e6).toFixed(6);
    }
    statusLine.textContent = done.error || "";
    refreshControls();
  }

  // "count" is sockets and "members" distinct names (one person may have two tabs open);
  // the names are all there unless the server cut the list at its limit of 100.
  function showMembers(event) {
    const more = event.members.length >= 100 ? (event.count || 0) - event.members.length : 0;
    members.textContent = event.members.join(", ") + (more > 0 ? " and " + more + " more" : "");
  }

  function showTitle(title) {
    titleLine.textContent = title;
    document.title = title + " · Chat · Inference Portal";
  }
  function fetchTitle() {
    api("GET", conversationPath(roomName)).then((room) => {
      if (room.title !== room.name) { titled = true; showTitle(room.title); }
      return refreshList();
    }).catch(() => {});
  }

  function applySettings(room) {
    if (room.title && room.title !== roomName) { titled = true; showTitle(room.title); }
    if (room.model && [...form.model.options].some((o) => o.value === room.model)) form.model.value = room.model;
    if (room.system !== undefined) form.system.value = room.system || "";
    const params = room.params || {};
    ["temperature", "top_p", "max_tokens"].forEach((name) => {
      if (params[name] !== undefined) form[name].value = params[name];
    });
  }

  function handle(event) {
    switch (event.type) {
      case "ready":
        conn.textContent = "connected";
        conn.className = "state ok";
        owner = event.mine;
        (event.own || []).forEach((id) => own.add(id));
        if (!messages.size) applySettings(event);
        $("settings-note").textContent = owner ? "Saved with this conversation." :
          "This room's settings belong to whoever made it; yours apply to your own messages.";
        $("rename").hidden = !owner;
        // Joining put the room on this account's list (a public room opened by its name).
        if (!search.value.trim() && !list.querySelector("li.active")) refreshList().catch(() => {});
        event.messages.forEach(show);
        showMembers(event);
        refreshControls();
        retry = 500;
        break;
      case "sent":
        own.add(event.id);
        if (expecting) asked.add(event.id);
        expecting = false;
        // The server titles a room from its first message, and moves it to the top.
        if (!titled) fetchTitle();
        else if (list.firstElementChild && list.firstElementChild.dataset.name !== roomName) refreshList().catch(() => {});
        break;
      case "message":
        show(event);
        if (event.role === "assistant" && event.status === "streaming" && asked.has(event.reply_to)) {
          asked.delete(event.reply_to);
          mine.add(event.id);
          stopButton.hidden = false;
        }
        refreshControls();
        break;
      case "delta": {
        const message = messages.get(event.reply_id);
        if (message) { message.text = (message.text || "") + event.text; redraw(event.reply_id); }
        break;
      }
      case "done": finish(event); break;
      case "chosen": {
        event.hide.forEach((id) => { const m = messages.get(id); if (m) m.current = false; });
        event.show.forEach((id) => { const m = messages.get(id); if (m) m.current = true; });
        const missing = event.show.filter((id) => !messages.has(id));
        if (missing.length) send({ type: "resume", after: Math.min(...missing) - 1 });
        refreshControls();
        break;
      }
      case "room":
        if (event.deleted) {
          statusLine.textContent = "This conversation was deleted.";
          composer.hidden = true;
          break;
        }
        // Renamed (here or in another tab): the sidebar shows titles too.
        if (event.title && event.title !== roomName && event.title !== titleLine.textContent) refreshList().catch(() => {});
        applySettings(event);
        break;
      case "status": statusLine.textContent = event.message || event.kind; break;
      case "presence": showMembers(event); break;
      case "history":
        (event.own || []).forEach((id) => own.add(id));
        event.messages.forEach(show);
        refreshControls();
        break;
      case "error": statusLine.textContent = event.message; break;
    }
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
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
        conn.textContent = "closed";
        return;
      }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  }

  // What a question asks the model with: the settings panel.
  function asking() {
    const params = {};
    ["temperature", "top_p"].forEach((name) => { if (form[name].value !== "") params[name] = Number(form[name].value); });
    if (form.max_tokens.value) params.max_tokens = Math.round(Number(form.max_tokens.value));
    const frame = { model: form.model.value, params: params };
    if (form.system.value.trim()) frame.system = form.system.value;
    return frame;
  }

  let saveTimer = null;
  composer.querySelector(".settings-grid").addEventListener("change", () => {
    if (!owner) return;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => {
      const frame = asking();
      api("PATCH", conversationPath(roomName), { model: frame.model, params: frame.params,
        system_prompt: form.system.value }).then(() => {
        $("settings-note").textContent = "Saved with this conversation.";
      }).catch(showError);
    }, 300);
  });

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = form.text.value;
    if (!text.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    expecting = form.ask.checked;
    send(Object.assign({ type: "message", text: text, ask: form.ask.checked }, asking()));
    form.text.value = "";
    stick = true;
  });

  form.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {  // not while an IME composes
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  stopButton.addEventListener("click", () => {
    mine.forEach((id) => send({ type: "stop", reply_id: id }));
  });

  // ---- Title, pin, delete, share -------------------------------------------
  const renameForm = $("rename-form");
  $("rename").addEventListener("click", () => {
    renameForm.elements.title.value = titleLine.textContent;
    renameForm.hidden = false; titleLine.hidden = true;
    renameForm.elements.title.focus();
  });
  $("rename-cancel").addEventListener("click", () => { renameForm.hidden = true; titleLine.hidden = false; });
  renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const room = await api("PATCH", conversationPath(roomName), { title: renameForm.elements.title.value });
      titled = true; showTitle(room.title);
      await refreshList();
    } catch (error) { showError(error); }
    renameForm.hidden = true; titleLine.hidden = false;
  });

  const pinButton = $("pin");
  function showPin() {
    pinButton.textContent = pinned ? "Unpin" : "Pin";
    pinButton.setAttribute("aria-pressed", String(pinned));
  }
  api("GET", conversationPath(roomName)).then((room) => { pinned = room.pinned; showPin(); }).catch(() => {});
  pinButton.addEventListener("click", async () => {
    try {
      const room = await api("PATCH", conversationPath(roomName), { pinned: !pinned });
      pinned = room.pinned; showPin();
      await refreshList();
    } catch (error) { showError(error); }
  });

  const deleteButton = $("delete");
  deleteButton.addEventListener("click", async () => {
    // A private room goes to the bin; a public one only leaves this account's list.
    const question = deleteButton.dataset.private ? "Delete this conversation? You can restore it from Recently deleted." :
      "Leave this room? It goes off your list; join it again to bring it back.";
    if (!window.confirm(question)) return;
    try {
      await api("DELETE", conversationPath(roomName));
      window.location.href = "/chat";
    } catch (error) { showError(error); }
  });

  // The export menu closes once a format is picked, or on a click elsewhere.
  const exportMenu = $("export-menu");
  exportMenu.querySelectorAll(".menu-items a").forEach((link) => {
    link.addEventListener("click", () => { exportMenu.open = false; });
  });
  document.addEventListener("click", (event) => {
    if (exportMenu.open && !exportMenu.contains(event.target)) exportMenu.open = false;
  });

  const sharePanel = $("share-panel");
  const shareList = $("share-list");
  function shareItem(share) {
    const item = document.createElement("li");
    const link = document.createElement("input");
    link.readOnly = true; link.value = share.url; link.className = "share-url";
    link.setAttribute("aria-label", "Share link");
    const when = document.createElement("span");
    when.className = "muted small";
    let made = "";
    try { made = new Date(share.created_at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }); }
    catch (error) { made = share.created_at; }
    when.textContent = share.messages + (share.messages === 1 ? " message, " : " messages, ") + made;
    const revoke = button("Revoke", "revoke", () => {
      api("DELETE", "/api/shares/" + encodeURIComponent(share.token)).then(() => item.remove()).catch(showError);
    });
    item.append(link, when, revoke);
    return item;
  }
  async function makeShare() {
    const made = await api("POST", conversationPath(roomName) + "/shares");
    shareList.prepend(shareItem(made));
    shareList.querySelector(".share-url").select();
  }
  // Share opens the links there are (making the first); each link is a snapshot, so a
  // new one is made only when asked for, not on every click.
  const shareButton = $("share");
  shareButton.addEventListener("click", async () => {
    if (!sharePanel.hidden) {
      sharePanel.hidden = true; shareButton.setAttribute("aria-expanded", "false");
      return;
    }
    try {
      const all = await api("GET", conversationPath(roomName) + "/shares");
      shareList.replaceChildren(...all.data.map(shareItem));
      if (!all.data.length) await makeShare();
      sharePanel.hidden = false; shareButton.setAttribute("aria-expanded", "true");
    } catch (error) { showError(error); }
  });
  $("new-share").addEventListener("click", () => makeShare().catch(showError));

  connect();
})();
