/// The console: one self-contained page (HTML, CSS, JavaScript; no CDN, no external font or
/// script, so it works in an air-gapped cluster), served by the admin listener at `/`. It holds no
/// data: everything comes from the admin API (`/flows`, `/flows/stream`, `/policy`, `/explain`,
/// `/readyz`), with the bearer token when `spec.admin.tokenFile` is set (asked once, kept for the
/// browser session). Read-only: it only ever sends GETs.
enum ConsolePage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Corridor console</title>
<style>
:root { --bg:#f6f7f9; --fg:#1d2430; --muted:#66707f; --line:#d9dde3; --allow:#1f8a4c; --audit:#c77d00; --deny:#c62f2f; --accent:#2b5fd9; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:16px; padding:10px 18px; background:#17202e; color:#fff; }
header h1 { font-size:17px; margin:0; letter-spacing:.3px; }
header .badge { font-size:12px; padding:2px 8px; border-radius:10px; background:#2e3a4f; }
header .badge.audit { background:var(--audit); }
nav { display:flex; gap:4px; margin-left:auto; }
nav button { background:transparent; color:#cfd6e2; border:0; padding:6px 12px; border-radius:6px; cursor:pointer; font-size:14px; }
nav button.active, nav button:hover { background:#2e3a4f; color:#fff; }
main { padding:14px 18px; }
section { display:none; }
section.active { display:block; }
.bar { display:flex; flex-wrap:wrap; gap:8px; align-items:center; margin-bottom:10px; }
.bar input, .bar select { padding:5px 8px; border:1px solid var(--line); border-radius:6px; font-size:13px; background:#fff; }
.bar button, .btn { padding:5px 12px; border:1px solid var(--accent); background:var(--accent); color:#fff; border-radius:6px; cursor:pointer; font-size:13px; }
.btn.secondary { background:#fff; color:var(--accent); }
.muted { color:var(--muted); }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); border-radius:8px; overflow:hidden; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); font-size:13px; vertical-align:top; }
th { background:#eef1f5; font-weight:600; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
.d-allow { color:var(--allow); font-weight:600; } .d-audit { color:var(--audit); font-weight:600; } .d-deny { color:var(--deny); font-weight:600; }
.sig { display:inline-block; font-size:11px; padding:1px 6px; border-radius:8px; background:#fde8cf; color:#7a4a00; margin-right:3px; }
pre { background:#0f1622; color:#e2e8f0; padding:10px 12px; border-radius:8px; overflow:auto; font-size:12px; white-space:pre-wrap; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap:12px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card h3 { margin:0 0 6px; font-size:14px; }
#map-svg { background:#fff; border:1px solid var(--line); border-radius:8px; width:100%; }
#map-svg text { font-size:12px; fill:var(--fg); }
#map-svg .node rect { fill:#eef2fb; stroke:#9fb3e6; rx:6; cursor:pointer; }
#map-svg .node.unregistered rect { fill:#fdeeee; stroke:#e2a0a0; }
#map-svg .node.selected rect { stroke:var(--accent); stroke-width:2; }
.legend span { margin-right:14px; }
dialog { border:1px solid var(--line); border-radius:10px; padding:18px; }
.hint { background:#fff8e6; border:1px solid #f0d79c; padding:8px 10px; border-radius:6px; margin:6px 0; }
</style>
</head>
<body>
<header>
  <h1>Corridor</h1>
  <span id="mode" class="badge">…</span>
  <span id="generation" class="badge muted">generation …</span>
  <span id="ready" class="badge">…</span>
  <nav>
    <button data-tab="live" class="active">Live</button>
    <button data-tab="map">Map</button>
    <button data-tab="denied">Denied</button>
    <button data-tab="signals">Signals</button>
    <button data-tab="policy">Policy</button>
    <button data-tab="explain">Explain</button>
  </nav>
</header>
<main>
<section id="live" class="active">
  <div class="bar">
    <input id="f-namespace" placeholder="namespace">
    <input id="f-workload" placeholder="workload">
    <input id="f-host" placeholder="host">
    <select id="f-decision"><option value="">any decision</option><option>allow</option><option>audit</option><option>deny</option></select>
    <select id="f-signal"><option value="">any signal</option><option>new_destination</option><option>deny_burst</option><option>generated_name</option><option>upload_heavy</option><option>address_mismatch</option><option>guard_refused</option></select>
    <button id="pause">Pause</button>
    <span id="live-status" class="muted">connecting…</span>
  </div>
  <table><thead><tr><th>time</th><th>event</th><th>listener</th><th>who</th><th>destination</th><th>decision</th><th>rule / reason</th><th>bytes ↑/↓</th><th>signals</th></tr></thead>
  <tbody id="live-rows"></tbody></table>
</section>
<section id="map">
  <div class="bar"><button id="map-refresh" class="btn secondary">Refresh</button>
    <span class="legend"><span class="d-allow">━ allow</span><span class="d-audit">━ audit</span><span class="d-deny">━ deny</span><span class="muted">line width: connections</span></span></div>
  <svg id="map-svg" height="400"></svg>
  <div id="map-detail"></div>
</section>
<section id="denied">
  <div class="bar"><button id="denied-refresh" class="btn secondary">Refresh</button><span class="muted">denied and audited destinations per workload; “How to allow” asks /explain</span></div>
  <table><thead><tr><th>who</th><th>destination</th><th>decision</th><th>connections</th><th>last seen</th><th>reason</th><th></th></tr></thead><tbody id="denied-rows"></tbody></table>
  <div id="denied-explain"></div>
</section>
<section id="signals">
  <table><thead><tr><th>time</th><th>signals</th><th>who</th><th>destination</th><th>decision</th><th>bytes ↑/↓</th></tr></thead><tbody id="signal-rows"></tbody></table>
</section>
<section id="policy"><div id="policy-body" class="cards"></div></section>
<section id="explain">
  <form id="explain-form" class="bar">
    <input name="namespace" placeholder="namespace"><input name="serviceAccount" placeholder="service account">
    <input name="label" placeholder="labels k=v,k=v"><input name="sourceIP" placeholder="or source IP"><input name="pod" placeholder="or pod ns/name">
    <input name="to" placeholder="host[:port]" required>
    <select name="via"><option>tls</option><option>connect</option><option>http</option><option>tcp</option></select>
    <label><input type="checkbox" name="ech"> ECH</label>
    <button type="submit">Explain</button>
  </form>
  <pre id="explain-out" class="muted">Who may reach what, and by which rule: fill in a source and a destination.</pre>
</section>
</main>
<dialog id="token-dialog"><form id="token-form" method="dialog">
  <p>This gateway's admin API needs a token (<code>spec.admin.tokenFile</code>).</p>
  <input id="token-input" type="password" size="40" placeholder="bearer token" autocomplete="off">
  <button type="submit" class="btn">Use token</button>
  <p id="token-error" class="d-deny"></p>
</form></dialog>
<script>
"use strict";
const MAX_ROWS = 500, MAX_EVENTS = 2000, MAX_SIGNALS = 500;
let token = sessionStorage.getItem("corridor-token") || "";
let waitingForToken = null;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function askToken(message) {
  if (!waitingForToken) {
    waitingForToken = new Promise((resolve) => {
      $("token-error").textContent = message || "";
      $("token-dialog").showModal();
      $("token-form").onsubmit = () => {
        token = $("token-input").value.trim();
        sessionStorage.setItem("corridor-token", token);
        waitingForToken = null;
        resolve();
      };
    });
  }
  return waitingForToken;
}

async function api(path, options = {}) {
  for (;;) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) { await askToken(token ? "That token was refused." : ""); continue; }
    return response;
  }
}
async function json(path) {
  const response = await api(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// Tabs
for (const button of document.querySelectorAll("nav button")) {
  button.onclick = () => {
    document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b === button));
    document.querySelectorAll("main section").forEach((s) => s.classList.toggle("active", s.id === button.dataset.tab));
    ({ map: drawMap, denied: loadDenied, policy: loadPolicy })[button.dataset.tab]?.();
  };
}

// Header
async function loadHeader() {
  try {
    const policy = await json("/policy");
    $("mode").textContent = "mode " + policy.gateway.mode;
    $("mode").classList.toggle("audit", policy.gateway.mode === "Audit");
    $("generation").textContent = "generation " + policy.generation;
    const ready = await api("/readyz");
    $("ready").textContent = ready.ok ? "ready" : "not ready";
  } catch (e) { $("mode").textContent = "…"; }
}

// Live flows
const events = [];
const signalEvents = [];
let paused = false, pending = [], received = 0, scheduled = false;
const who = (r) => typeof r.identity === "object" ? r.identity.namespace + "/" + r.identity.workload : "unknown " + String(r.src).replace(/:\d+$/, "");
const destination = (r) => (r.connectHost || r.sni || r.host || (r.originalDst || "").replace(/:\d+$/, "") || "?") + (r.port ? ":" + r.port : "");
function filters() {
  return { namespace: $("f-namespace").value.trim(), workload: $("f-workload").value.trim(), host: $("f-host").value.trim(),
           decision: $("f-decision").value, signal: $("f-signal").value };
}
function matches(r, f) {
  const id = typeof r.identity === "object" ? r.identity : {};
  if (f.namespace && id.namespace !== f.namespace) return false;
  if (f.workload && id.workload !== f.workload) return false;
  if (f.host && (r.connectHost || r.sni || r.host) !== f.host) return false;
  if (f.decision && r.decision !== f.decision) return false;
  if (f.signal && !(r.signals || []).includes(f.signal)) return false;
  return true;
}
function row(r) {
  const tr = document.createElement("tr");
  tr.dataset.event = r.event; tr.dataset.decision = r.decision; tr.dataset.host = r.connectHost || r.sni || r.host || "";
  const rule = r.egressPolicy ? r.egressPolicy + " → " + (r.externalService || "") : (r.reason || "");
  tr.innerHTML = `<td>${esc((r.time || "").slice(11, 23))}</td><td>${esc(r.event)}</td><td>${esc(r.listener)}</td><td>${esc(who(r))}</td>` +
    `<td>${esc(destination(r))}</td><td class="d-${esc(r.decision)}">${esc(r.decision)}</td><td>${esc(rule)}</td>` +
    `<td class="num">${r.bytesUp ?? ""}/${r.bytesDown ?? ""}</td><td>${(r.signals || []).map((s) => `<span class="sig">${esc(s)}</span>`).join("")}</td>`;
  return tr;
}
function flush() {
  scheduled = false;
  if (paused || pending.length === 0) return;
  const f = filters(), body = $("live-rows"), fragment = document.createDocumentFragment();
  for (const r of pending.splice(0)) if (matches(r, f)) fragment.prepend(row(r));
  body.prepend(fragment);
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  $("live-status").textContent = received + " events";
}
function rerender() {
  const f = filters(), body = $("live-rows");
  body.replaceChildren();
  const fragment = document.createDocumentFragment();
  for (const r of events.filter((e) => matches(e, f)).slice(-MAX_ROWS)) fragment.prepend(row(r));
  body.append(fragment);
}
["f-namespace", "f-workload", "f-host", "f-decision", "f-signal"].forEach((id) => { $(id).addEventListener("input", rerender); $(id).addEventListener("change", rerender); });
$("pause").onclick = () => {
  paused = !paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  if (!paused) { pending = []; rerender(); }
};
function take(r) {
  received++;
  events.push(r);
  if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
  if ((r.signals || []).length && r.event !== "open") {
    signalEvents.unshift(r);
    if (signalEvents.length > MAX_SIGNALS) signalEvents.pop();
    renderSignals();
  }
  if (!paused) { pending.push(r); if (!scheduled) { scheduled = true; requestAnimationFrame(flush); } }
}
async function stream() {
  for (;;) {
    try {
      const response = await api("/flows/stream");
      $("live-status").textContent = "live";
      const reader = response.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end); buffer = buffer.slice(end + 2);
          const data = frame.split("\n").find((l) => l.startsWith("data: "));
          if (data) { try { take(JSON.parse(data.slice(6))); } catch (e) {} }
        }
      }
    } catch (e) { $("live-status").textContent = "reconnecting…"; }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// Signals
function renderSignals() {
  const body = $("signal-rows");
  body.replaceChildren(...signalEvents.slice(0, 200).map((r) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${esc((r.time || "").slice(0, 23))}</td><td>${r.signals.map((s) => `<span class="sig">${esc(s)}</span>`).join("")}</td>` +
      `<td>${esc(who(r))}</td><td>${esc(destination(r))}</td><td class="d-${esc(r.decision)}">${esc(r.decision)}</td><td class="num">${r.bytesUp}/${r.bytesDown}</td>`;
    return tr;
  }));
}

// Map
const color = { allow: "var(--allow)", audit: "var(--audit)", deny: "var(--deny)" };
let selected = null, mapFlows = [];
function flowWho(f) { return f.source ? "unknown " + f.source : f.namespace + "/" + f.workload; }
function flowTarget(f) { return f.externalService ? f.externalService : f.destination; }
async function drawMap() {
  try { mapFlows = (await json("/flows?limit=5000")).items; } catch (e) { return; }
  const left = [...new Set(mapFlows.map(flowWho))].sort(), right = [...new Set(mapFlows.map(flowTarget))].sort();
  const registered = new Set(mapFlows.filter((f) => f.externalService).map((f) => f.externalService));
  const edges = new Map();
  for (const f of mapFlows) {
    const key = flowWho(f) + "\u0000" + flowTarget(f) + "\u0000" + f.decision;
    const e = edges.get(key) || { from: flowWho(f), to: flowTarget(f), decision: f.decision, connections: 0 };
    e.connections += f.connections + f.active;
    edges.set(key, e);
  }
  const svg = $("map-svg"), width = svg.clientWidth || 900, rowHeight = 34;
  const height = Math.max(120, Math.max(left.length, right.length) * rowHeight + 20);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const y = (list, name) => 20 + list.indexOf(name) * rowHeight + rowHeight / 2 - 6;
  const nodeWidth = 230, xl = 20, xr = width - nodeWidth - 20;
  let html = "";
  for (const e of edges.values()) {
    const w = Math.min(10, 1 + Math.log2(1 + e.connections));
    html += `<line class="edge" data-edge="${esc(e.from)}->${esc(e.to)}" data-decision="${e.decision}" data-connections="${e.connections}" ` +
      `x1="${xl + nodeWidth}" y1="${y(left, e.from)}" x2="${xr}" y2="${y(right, e.to)}" stroke="${color[e.decision]}" stroke-width="${w}" stroke-opacity=".75"/>`;
  }
  const node = (name, x, yy, kind, extra) =>
    `<g class="node ${extra}" data-node="${kind}:${esc(name)}" transform="translate(${x},${yy - 12})"><rect width="${nodeWidth}" height="24"/>` +
    `<text x="8" y="16">${esc(name.length > 34 ? name.slice(0, 33) + "…" : name)}</text></g>`;
  for (const name of left) html += node(name, xl, y(left, name), "workload", selected === "workload:" + name ? "selected" : "");
  for (const name of right) html += node(name, xr, y(right, name), "service", (registered.has(name) ? "" : "unregistered") + (selected === "service:" + name ? " selected" : ""));
  svg.innerHTML = html;
  for (const g of svg.querySelectorAll(".node")) g.onclick = () => { selected = g.dataset.node; showNode(selected); drawMap(); };
  if (selected) showNode(selected);
}
function showNode(id) {
  const [kind, name] = [id.slice(0, id.indexOf(":")), id.slice(id.indexOf(":") + 1)];
  const flows = mapFlows.filter((f) => kind === "workload" ? flowWho(f) === name : flowTarget(f) === name);
  $("map-detail").innerHTML = `<h3>${esc(name)}</h3>` + flowTable(flows);
}
function flowTable(flows) {
  return `<table><thead><tr><th>who</th><th>destination</th><th>decision</th><th>rule</th><th>connections</th><th>active</th><th>bytes ↑/↓</th><th>last seen</th></tr></thead><tbody>` +
    flows.map((f) => `<tr><td>${esc(flowWho(f))}</td><td>${esc(f.destination)}:${f.port}</td><td class="d-${f.decision}">${f.decision}</td>` +
      `<td>${esc(f.egressPolicy || f.lastReason)}</td><td class="num">${f.connections}</td><td class="num">${f.active}</td>` +
      `<td class="num">${f.bytesUp}/${f.bytesDown}</td><td>${esc(f.lastSeen)}</td></tr>`).join("") + "</tbody></table>";
}
$("map-refresh").onclick = drawMap;

// Denied
async function loadDenied() {
  let flows;
  try { flows = (await json("/flows?limit=5000")).items.filter((f) => f.decision !== "allow"); } catch (e) { return; }
  const body = $("denied-rows");
  body.replaceChildren(...flows.map((f, i) => {
    const tr = document.createElement("tr");
    tr.dataset.destination = f.destination;
    tr.innerHTML = `<td>${esc(flowWho(f))}</td><td>${esc(f.destination)}:${f.port}</td><td class="d-${f.decision}">${f.decision}</td>` +
      `<td class="num">${f.connections}</td><td>${esc(f.lastSeen)}</td><td>${esc(f.lastReason)}</td><td><button class="btn secondary how">How to allow</button></td>`;
    tr.querySelector(".how").onclick = () => howToAllow(f);
    return tr;
  }));
}
async function howToAllow(f) {
  const via = { tls: "tls", connect: "connect", http: "http" }[f.listener] || "tls";
  const isAddress = /^[0-9.:]+$/.test(f.destination);
  const params = new URLSearchParams({ to: f.destination + ":" + f.port, via: isAddress ? "tcp" : via });
  if (f.source) params.set("sourceIP", f.source); else params.set("pod", f.namespace + "/" + f.workload);
  const out = $("denied-explain");
  try {
    const e = await json("/explain?" + params);
    out.innerHTML = `<h3>${esc(flowWho(f))} → ${esc(f.destination)}:${f.port}</h3><p>${esc(e.reason)}</p>` +
      (e.hint ? `<div class="hint" id="denied-hint">${esc(e.hint.text)}</div>` : "") +
      (e.hint && e.hint.yaml.trim() ? `<div class="bar"><button class="btn" id="copy-yaml">Copy YAML</button><span class="muted">objects that would allow it (corridor check accepts them)</span></div><pre id="denied-yaml">${esc(e.hint.yaml)}</pre>` : "");
    const copy = $("copy-yaml");
    if (copy) copy.onclick = () => navigator.clipboard?.writeText(e.hint.yaml);
  } catch (err) { out.innerHTML = `<p class="d-deny">${esc(err.message)}</p>`; }
}
$("denied-refresh").onclick = loadDenied;

// Policy
async function loadPolicy() {
  let p;
  try { p = await json("/policy"); } catch (e) { return; }
  const ready = await api("/readyz"), readyText = await ready.text();
  const list = (items, render) => items.length ? "<table><tbody>" + items.map(render).join("") + "</tbody></table>" : "<p class='muted'>none</p>";
  $("policy-body").innerHTML =
    `<div class="card"><h3>Gateway</h3><p>mode <b>${esc(p.gateway.mode)}</b>, generation ${p.generation}, unknown sources ${esc(p.gateway.unknownSources)}</p><p class="muted">${esc(readyText)}</p></div>` +
    `<div class="card"><h3>ExternalServices (${p.externalServices.length})</h3>` +
    list(p.externalServices, (s) => `<tr><td><b>${esc(s.name)}</b></td><td>${esc((s.hosts || []).join(", "))}</td><td>${esc((s.ports || []).join(", "))}</td><td>${esc(s.access || "")}</td></tr>`) + "</div>" +
    `<div class="card"><h3>EgressPolicies (${p.egressPolicies.length})</h3>` +
    list(p.egressPolicies, (e) => `<tr><td><b>${esc(e.name)}</b></td><td>${esc(e.mode)}</td><td>${esc(e.podSelector)}</td><td>${esc((e.externalServices || []).join(", "))}</td></tr>`) + "</div>" +
    `<div class="card"><h3>Workloads (${(p.workloads || []).length})</h3>` +
    list(p.workloads || [], (w) => `<tr><td><b>${esc(w.name)}</b></td><td>${esc((w.addresses || []).join(", "))}</td><td>sa:${esc(w.serviceAccount)}</td></tr>`) + "</div>" +
    (p.kubernetes ? `<div class="card"><h3>Kubernetes</h3>` + list(p.kubernetes.objects || [], (o) => `<tr><td>${esc(o.object)}</td><td class="${o.accepted ? "d-allow" : "d-deny"}">Accepted=${o.accepted}</td><td>${o.accepted ? "" : "enforcing: " + esc(o.enforcing)}</td></tr>`) + "</div>" : "");
}

// Explain
$("explain-form").onsubmit = async (event) => {
  event.preventDefault();
  const form = new FormData(event.target), params = new URLSearchParams();
  for (const key of ["namespace", "serviceAccount", "sourceIP", "pod", "to", "via"]) { const v = String(form.get(key) || "").trim(); if (v) params.set(key, v); }
  for (const label of String(form.get("label") || "").split(",").map((l) => l.trim()).filter(Boolean)) params.append("label", label);
  if (form.get("ech")) params.set("ech", "true");
  const response = await api("/explain?" + params), body = await response.json();
  $("explain-out").classList.remove("muted");
  $("explain-out").textContent = response.ok ? body.text : "error: " + body.error;
};

loadHeader();
setInterval(loadHeader, 10000);
stream();
</script>
</body>
</html>
"""#
}
