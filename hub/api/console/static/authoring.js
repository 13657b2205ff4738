// The authoring pages' script: the campaign bundle editor, the journey editor and its state
// buttons, and the users page. Every change is a JSON call to the HQ API (``api`` in
// console.js, with the session's CSRF token), so it passes the API's checks and audit; a
// refusal is shown in the reader's language, naming the part at fault, and changes nothing.
"use strict";

function authoringWords() {
  const found = document.getElementById("authoring-words");
  return found ? JSON.parse(found.textContent) : {errors: {}, parts: {}, words: {}};
}

// A refusal as the page says it: the sentence for its code (Chinese pages), the part at
// fault, then the particulars the service gave (each invalid path, the versions held).
function explain(error) {
  const w = authoringWords();
  const details = error.details || {};
  const paths = (details.errors || []).map(
    (e) => e.loc.filter((p) => p !== "body").join(".") + ": " + e.msg);
  const particulars = paths.length ? paths.join("; ") : error.message;
  const said = w.errors[error.code];
  if (!said) return particulars;
  const part = details.part ? "（" + (w.parts[details.part] || details.part) + "）" : "";
  return said + part + " " + particulars;
}

function parsed(textarea, out) {
  try {
    return JSON.parse(textarea.value);
  } catch (e) {
    out.textContent = authoringWords().json_error + e.message;
    return null;
  }
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function campaignEditor() {
  const text = document.getElementById("bundle-json");
  const basketText = document.getElementById("bundle-basket");
  const error = document.getElementById("bundle-error");
  const done = document.getElementById("bundle-published");
  const outcome = document.getElementById("bundle-outcome");
  const examples = JSON.parse(document.getElementById("campaign-templates").textContent);
  const show = (id, value) => { document.getElementById(id).textContent = value; };
  document.getElementById("bundle-target").addEventListener("change", (event) => {
    location.assign(event.target.value);
  });
  document.querySelectorAll("[data-template]").forEach((button) => {
    button.addEventListener("click", () => {
      error.textContent = "";
      const bundle = parsed(text, error);
      if (bundle === null) return;
      const campaigns = Array.isArray(bundle.campaigns) ? bundle.campaigns : [];
      const example = JSON.parse(JSON.stringify(examples[button.dataset.template]));
      const taken = new Set(campaigns.map((c) => c.campaign_id));
      let id = example.campaign_id;
      for (let n = 2; taken.has(id); n += 1) id = example.campaign_id + "-" + n;
      example.campaign_id = id;
      bundle.campaigns = campaigns.concat([example]);
      text.value = pretty(bundle);
    });
  });
  document.getElementById("bundle-preview").addEventListener("click", async () => {
    error.textContent = "";
    done.textContent = "";
    const bundle = parsed(text, error);
    if (bundle === null) return;
    const body = {bundle};
    if (basketText.value.trim()) {
      const basket = parsed(basketText, error);
      if (basket === null) return;
      body.basket = basket;
    }
    outcome.hidden = true;
    try {
      const answer = await api("POST", "/v1/campaigns/preview", body);
      show("preview-next", answer.next_version
        + (answer.next_generation ? " (" + answer.next_generation + ")" : ""));
      show("preview-stores", answer.stores.join(", ") || "—");
      for (const k of ["added", "removed", "changed", "unchanged"]) {
        show("preview-" + k, answer.changes[k].join(", ") || "—");
      }
      show("preview-refusal", answer.refusal ? explain(answer.refusal) : "");
      document.getElementById("preview-refusal").parentElement.hidden = !answer.refusal;
      const quote = answer.basket;
      document.getElementById("preview-basket").parentElement.hidden = !quote;
      if (quote) {
        document.querySelectorAll("[data-basket]").forEach((el) => {
          const v = quote[el.dataset.basket];
          el.textContent = typeof v === "number" && el.dataset.basket !== "points_earned"
            ? "¥" + (v / 100).toFixed(2) : String(v);
        });
      }
      outcome.dataset.stores = answer.stores.join(",");
      outcome.hidden = false;
    } catch (e) {
      error.textContent = explain(e);
    }
  });
  document.getElementById("bundle-publish").addEventListener("click", async () => {
    error.textContent = "";
    done.textContent = "";
    const bundle = parsed(text, error);
    if (bundle === null) return;
    try {
      const answer = await api("POST", "/v1/campaigns", bundle);
      done.textContent = answer.topic + " · v" + answer.version;
      done.dataset.topic = answer.topic;
      done.dataset.version = String(answer.version);
    } catch (e) {
      error.textContent = explain(e);
    }
  });
}

function journeyEditor() {
  const form = document.getElementById("journey-editor");
  const id = form.dataset.journey;
  const text = document.getElementById("journey-json");
  const error = document.getElementById("journey-error");
  const outcome = document.getElementById("journey-outcome");
  const examples = JSON.parse(document.getElementById("journey-templates").textContent);
  const w = authoringWords();
  const word = (key) => w.words[key] || key;
  const show = (el, value) => { document.getElementById(el).textContent = value; };
  document.querySelectorAll("[data-journey-template]").forEach((button) => {
    button.addEventListener("click", () => {
      text.value = pretty(examples[button.dataset.journeyTemplate]);
      error.textContent = "";
      outcome.hidden = true;
    });
  });
  document.getElementById("journey-preview").addEventListener("click", async () => {
    error.textContent = "";
    outcome.hidden = true;
    const definition = parsed(text, error);
    if (definition === null) return;
    try {
      const path = id ? "/v1/journeys/" + encodeURIComponent(id) + "/preview"
        : "/v1/journeys/preview";
      const answer = await api("POST", path, definition);
      const {kind, ...given} = answer.trigger;
      show("journey-trigger", word("trigger_" + kind) + " " + JSON.stringify(given));
      show("journey-conditions", answer.conditions ? w.yes : w.no);
      const steps = document.getElementById("journey-steps");
      steps.replaceChildren(...answer.steps.map((step) => {
        const {kind: stepKind, ...rest} = step;
        const li = document.createElement("li");
        li.textContent = word("step_" + stepKind) + " " + JSON.stringify(rest);
        return li;
      }));
      show("journey-channels", answer.channels.join(", ") || "—");
      show("journey-holdout", answer.holdout_percent + "%");
      const enter = document.getElementById("journey-enter");
      if (answer.would_enter !== null) {
        enter.textContent = answer.would_enter.toLocaleString();
      } else if (answer.segment_members !== null) {
        enter.textContent = w.segment_size + " " + answer.segment_members.toLocaleString();
      } else {
        enter.textContent = w.not_counted;
      }
      outcome.hidden = false;
    } catch (e) {
      error.textContent = explain(e);
    }
  });
  document.getElementById("journey-save").addEventListener("click", async () => {
    error.textContent = "";
    const definition = parsed(text, error);
    if (definition === null) return;
    try {
      if (id) await api("PUT", "/v1/journeys/" + encodeURIComponent(id), definition);
      else await api("POST", "/v1/journeys", definition);
      location.assign("/console/journeys");
    } catch (e) {
      error.textContent = explain(e);
    }
  });
}

function journeyStates() {
  const error = document.getElementById("journeys-error");
  document.querySelectorAll("[data-journey-state]").forEach((button) => {
    button.addEventListener("click", async () => {
      error.textContent = "";
      const id = button.closest("tr").dataset.journey;
      try {
        await api("POST", "/v1/journeys/" + encodeURIComponent(id) + "/state",
          {state: button.dataset.journeyState});
        location.reload();
      } catch (e) {
        error.textContent = explain(e);
      }
    });
  });
}

function usersAdmin() {
  const error = document.getElementById("users-error");
  const form = document.getElementById("user-add");
  const field = (name) => form.querySelector("[name=" + name + "]");
  const picked = (name) => Array.from(field(name).selectedOptions, (o) => o.value);
  const asked = () => field("role").selectedOptions[0].dataset.scope;
  // Only the field the role's scope asks for is shown (and sent).
  const showScope = () => {
    form.querySelectorAll("[data-scope-field]").forEach((label) => {
      label.hidden = label.dataset.scopeField !== asked();
    });
  };
  field("role").addEventListener("change", showScope);
  showScope();
  const run = async (call) => {
    error.textContent = "";
    try {
      await call();
      location.reload();
    } catch (e) {
      error.textContent = explain(e);
    }
  };
  document.getElementById("user-add-save").addEventListener("click", () => run(async () => {
    const scope = asked();
    await api("POST", "/v1/users", {
      username: field("username").value.trim(), display_name: field("display_name").value,
      role: field("role").value, password: field("password").value,
      regions: scope === "regions" ? picked("regions") : [],
      stores: scope === "stores" ? picked("stores") : [],
      guide_id: scope === "guide" ? (field("guide_id").value.trim() || null) : null});
  }));
  document.querySelectorAll("#users tr[data-user]").forEach((row) => {
    const user = "/v1/users/" + encodeURIComponent(row.dataset.user);
    row.querySelector("[data-user-disabled]").addEventListener("click", (event) => run(
      () => api("PATCH", user, {disabled: event.target.dataset.userDisabled === "true"})));
    row.querySelector("[data-user-password]").addEventListener("click", () => run(
      () => api("PATCH", user, {password: row.querySelector(".new-password").value})));
    row.querySelector("[data-user-token]").addEventListener("click", async () => {
      error.textContent = "";
      try {
        const issued = await api("POST", user + "/tokens",
          {name: row.querySelector(".token-name").value.trim()});
        // Shown this once, here: the hub keeps only its hash.
        document.getElementById("token-secret").textContent = issued.token;
        document.getElementById("token-issued").hidden = false;
      } catch (e) {
        error.textContent = explain(e);
      }
    });
  });
  document.querySelectorAll("[data-token-revoke]").forEach((button) => {
    button.addEventListener("click", () => run(
      () => api("DELETE", "/v1/tokens/" + encodeURIComponent(button.dataset.tokenRevoke))));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("bundle-editor")) campaignEditor();
  if (document.getElementById("journey-editor")) journeyEditor();
  if (document.getElementById("journeys-error")) journeyStates();
  if (document.getElementById("user-add")) usersAdmin();
  document.body.dataset.authoring = "1";
});
