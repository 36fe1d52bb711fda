// pxeserver's node page: asks the node API for one page of the table at a time (sorted,
// filtered and paged by the server, so 10,000 nodes cost the browser no more than 100),
// and renders it, a node's boot timeline and "explain". No framework and no build step;
// every text from the server goes in with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const STEP_NEXT = {
  dhcp: "its boot loader over TFTP", tftp: "its iPXE script", ipxe: "its cloud-config",
  "cloud-config": "it to phone home (ready)", ignition: "it to phone home (ready)",
};
// How each column's order reads, ascending and descending.
const ORDER_WORDS = {
  mac: ["MAC", "lowest first", "highest first"], hostname: ["hostname", "A → Z", "Z → A"],
  ip: ["IP", "lowest first", "highest first"], profile: ["profile", "A → Z", "Z → A"],
  labels: ["labels", "A → Z", "Z → A"], state: ["state", "in boot order, discovered → lost", "lost → discovered"],
  last_seen: ["last seen", "longest silent first", "most recent first"],
  boot_count: ["boots", "fewest first", "most first"],
};
const FIRST_DESC = new Set(["last_seen", "boot_count"]); // a first click shows the most of these
const state = {
  nodes: [], count: 0, byState: {}, info: null, selected: null, detail: null,
  token: sessionStorage.getItem("pxeserver-token") || "", previous: new Map(),
  view: { sort: "mac", order: "asc", offset: 0, limit: 100 }, asked: 0, timer: null, lastTook: 0,
};
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v; // CSSOM: the page's CSP refuses style attributes
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " days ago";
}

function seconds(t) {
  if (t === null || t === undefined) return "";
  if (t < 1) return (t * 1000).toFixed(0) + " ms";
  if (t < 120) return t.toFixed(1) + " s";
  if (t < 7200) return (t / 60).toFixed(1) + " min";
  return (t / 3600).toFixed(1) + " h";
}

function badge(s) { return el("span", { class: "badge s-" + s, text: s }); }

function labelsOf(labels) {
  const span = el("span");
  for (const [k, v] of Object.entries(labels).sort()) span.append(el("span", { class: "label", text: k + "=" + v }));
  return span;
}

const number = (n) => n.toLocaleString("en-US");

// -- what the table shows: filters, order and page, kept in the address -----------------

function filters() {
  const label = $("#f-label").value.trim();
  return {
    q: $("#f-text").value.trim(), state: $("#f-state").value, profile: $("#f-profile").value,
    label: label.includes("=") ? label : "",
  };
}

function query() {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters())) if (v) q.set(k, v);
  const { sort, order, offset, limit } = state.view;
  q.set("sort", sort); q.set("order", order); q.set("offset", offset); q.set("limit", limit);
  return q;
}

function remember() {
  const q = query();
  history.replaceState(null, "", "#" + q.toString());
}

function recall() {
  const q = new URLSearchParams(location.hash.slice(1));
  if (ORDER_WORDS[q.get("sort")]) state.view.sort = q.get("sort");
  if (q.get("order") === "desc" || q.get("order") === "asc") state.view.order = q.get("order");
  const limit = parseInt(q.get("limit"), 10);
  if ([50, 100, 200, 500].includes(limit)) state.view.limit = limit;
  state.view.offset = Math.max(0, parseInt(q.get("offset"), 10) || 0);
  $("#p-size").value = String(state.view.limit);
  $("#f-text").value = q.get("q") || "";
  $("#f-label").value = q.get("label") || "";
  return { state: q.get("state") || "", profile: q.get("profile") || "" };
}

// -- the table -----------------------------------------------------------------------

function renderSummary() {
  const box = $("#summary");
  box.replaceChildren();
  const chosen = $("#f-state").value;
  for (const s of (state.info ? state.info.states : [])) {
    const chip = el("button", { type: "button", class: "chip s-" + s + (chosen && chosen !== s ? " off" : ""), "data-state": s, text: `${s} ${number(state.byState[s] || 0)}` });
    chip.addEventListener("click", () => { $("#f-state").value = chosen === s ? "" : s; moved(); });
    box.append(chip);
  }
}

