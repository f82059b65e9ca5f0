// The labelling UI: vanilla JS over /ui/api/* (feedback too: the session cookie goes to /ui only).
// Logged text is only ever inserted with textContent, never as HTML: prompts and answers come from
// anyone with a key.
"use strict";

const PAGE_SIZE = 50;
const state = {
  cursors: [null], // cursors[i] opens page i; keyset pagination has no page numbers to jump to
  page: 0,
  rows: [],
  selected: -1,
  current: null, // the open conversation, full
  sibling: null, // the other answer being compared
};
const $ = (id) => document.getElementById(id);

// -- talking to the server ---------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    // The page's policy is no-referrer; the server checks a write's Origin (or Referer) against
    // its own, and with no-referrer a browser may send `Origin: null`.
    referrerPolicy: "same-origin",
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  if (response.status === 401) {
    $("login").hidden = false;
    $("api-key").focus();
    throw new Error("this server needs an API key");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error?.message || response.statusText);
  return body;
}

async function sendFeedback(fields) {
  const body = { completion_id: state.current.id, ...fields };
  await api("/ui/api/feedback", { method: "POST", body: JSON.stringify(body) });
  toast("saved");
  await openConversation(state.current.id);
  await loadPage(/* keepSelection */ true);
}

// -- the list ----------------------------------------------------------------------------------

function filterParams() {
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  for (const id of ["q", "model", "rating", "since", "until"]) {
    if ($(id).value) params.set(id, $(id).value);
  }
  if ($("unlabelled").checked) params.set("unlabelled", "true");
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  return params;
}

async function loadPage(keepSelection = false) {
  const request = (state.lastRequest = (state.lastRequest ?? 0) + 1);
  const page = await api(`/ui/api/conversations?${filterParams()}`);
  if (request !== state.lastRequest) return; // a newer filter's answer is on its way
  state.rows = page.data;
  state.cursors[state.page + 1] = page.next_cursor;
  $("total").textContent = `${page.total} conversations`;
  $("page-info").textContent = `page ${state.page + 1}`;
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = !page.next_cursor;
  renderList();
  if (!keepSelection) select(state.rows.length ? 0 : -1);
  else select(Math.min(state.selected, state.rows.length - 1), /* open */ false);
}

function renderList() {
  const list = $("list");
  list.replaceChildren();
  state.rows.forEach((row, i) => {
    const item = el("li", {}, [
      el("div", { className: "prompt" }, row.prompt_preview),
      el("div", { className: "output" }, row.output_preview),
      el("div", { className: "tags" }, [
        `${new Date(row.created * 1000).toLocaleString()} · ${row.model} `,
        ratingBadge(row.rating),
        row.num_feedback && row.rating == null ? el("span", { className: "badge labelled" }, "labelled") : "",
      ]),
    ]);
    item.dataset.id = row.id;
    item.addEventListener("click", () => select(i));
    list.append(item);
  });
}

function select(index, open = true) {
  state.selected = index;
  [...$("list").children].forEach((li, i) => li.classList.toggle("selected", i === index));
  const item = $("list").children[index];
  if (item) item.scrollIntoView({ block: "nearest" });
  if (open && index >= 0) openConversation(state.rows[index].id);
}

async function move(step) {
  const next = state.selected + step;
  if (next >= 0 && next < state.rows.length) return select(next);
  if (step > 0 && state.cursors[state.page + 1]) return turnPage(1);
  if (step < 0 && state.page > 0) return turnPage(-1);
}

async function turnPage(step) {
  const page = state.page + step;
  if (page < 0 || (step > 0 && !state.cursors[page])) return;
  state.page = page;
  await loadPage();
}

function resetAndLoad() {
  state.cursors = [null];
  state.page = 0;
  loadPage().catch(showError);
}

// -- one conversation --------------------------------------------------------------------------

async function openConversation(id) {
  const row = await api(`/ui/api/conversations/${encodeURIComponent(id)}`);
  state.current = row;
  $("empty-detail").hidden = true;
  $("detail").hidden = false;
  $("compare-pane").hidden = true;
  $("meta").textContent =
    `${row.id} · ${row.model}${row.adapter_version ? " v" + row.adapter_version : ""} · ` +
    `${row.finish_reason} · ${row.prompt_tokens}+${row.completion_tokens} tokens · ` +
    `${row.latency_s.toFixed(2)} s · ${JSON.stringify(row.sampling_params)}`;
  const turns = row.messages ?? [{ role: "user", content: row.prompt }];
  $("messages").replaceChildren(
    ...turns.map((m) =>
      el("pre", { className: `turn ${m.role}` }, [
        el("span", { className: "role" }, m.role),
        typeof m.content === "string" ? m.content : JSON.stringify(m.content),
      ]),
    ),
  );
  $("answer").textContent = row.choices[0]?.text ?? "";
  $("citations").replaceChildren(
    ...row.citations.map((c) => el("div", {}, `[${c.source}#${c.chunk_id}] ${c.text}`)),
  );
  $("current-rating").replaceChildren(ratingBadge(row.rating));
  $("correction").value = row.correction ?? "";
  $("comment").value = "";
  $("history").replaceChildren(
    ...row.feedback.map((f) => el("div", {}, describeFeedback(f, row.id))),
  );
}

