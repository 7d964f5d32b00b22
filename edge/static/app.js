// Small helpers for every page: copy buttons, confirmations, key forms, the top-up form.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = document.querySelector(button.dataset.copy).textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (error) {
    const range = document.createRange();
    range.selectNodeContents(document.querySelector(button.dataset.copy));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Press Ctrl+C";
  }
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// A "every model / every route" box: the single choices beside it only count without it.
function syncChoices(all) {
  const fieldset = all.closest("[data-choices]");
  for (const box of fieldset.querySelectorAll("input[type=checkbox]:not([data-all])")) {
    box.disabled = all.checked;
  }
}
for (const all of document.querySelectorAll("[data-choices] input[data-all]")) {
  syncChoices(all);
  all.addEventListener("change", () => syncChoices(all));
}

const topup = document.getElementById("topup");
if (topup) {
  topup.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = document.getElementById("topup-status");
    status.textContent = "Opening Stripe…";
    const response = await fetch("/api/topup", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": topup.dataset.csrf },
      body: JSON.stringify({ amount: topup.elements.amount.value }),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok && answer.url) {
      window.location.href = answer.url;
    } else {
      status.textContent = (answer.error && answer.error.message) || "The payment could not start.";
    }
  });
}