function renderHeads() {
  const { sort, order } = state.view;
  for (const th of document.querySelectorAll("#node-table th[data-sort]")) {
    if (th.dataset.sort === sort) th.setAttribute("aria-sort", order === "asc" ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

function row(n) {
  const tr = el("tr", { "data-mac": n.mac, "data-state": n.state },
    el("td", { class: "mac", text: n.mac }),
    el("td", { class: "hostname", title: n.hostname }, el("span", { text: n.hostname })),
    el("td", { class: "ip", text: n.ip || "–" }),
    el("td", { class: "profile", text: n.profile || "–" }),
    el("td", { class: "labels" }, labelsOf(n.labels)),
    el("td", { class: "state" }, badge(n.state)),
    el("td", { class: "last-seen", title: n.last_seen || "", "data-at": n.last_seen || "", text: ago(n.last_seen) }),
    el("td", { class: "boots", text: String(n.boot_count) }));
  const before = state.previous.get(n.mac);
  if (before && before !== n.state) tr.classList.add("flash");
  if (n.mac === state.selected) tr.classList.add("selected");
  tr.addEventListener("click", () => select(n.mac));
  return tr;
}

// Rows whose text is the same as on screen stay the same elements: a refresh leaves
// alone what did not change (a MAC being selected for copying, a row under the mouse).
function renderRows() {
  const body = $("#node-table tbody");
  const shown = new Map([...body.children].map((tr) => [tr.dataset.mac, tr]));
  const rows = state.nodes.map((n) => {
    const key = JSON.stringify([n, ago(n.last_seen), n.mac === state.selected]);
    const tr = shown.get(n.mac);
    if (tr && tr.dataset.key === key) return tr;
    const fresh = row(n);
    fresh.dataset.key = key;
    return fresh;
  });
  rows.forEach((tr, i) => { if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null); });
  while (body.children.length > rows.length) body.lastElementChild.remove();
}

function renderTable() {
  renderRows();
  state.previous = new Map(state.nodes.map((n) => [n.mac, n.state]));
  renderHeads();
  const { offset, limit, sort, order } = state.view;
  const total = Object.values(state.byState).reduce((a, b) => a + b, 0);
  const filtered = Object.values(filters()).some(Boolean);
  const [name, up, down] = ORDER_WORDS[sort];
  const paged = offset > 0 || state.count > state.nodes.length;
  const rows = paged ? `rows ${number(offset + 1)}–${number(offset + state.nodes.length)} of ` : "";
  $("#shown").textContent = `${rows}${number(state.count)}${filtered ? ` matching (${number(total)} nodes)` : " nodes"}` +
    ` · sorted by ${name}, ${order === "asc" ? up : down}`;
  const empty = $("#empty");
  empty.hidden = state.count > 0;
  empty.textContent = total === 0 ? "No nodes yet. A machine appears here when it first asks for its boot script."
    : "No node matches these filters.";
  const pages = Math.max(1, Math.ceil(state.count / limit));
  const page = Math.floor(offset / limit) + 1;
  $("#p-where").textContent = `page ${number(page)} of ${number(pages)}`;
  $("#p-first").disabled = $("#p-prev").disabled = offset === 0;
  $("#p-next").disabled = $("#p-last").disabled = offset + limit >= state.count;
  $("#pager").hidden = state.count <= 50 && offset === 0;
}

function renderAll() { renderSummary(); renderTable(); }

// The table changed shape (filter, order, page): start from its first row unless a page
// was asked for, and ask the server now rather than at the next poll.
function moved(keepOffset) {
  if (!keepOffset) state.view.offset = 0;
  remember();
  renderHeads();
  document.body.classList.add("busy"); // until the answer: the rows shown are the old ones
  if ($("#nodes").getBoundingClientRect().top < 0) $("#nodes").scrollIntoView({ block: "start" });
  refresh();
}

function sortBy(field) {
  const v = state.view;
  if (v.sort === field) v.order = v.order === "asc" ? "desc" : "asc";
  else { v.sort = field; v.order = FIRST_DESC.has(field) ? "desc" : "asc"; }
  moved();
}

function goTo(offset) {
  const v = state.view;
  const last = Math.max(0, Math.floor((state.count - 1) / v.limit) * v.limit);
  v.offset = Math.min(Math.max(0, offset), last);
  moved(true);
}

// -- one node ------------------------------------------------------------------------

function whereItIs(n) {
  const last = n.events.length ? n.events[n.events.length - 1] : null;
  if (n.state === "ready") return ["ok", `Ready; last heard from ${ago(n.last_heartbeat || n.last_seen)}.`];
  if (n.state === "lost") {
    const step = n.events.slice().reverse().find((e) => e.kind !== "lost" && e.kind !== "operator");
    return ["stuck", `Lost: ${last ? last.detail : ""}. Last step: ${step ? step.kind : "none"} (${step ? ago(step.at) : "–"}).`];
  }
  const step = n.events.slice().reverse().find((e) => STEP_NEXT[e.kind]);
  if (!step) return ["", "Seen, nothing served yet."];
  if (step.kind === "ipxe" && step.detail.endsWith("told to boot from disk")) {
    return ["stuck", `Told to boot from its disk ${ago(step.at)}: waiting for the installed OS to phone home.`];
  }
  return ["stuck", `Stopped after ${step.kind} ${ago(step.at)}: waiting for ${STEP_NEXT[step.kind]}.`];
}

function renderDetail() {
  const n = state.detail;
  $("#detail").hidden = !n;
  document.querySelector("main").classList.toggle("closed", !n);
  if (!n) return;
  $("#d-title").textContent = `${n.hostname} — ${n.mac}`;
  const [cls, text] = whereItIs(n);
  const where = $("#d-where");
  where.className = "where " + cls;
  where.textContent = text;
  const facts = $("#d-facts");
  facts.replaceChildren();
  const rows = [["state", badge(n.state)], ["profile", `${n.profile || "–"} (${n.profile_source})`],
    ["IP", n.ip || "–"], ["arch / platform", `${n.arch || "?"} / ${n.platform || "?"}`], ["UUID", n.uuid || "–"],
    ["labels", labelsOf(n.labels)], ["first seen", ago(n.first_seen)], ["last seen", ago(n.last_seen)], ["boots", String(n.boot_count)],
    ["on its disk", n.installed ? `${n.installed} since ${ago(n.installed_at)} (boots of it start from disk)` : "– (network boot)"]];
  for (const [k, v] of rows) facts.append(el("dt", { text: k }), el("dd", {}, v));
  const longest = Math.max(1, ...n.events.map((e) => e.took || 0));
  const items = n.events.map((e) => {
    const took = e.took === null ? "" : seconds(e.took);
    const bar = el("span", { class: "bar", style: `width:${e.took ? Math.max(2, Math.round(64 * e.took / longest)) : 0}px` });
    const count = e.count > 1 ? ` ×${e.count}` : "";
    return el("li", { class: "k-" + e.kind, "data-kind": e.kind, title: e.at },
      el("span", { class: "kind", text: e.kind + count }),
      el("span", { class: "took" }, bar, took),
      el("span", { class: "detail", text: `${new Date(e.at).toLocaleTimeString()} · ${e.detail || e.state}` }));
  });
  $("#d-timeline").replaceChildren(...items);
  renderEdit();
}

// Who may change nodes, from /api/v1/info: "writes" is the server's rule, and
// "writes_need_token" whether this browser must give the token.
function renderEdit() {
  const writable = state.info && (!state.info.writes_need_token || state.token);
  $("#d-edit").hidden = !writable || !state.detail;
  if (!writable || !state.detail) return;
  $("#e-reinstall").hidden = !state.detail.installed;
  const sel = $("#e-profile");
  const current = state.detail.assigned_profile || "";
  if (sel.dataset.mac !== state.detail.mac) {
    sel.replaceChildren(el("option", { value: "", text: "(from groups)" }), ...state.info.profiles.map((p) => el("option", { value: p, text: p })));
    sel.value = current;
    sel.dataset.mac = state.detail.mac;
    $("#e-hostname").value = state.detail.hostname;
  }
}

async function loadExplain() {
  if (!state.selected) return;
  const platform = document.querySelector("input[name=platform]:checked").value;
  const q = platform ? "?platform=" + platform : "";
  try {
    const x = await api("GET", `/api/v1/nodes/${state.selected}/explain${q}`);
    $("#x-reason").textContent = (x.profile ? `Boots profile ${x.profile}: ${x.reason}` : x.reason) +
      (x.boot_why ? `. Then: ${x.boot_why}` : "");
    const rows = x.verdicts.map((v) => el("tr", { class: v.chosen ? "chosen" : "" },
      el("td", { text: v.group }), el("td", { text: v.profile || "" }),
      el("td", { text: Object.entries(v.selectors).map(([k, vs]) => `${k}=${vs.join("|")}`).join(", ") || "(default)" }),
      el("td", { class: v.matched ? "yes" : "no", text: (v.chosen ? "chosen: " : v.matched ? "matches: " : "no: ") + v.why })));
    $("#x-groups tbody").replaceChildren(...rows);
    $("#x-ipxe").textContent = x.ipxe || "(nothing: no profile)";
    $("#x-cloud-box").hidden = x.cloud_config === null;
    $("#x-cloud").textContent = x.cloud_config || "";
    $("#x-ign-box").hidden = x.ignition === null;
    $("#x-ign").textContent = x.ignition || "";
  } catch (err) {
    $("#x-reason").replaceChildren(el("span", { class: "error", text: "explain failed: " + err.message }));
  }
}

async function select(mac) {
  if (mac !== state.selected) $("#detail").scrollTop = 0; // another node: from its top
  state.selected = mac;
  await refreshDetail();
  renderTable();
  await loadExplain();
}

async function refreshDetail() {
  if (!state.selected) { state.detail = null; renderDetail(); return; }
  try {
    state.detail = await api("GET", "/api/v1/nodes/" + state.selected);
  } catch (err) {
    state.detail = null;
    state.selected = null;
  }
  renderDetail();
}

// -- polling -------------------------------------------------------------------------

// One page of the table, and the open node. An answer to an older question (a poll that
// was under way when the operator sorted) is dropped: only the newest one is drawn.
async function refresh() {
  clearTimeout(state.timer);
  const asked = ++state.asked;
  const started = performance.now();
  const live = $("#live");
  try {
    const data = await api("GET", "/api/v1/nodes?" + query().toString());
    if (asked !== state.asked) return;
    document.body.classList.remove("busy");
    state.lastTook = performance.now() - started;
    Object.assign(state, { nodes: data.nodes, count: data.count, byState: data.by_state });
    if (data.count > 0 && state.view.offset >= data.count) { goTo(data.count - 1); return; }
    live.className = "ok";
    $("#live-text").textContent = "live";
    renderAll();
    await refreshDetail();
  } catch (err) {
    if (asked !== state.asked) return;
    document.body.classList.remove("busy");
    live.className = "down";
    $("#live-text").textContent = "server not answering: " + err.message;
  }
  schedule();
}

// Every two seconds while the tab is shown; a server whose answers take long (a very
// large registry, a loaded machine) is asked less often: never more than a third of the
// time waiting for it. A hidden tab asks nothing and catches up when shown again.
function schedule() {
  clearTimeout(state.timer);
  if (document.hidden) return;
  const every = Math.max(POLL_MS, 3 * state.lastTook);
  $("#live").title = `the table refreshes every ${(every / 1000).toFixed(every < 10000 ? 1 : 0)} s while this tab is shown`;
  state.timer = setTimeout(refresh, every);
}

// The same choice as page.py's writes_mark: which of the banner's words (index.html) apply.
function writesMark(info) {
  if (info.writes === "anyone") return "open";
  if (info.writes === "loopback") return info.writes_need_token ? "nobody" : "local";
  return "token";
}

function applyInfo(info) {
  state.info = info;
  // The server chose the first words (see page.py); this keeps them true after a token
  // is typed or the server's settings change.
  document.body.dataset.writes = writesMark(info);
  if (state.token) document.body.dataset.token = "given";
  else delete document.body.dataset.token;
}

async function start() {
  let info;
  try {
    info = await api("GET", "/api/v1/info");
  } catch (err) {
    info = { states: ["discovered", "booting", "configured", "ready", "lost"], profiles: [], writes_need_token: true };
  }
  applyInfo(info);
  const chosen = recall();
  for (const s of state.info.states) $("#f-state").append(el("option", { value: s, text: s }));
  for (const p of state.info.profiles) $("#f-profile").append(el("option", { value: p, text: p }));
  $("#f-state").value = chosen.state;
  $("#f-profile").value = chosen.profile;
  let typing = null;
  for (const id of ["#f-text", "#f-label"]) {
    $(id).addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(moved, 250); });
  }
  for (const id of ["#f-state", "#f-profile"]) $(id).addEventListener("change", () => moved());
  for (const th of document.querySelectorAll("#node-table th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  $("#p-first").addEventListener("click", () => goTo(0));
  $("#p-prev").addEventListener("click", () => goTo(state.view.offset - state.view.limit));
  $("#p-next").addEventListener("click", () => goTo(state.view.offset + state.view.limit));
  $("#p-last").addEventListener("click", () => goTo(state.count - 1));
  $("#p-size").addEventListener("change", () => { state.view.limit = parseInt($("#p-size").value, 10); moved(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  $("#token").value = state.token;
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("pxeserver-token", state.token);
    applyInfo(state.info);
    renderEdit();
    loadExplain();
  });
  const close = () => { state.selected = null; state.detail = null; renderDetail(); renderTable(); };
  $("#d-close").addEventListener("click", close);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && state.selected) close(); });
  for (const r of document.querySelectorAll("input[name=platform]")) r.addEventListener("change", loadExplain);
  $("#edit-form").addEventListener("submit", save);
  $("#e-forget").addEventListener("click", forget);
  $("#e-reinstall").addEventListener("click", reinstall);
  renderDetail();
  refresh();
}

