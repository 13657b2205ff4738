// The console's little script: sign in and out, the segment builder's live count and save.
// Changes go through the JSON API with the session's CSRF token (kept in this browser's
// localStorage at sign-in; the cookie itself is HttpOnly). Nothing here loads from elsewhere.
"use strict";

const CSRF_KEY = "mg_csrf";

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const csrf = localStorage.getItem(CSRF_KEY);
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const answer = await fetch(path, {method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = new Error((data.error && data.error.message) || data.detail || answer.statusText);
    error.status = answer.status;
    error.code = data.error && data.error.code;  // the authoring pages say it in the page's language
    error.details = (data.error && data.error.details) || {};
    throw error;
  }
  return data;
}

function onSignIn(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("sign-in-error");
    out.textContent = "";
    try {
      const done = await api("POST", "/v1/auth/sign-in", {
        username: form.username.value, password: form.password.value});
      localStorage.setItem(CSRF_KEY, done.csrf_token);
      const next = form.dataset.next;
      location.assign(next && next.startsWith("/console/") ? next : "/console/");
    } catch (error) {
      out.textContent = error.message;
    }
  });
}

function onSignOut(button) {
  button.addEventListener("click", async () => {
    try { await api("POST", "/v1/auth/sign-out", {}); } catch (error) { /* already gone */ }
    localStorage.removeItem(CSRF_KEY);
    location.assign("/console/sign-in");
  });
}

function segmentBuilder() {
  const text = document.getElementById("segment-definition");
  const count = document.getElementById("segment-count");
  const error = document.getElementById("segment-error");
  let timer = null;
  function definition() {
    try { return JSON.parse(text.value); } catch (e) { error.textContent = e.message; return null; }
  }
  async function preview() {
    error.textContent = "";
    const tree = definition();
    if (tree === null) return;
    count.textContent = "…";
    try {
      const done = await api("POST", "/v1/segments/preview", {definition: tree, sample: 0});
      count.textContent = done.count.toLocaleString();
      count.dataset.members = String(done.count);
    } catch (e) {
      count.textContent = "—";
      error.textContent = e.message;
    }
  }
  text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(preview, 400); });
  document.getElementById("segment-preview").addEventListener("click", preview);
  // Only who may write segments gets the button; a reader previews counts.
  document.getElementById("segment-save")?.addEventListener("click", async () => {
    error.textContent = "";
    const tree = definition();
    if (tree === null) return;
    try {
      await api("POST", "/v1/segments", {name: document.getElementById("segment-name").value,
        definition: tree, for_tills: false});
      location.reload();
    } catch (e) {
      error.textContent = e.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("sign-in");
  if (form) onSignIn(form);
  const out = document.getElementById("sign-out");
  if (out) onSignOut(out);
  if (document.getElementById("builder")) segmentBuilder();
  document.body.dataset.ready = "1";
});
