// pxeserver's node page: polls the node API and renders the table, a node's boot
// timeline and "explain". No framework and no build step; every text from the server
// goes in with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const STEP_NEXT = {
  dhcp: "its boot loader over TFTP", tftp: "its iPXE script", ipxe: "its cloud-config",
  "cloud-config": "it to phone home (ready)", ignition: "it to phone home (ready)",
};
const state = {
  nodes: [], info: null, selected: null, detail: null, token: sessionStorage.getItem("pxeserver-token") || "",
  stateFilter: "", lastOk: 0, previous: new Map(),
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

// -- the table -----------------------------------------------------------------------

function matches(n) {
  const text = $("#f-text").value.trim().toLowerCase();
  if (text && ![n.mac, n.hostname, n.ip || ""].some((f) => f.toLowerCase().includes(text))) return false;
  const st = $("#f-state").value || state.stateFilter;
  if (st && n.state !== st) return false;
  const prof = $("#f-profile").value;
  if (prof && n.profile !== prof) return false;
  const label = $("#f-label").value.trim();
  if (label) {
    const [k, v] = label.split("=", 2);
    if (!(k in n.labels) || (v !== undefined && v !== "" && n.labels[k] !== v)) return false;
  }
  return true;
}

function renderSummary() {
  const counts = {};
  for (const n of state.nodes) counts[n.state] = (counts[n.state] || 0) + 1;
  const box = $("#summary");
  box.replaceChildren();
  for (const s of (state.info ? state.info.states : [])) {
    const chip = el("button", { type: "button", class: "chip s-" + s + (state.stateFilter && state.stateFilter !== s ? " off" : ""), "data-state": s, text: `${s} ${counts[s] || 0}` });
    chip.addEventListener("click", () => { state.stateFilter = state.stateFilter === s ? "" : s; renderAll(); });
    box.append(chip);
  }
}

function renderTable() {
  const body = $("#node-table tbody");
  const shown = state.nodes.filter(matches);
  const rows = shown.map((n) => {
    const tr = el("tr", { "data-mac": n.mac, "data-state": n.state },
      el("td", { class: "mac", text: n.mac }),
      el("td", { class: "hostname", text: n.hostname }),
      el("td", { class: "ip", text: n.ip || "–" }),
      el("td", { class: "profile", text: n.profile || "–" }),
      el("td", { class: "labels" }, labelsOf(n.labels)),
      el("td", { class: "state" }, badge(n.state)),
      el("td", { class: "last-seen", title: n.last_seen || "", text: ago(n.last_seen) }),
      el("td", { class: "boots", text: String(n.boot_count) }));
    const before = state.previous.get(n.mac);
    if (before && before !== n.state) tr.classList.add("flash");
    if (n.mac === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select(n.mac));
    return tr;
  });
  body.replaceChildren(...rows);
  state.previous = new Map(state.nodes.map((n) => [n.mac, n.state]));
  $("#empty").hidden = state.nodes.length > 0;
  $("#shown").textContent = `${shown.length} of ${state.nodes.length} nodes`;
}

function renderAll() { renderSummary(); renderTable(); }

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
    const bar = el("span", { class: "bar", style: `width:${e.took ? Math.max(2, Math.round(80 * e.took / longest)) : 0}px` });
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
function modeText(writable) {
  const info = state.info;
  if (!info) return "read-only";
  if (!info.writes_need_token) {
    return info.writes === "anyone"
      ? "changes open to anyone: this server has no API token"
      : "changes allowed from this machine only: this server has no API token";
  }
  if (info.writes === "loopback") return "read-only: this server has no API token, so changes come from its own machine only";
  return writable ? "changes allowed" : "read-only";
}

function renderEdit() {
  const writable = state.info && (!state.info.writes_need_token || state.token);
  $("#d-edit").hidden = !writable || !state.detail;
  const mode = $("#mode");
  mode.textContent = modeText(writable);
  mode.classList.toggle("write", Boolean(writable));
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

async function poll() {
  const live = $("#live");
  try {
    const data = await api("GET", "/api/v1/nodes");
    state.nodes = data.nodes;
    state.lastOk = Date.now();
    live.className = "ok";
    $("#live-text").textContent = "live";
    renderAll();
    await refreshDetail();
  } catch (err) {
    live.className = "down";
    $("#live-text").textContent = "server not answering: " + err.message;
  }
  setTimeout(poll, POLL_MS);
}

async function start() {
  try {
    state.info = await api("GET", "/api/v1/info");
  } catch (err) {
    state.info = { states: ["discovered", "booting", "configured", "ready", "lost"], profiles: [], writes_need_token: true };
  }
  renderEdit(); // says who may change nodes before any node is opened
  for (const s of state.info.states) $("#f-state").append(el("option", { value: s, text: s }));
  for (const p of state.info.profiles) $("#f-profile").append(el("option", { value: p, text: p }));
  for (const id of ["#f-text", "#f-state", "#f-profile", "#f-label"]) $(id).addEventListener("input", renderAll);
  $("#token").value = state.token;
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("pxeserver-token", state.token);
    renderEdit();
    loadExplain();
  });
  $("#d-close").addEventListener("click", () => { state.selected = null; state.detail = null; renderDetail(); renderTable(); });
  for (const r of document.querySelectorAll("input[name=platform]")) r.addEventListener("change", loadExplain);
  $("#edit-form").addEventListener("submit", save);
  $("#e-forget").addEventListener("click", forget);
  $("#e-reinstall").addEventListener("click", reinstall);
  renderDetail();
  poll();
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