async function save(ev) {
  ev.preventDefault();
  const n = state.detail;
  const body = {};
  const profile = $("#e-profile").value || null;
  if (profile !== (n.assigned_profile || null)) body.profile = profile;
  const hostname = $("#e-hostname").value.trim();
  if (hostname && hostname !== n.hostname) body.hostname = hostname;
  const label = $("#e-label").value.trim();
  if (label) {
    const [k, v] = label.split("=", 2);
    body.labels = { [k]: v ? v : null };
  }
  const out = $("#e-result");
  try {
    await api("PATCH", "/api/v1/nodes/" + n.mac, body);
    out.className = "";
    out.textContent = "saved";
    $("#e-label").value = "";
    $("#e-profile").dataset.mac = "";
    await refreshDetail();
    await loadExplain();
  } catch (err) {
    out.className = "error";
    out.textContent = err.message;
  }
}

async function reinstall() {
  const n = state.detail;
  if (!confirm(`Reinstall ${n.hostname} (${n.mac})? Its next boot installs ${n.profile} again instead of booting from its disk.`)) return;
  const out = $("#e-result");
  try {
    await api("PATCH", "/api/v1/nodes/" + n.mac, { reinstall: true });
    out.className = "";
    out.textContent = "the next boot reinstalls";
    await refreshDetail();
    await loadExplain();
  } catch (err) {
    out.className = "error";
    out.textContent = err.message;
  }
}

async function forget() {
  const n = state.detail;
  if (!confirm(`Forget ${n.hostname} (${n.mac})? It is registered anew when it boots.`)) return;
  try {
    await api("DELETE", "/api/v1/nodes/" + n.mac);
    state.selected = null;
    state.detail = null;
    renderDetail();
  } catch (err) {
    $("#e-result").className = "error";
    $("#e-result").textContent = err.message;
  }
}

start();
