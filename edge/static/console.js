// The operator console's actions. A form with data-api is sent to that admin API route
// as JSON (data-method, POST by default) with the session's CSRF token; data-confirm
// asks first in the page's dialog. On success the page reloads with data-done as its
// message (or, with data-reveal, shows that field of the answer once: a new key's
// secret); on refusal the API's own message is shown and nothing changed.
"use strict";

const csrf = document.querySelector("meta[name=csrf]").content;
const FLASH = "console-flash";

function flash(text, kind) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = "flash " + (kind || "");
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

// A field's value as the API wants it: data-type says int, number, list, json or bool.
function fieldValue(field) {
  if (field.type === "checkbox") return field.checked;
  const raw = field.value.trim();
  switch (field.dataset.type) {
    case "int":
    case "number":
      return raw === "" ? null : Number(raw);
    case "list":
      return raw === "" ? null : raw.split(",").map((part) => part.trim()).filter(Boolean);
    case "json":
      return raw === "" ? null : JSON.parse(raw);
    case "bool":
      return raw === "true";
    default:
      return raw;
  }
}

// The JSON body: named fields, empty ones left out unless data-keep says send them.
function bodyOf(form) {
  const body = {};
  for (const field of form.elements) {
    if (!field.name || field.disabled || field.name === "csrf") continue;
    if (field.type === "radio" && !field.checked) continue;
    const value = fieldValue(field);
    if ((value === "" || value === null) && !("keep" in field.dataset)) continue;
    body[field.name] = value;
  }
  return body;
}

function confirmed(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  let body;
  try {
    body = bodyOf(form);
  } catch (error) {
    flash("A field is not valid JSON: " + error.message, "error");
    return;
  }
  if (form.dataset.confirm && !(await confirmed(form.dataset.confirm))) return;
  const method = (form.dataset.method || "POST").toUpperCase();
  const buttons = form.querySelectorAll("button");
  buttons.forEach((button) => { button.disabled = true; });
  try {
    const response = await fetch(form.dataset.api, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      flash((answer.error && answer.error.message) || `Refused (HTTP ${response.status}).`,
            "error");
      return;
    }
    if (form.dataset.reveal) {
      const box = document.getElementById("reveal");
      box.querySelector("code").textContent = answer[form.dataset.reveal] || "";
      box.hidden = false;
      flash(form.dataset.done || "Done.");
      return;
    }
    sessionStorage.setItem(FLASH, form.dataset.done || "Done.");
    window.location.reload();
  } catch (error) {
    flash("The console could not reach the portal: " + error.message, "error");
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
});

const done = sessionStorage.getItem(FLASH);
if (done) {
  sessionStorage.removeItem(FLASH);
  flash(done);
}