function describeFeedback(f, id) {
  const when = new Date(f.created * 1000).toLocaleString();
  const parts = [];
  if (f.rating != null) parts.push(`rated ${f.rating > 0 ? "+1" : "−1"}`);
  if (f.correction != null) parts.push("corrected");
  if (f.comment) parts.push(`“${f.comment}”`);
  if (f.preferred_over) {
    parts.push(f.completion_id === id ? `preferred over ${f.preferred_over}` : `lost to ${f.completion_id}`);
  }
  return `${when}: ${parts.join(", ")}`;
}

function saveCorrection() {
  const fields = {};
  const correction = $("correction").value.trim();
  const comment = $("comment").value.trim();
  if (correction && correction !== (state.current.correction ?? "")) fields.correction = correction;
  if (comment) fields.comment = comment;
  if (!Object.keys(fields).length) return toast("nothing new to save", true);
  sendFeedback(fields).catch(showError);
}

// -- compare -----------------------------------------------------------------------------------

function openCompare() {
  if (!state.current) return;
  const siblings = state.current.siblings;
  $("compare-pane").hidden = false;
  $("no-siblings").hidden = siblings.length > 0;
  $("compare-grid").hidden = siblings.length === 0;
  $("sibling-select").replaceChildren(
    ...siblings.map((s) => el("option", { value: s.id }, `${s.id} · ${s.model}`)),
  );
  $("compare-left").textContent = state.current.choices[0]?.text ?? "";
  if (siblings.length) showSibling(siblings[0].id);
  $("compare-pane").scrollIntoView({ block: "nearest" });
}

async function showSibling(id) {
  state.sibling = await api(`/ui/api/conversations/${encodeURIComponent(id)}`);
  $("compare-right").textContent = state.sibling.choices[0]?.text ?? "";
}

function pick(side) {
  if ($("compare-pane").hidden || !state.sibling) return;
  const [winner, loser] =
    side === "left" ? [state.current.id, state.sibling.id] : [state.sibling.id, state.current.id];
  api("/ui/api/feedback", {
    method: "POST",
    body: JSON.stringify({ completion_id: winner, preferred_over: loser }),
  })
    .then(() => toast(`preference saved: ${side} is better`))
    .then(() => openConversation(state.current.id))
    .catch(showError);
}

// -- keyboard, login, helpers ------------------------------------------------------------------

function onKey(event) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    if (event.key === "Enter" && event.ctrlKey && event.target.closest("#detail")) saveCorrection();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {
    j: () => move(1),
    k: () => move(-1),
    n: () => turnPage(1),
    p: () => turnPage(-1),
    "+": () => state.current && sendFeedback({ rating: 1 }),
    "=": () => state.current && sendFeedback({ rating: 1 }),
    "-": () => state.current && sendFeedback({ rating: -1 }),
    e: () => state.current && $("correction").focus(),
    c: () => openCompare(),
    1: () => pick("left"),
    2: () => pick("right"),
    "/": () => $("q").focus(),
    "?": () => ($("help").hidden = !$("help").hidden),
    Escape: () => ($("compare-pane").hidden = true),
  };
  const action = actions[event.key];
  if (!action) return;
  event.preventDefault();
  Promise.resolve(action()).catch(showError);
}

// The key goes to the server once, which answers with an HttpOnly session cookie: no script on
// the page (ours or an injected one) can read the key or the session.
async function login(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  const response = await fetch("/ui/api/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { Authorization: `Bearer ${key}` },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    return toast(body.error?.message || response.statusText, true);
  }
  $("api-key").value = "";
  $("login").hidden = true;
  $("logout").hidden = false;
  await init();
}

async function logout() {
  await api("/ui/api/session", { method: "DELETE" });
  location.reload(); // drops what the page shows; the reloaded page asks for a key again
}

function el(tag, props, children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...[children].flat().filter((c) => c !== "" && c != null));
  return node;
}

function ratingBadge(rating) {
  if (rating == null) return "";
  return el("span", { className: `badge ${rating > 0 ? "up" : "down"}` }, rating > 0 ? "+1" : "−1");
}

function toast(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.className = `show${isError ? " error" : ""}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (status.className = ""), 2500);
}

function showError(error) {
  toast(error.message, true);
}

async function init() {
  const models = await api("/ui/api/models");
  $("model").replaceChildren(
    el("option", { value: "" }, "all models"),
    ...models.data.map((m) => el("option", { value: m }, m)),
  );
  resetAndLoad();
}

function debounce(fn, ms) {
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

document.addEventListener("keydown", onKey);
$("login-form").addEventListener("submit", (e) => login(e).catch(showError));
$("logout").addEventListener("click", () => logout().catch(showError));
$("filters").addEventListener("change", resetAndLoad);
$("filters").addEventListener("submit", (e) => e.preventDefault());
$("q").addEventListener("input", debounce(resetAndLoad, 250));
$("prev-page").addEventListener("click", () => turnPage(-1).catch(showError));
$("next-page").addEventListener("click", () => turnPage(1).catch(showError));
$("rate-up").addEventListener("click", () => sendFeedback({ rating: 1 }).catch(showError));
$("rate-down").addEventListener("click", () => sendFeedback({ rating: -1 }).catch(showError));
$("save-correction").addEventListener("click", saveCorrection);
$("compare").addEventListener("click", openCompare);
$("sibling-select").addEventListener("change", (e) => showSibling(e.target.value).catch(showError));
$("pick-left").addEventListener("click", () => pick("left"));
$("pick-right").addEventListener("click", () => pick("right"));
$("help-toggle").addEventListener("click", () => ($("help").hidden = !$("help").hidden));
init().catch(showError);
