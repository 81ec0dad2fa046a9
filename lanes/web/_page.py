"""The console's one HTML page: a server-rendered first frame, then a script that keeps it live.

Every value is escaped here (``html.escape``) and set with ``textContent`` by the script, so
whatever a command is called (``<script>`` included) shows as text. No external resource is
loaded: the style, the script and the chart (inline SVG) are in the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

from ._source import View

__all__ = ["render_page"]


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def _system_rows(rows: Iterable[View]) -> str:
    out = []
    for row in rows:
        out.append(
            f'<tr data-id="{_e(row["id"])}"><td class="name">{_e(row["label"])}</td>'
            f"<td>{_e(row['pending'])}</td><td>{_e(row['active'])}</td>"
            f"<td>{_e(_seconds(row['wait']))}</td><td>{_e(row['paused'])}</td>"
            f"<td>{_e(row['completed'])}</td><td>{_e(row['failed'])}</td>"
            f"<td>{_e(row['dead_letters'])}</td></tr>"
        )
    return "".join(out)


_TOTALS = (
    ("systems", "systems"),
    ("pending", "pending"),
    ("active", "running"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("dead_letters", "dead letters"),
)


def render_page(
    *, base: str, overview: View, systems: View, actions: bool, interval: float, title: str
) -> str:
    """The whole page, with the first page of systems already in it."""
    totals = "".join(
        f'<div class="card"><div class="num" id="tot-{key}">{_e(overview.get(key))}</div>'
        f"<div>{label}</div></div>"
        for key, label in _TOTALS
    )
    config: dict[str, Any] = {"actions": actions, "interval": interval, "kind": overview["kind"]}
    # JSON in a <script type="application/json"> block: "<" is escaped so no "</script>".
    blob = json.dumps(config).replace("<", "\\u003c")
    return _TEMPLATE.format(
        base=_e(base),
        title=_e(title),
        kind="live systems" if overview["kind"] == "live" else _e(overview.get("source", "")),
        totals=totals,
        rows=_system_rows(systems["systems"]),
        total=_e(systems["total"]),
        mode="actions enabled (token required)" if actions else "read-only",
        config=blob,
        style=_STYLE,
        script=_SCRIPT,
    )


_STYLE = """
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d3557;color:#fff;padding:10px 16px;display:flex;gap:16px;align-items:center}
header h1{font-size:18px;margin:0}header .mode{opacity:.85}
main{padding:12px 16px}section{background:#fff;border:1px solid #dde1e6;border-radius:6px;
margin:0 0 12px;padding:10px 12px}h2{font-size:15px;margin:0 0 8px}
.cards{display:flex;gap:10px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e6;
border-radius:6px;padding:8px 14px;min-width:90px}.num{font-size:22px;font-weight:600}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;
border-bottom:1px solid #eef0f3;white-space:nowrap}td.err{white-space:pre-wrap;max-width:60em;
font-family:monospace;font-size:12px}details.tb pre{margin:4px 0;max-height:24em;
overflow:auto;background:#f6f8fa;padding:4px}tr[data-id]{cursor:pointer}tr.sel{background:#e8f0fe}
button{font-size:12px;margin-right:4px}#message{min-height:1.2em;font-weight:600}
#message.error{color:#b00020}.muted{color:#6b7280}svg text{font-size:10px;fill:#555}
.toolbar{display:flex;gap:8px;align-items:center;margin-bottom:6px}
"""

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<base href="{base}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
<header><h1>{title}</h1><span class="mode" id="kind">{kind}</span>
<span class="mode" id="mode">{mode}</span>
<span id="auth" hidden><input id="token" type="password" placeholder="action token"
 autocomplete="off"> <button id="use-token" type="button">use</button></span>
<span class="mode" id="live">connecting…</span></header>
<main>
<div id="message" role="status"></div>
<section><div class="cards">{totals}</div></section>
<section><h2>Throughput and latency (while this page is open)</h2>
<svg id="chart" width="720" height="160" role="img" aria-label="throughput and latency"></svg>
<div class="muted">blue: commands finished per second; orange: mean run time (ms)</div></section>
<section id="limits-box" hidden><h2>Shared limits</h2><table><thead><tr><th>limit</th>
<th>slots</th><th>in use</th><th>waiting</th><th>members</th><th>holders</th><th>waiters</th>
</tr></thead><tbody id="limits"></tbody></table></section>
<section><h2>Lane systems (<span id="sys-total">{total}</span>)</h2>
<div class="toolbar"><input id="search" type="search" placeholder="search by name">
<label>sort <select id="sort"><option value="depth">depth</option>
<option value="wait">wait</option><option value="name">name</option></select></label>
<button id="prev" type="button">&lt; prev</button><span id="page"></span>
<button id="next" type="button">next &gt;</button></div>
<table><thead><tr><th>system</th><th>pending</th><th>running</th><th>oldest wait</th>
<th>paused lanes</th><th>completed</th><th>failed</th><th>dead letters</th></tr></thead>
<tbody id="systems">{rows}</tbody></table></section>
<section id="detail" hidden><h2>System <span id="detail-name"></span></h2>
<h2>Lanes</h2><table><thead><tr><th>lane</th><th>prio</th><th>pending</th><th>running</th>
<th>max</th><th>state</th><th>oldest wait</th><th>wait p50</th><th>wait p99</th>
<th>run p50</th><th>run p99</th><th>done</th><th>failed</th><th></th></tr></thead>
<tbody id="lanes"></tbody></table>
<div id="queue-box" hidden><h2>Queue of <span id="queue-name"></span>
(<span id="queue-total"></span> pending)</h2><table><thead><tr><th>#</th><th>command</th>
<th>type</th><th>key</th><th>prio</th><th>attempts</th><th>age</th><th></th></tr></thead>
<tbody id="queue"></tbody></table></div>
<h2>Running (<span id="running-total">0</span>)</h2><table><thead><tr><th>command</th>
<th>lane</th><th>type</th><th>attempts</th><th>elapsed</th><th>progress</th><th></th></tr>
</thead><tbody id="running"></tbody></table>
<h2>Dead letters (<span id="letters-total">0</span>)</h2><table><thead><tr><th>command</th>
<th>lane</th><th>type</th><th>attempts</th><th>failed at</th><th>error</th><th></th></tr>
</thead><tbody id="letters"></tbody></table>
<h2>Schedules</h2><table><thead><tr><th>key</th><th>lane</th><th>next fire</th><th>state</th>
<th>fired</th><th></th></tr></thead><tbody id="schedules"></tbody></table>
</section>
</main>
<script type="application/json" id="config">{config}</script>
<script>{script}</script>
</body></html>
"""

_SCRIPT = r"""
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const state = {q: "", sort: "depth", offset: 0, limit: 50, system: null, lane: null};
const $ = (id) => document.getElementById(id);
let source = null;

function token() { return sessionStorage.getItem("lanes-token") || ""; }
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem("lanes-token", decodeURIComponent(location.hash.slice(7)));
  window.history.replaceState(null, "", location.pathname + location.search);
}
if (config.actions) {
  $("auth").hidden = false;
  $("use-token").addEventListener("click", () => {
    sessionStorage.setItem("lanes-token", $("token").value); $("token").value = "";
    say("token set", false);
  });
}
function csrf() {
  const m = document.cookie.match(/(?:^|; )lanes_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}
function say(text, error) { const m = $("message"); m.textContent = text;
  m.className = error ? "error" : ""; }
function secs(v) {
  if (v === null || v === undefined) return "-";
  if (v < 1e-3) return (v * 1e6).toFixed(0) + " µs";
  if (v < 1) return (v * 1e3).toFixed(1) + " ms";
  return v.toFixed(2) + " s";
}
function show(v) { return v === null || v === undefined ? "-" : String(v); }
function cell(tr, text, cls) { const td = document.createElement("td");
  td.textContent = show(text); if (cls) td.className = cls; tr.appendChild(td); return td; }
function errorCell(tr, letter) {
  const td = cell(tr, letter.error, "err");
  if (!letter.traceback) return;
  const box = document.createElement("details"); box.className = "tb";
  box.open = openTracebacks.has(letter.id);
  box.addEventListener("toggle", () => {
    if (box.open) openTracebacks.add(letter.id); else openTracebacks.delete(letter.id); });
  const summary = document.createElement("summary"); summary.textContent = "traceback";
  const pre = document.createElement("pre"); pre.textContent = letter.traceback;
  box.append(summary, pre); td.appendChild(box);
}
function progressCell(tr, c) {
  const td = cell(tr, c.progress, "progress");
  if (c.fraction !== null && c.fraction !== undefined) {
    const bar = document.createElement("progress"); bar.max = 1;
    bar.value = Math.min(Math.max(c.fraction, 0), 1); td.prepend(bar, " ");
  }
  if (c.log) { const line = document.createElement("div"); line.className = "muted";
    line.textContent = c.log; td.appendChild(line); }
}
const openTracebacks = new Set();  // letters whose traceback stays open across updates
function button(tr, label, action, target) {
  const td = tr.lastChild && tr.lastChild.dataset && tr.lastChild.dataset.buttons
    ? tr.lastChild : (() => { const t = document.createElement("td");
      t.dataset.buttons = "1"; tr.appendChild(t); return t; })();
  const b = document.createElement("button"); b.type = "button"; b.textContent = label;
  b.dataset.action = action; b.dataset.target = target;
  if (action !== "queue") {
    b.addEventListener("click", (ev) => { ev.stopPropagation(); act(action, target); });
  }
  td.appendChild(b);
}
function fill(id, rows, build) {
  const body = $(id); const frag = document.createDocumentFragment();
  for (const row of rows) { const tr = document.createElement("tr"); build(tr, row);
    frag.appendChild(tr); }
  body.replaceChildren(frag);
}
async function act(action, target) {
  if (!config.actions) { say("read-only console: start it with a token to act", true); return; }
  try {
    const r = await fetch("api/systems/" + encodeURIComponent(state.system) + "/" + action, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token(),
                "X-Lanes-CSRF": csrf()},
      body: JSON.stringify({target: target})});
    const body = await r.json();
    say(r.ok ? body.message : (body.error || ("HTTP " + r.status)), !r.ok);
  } catch (e) { say(String(e), true); }
}
function renderOverview(o) {
  for (const k of ["systems", "pending", "active", "completed", "failed", "dead_letters"]) {
    $("tot-" + k).textContent = show(o[k]);
  }
  $("limits-box").hidden = !o.shared_limits.length;
  fill("limits", o.shared_limits, (tr, l) => {
    cell(tr, l.name); cell(tr, l.max_concurrency); cell(tr, l.in_use); cell(tr, l.waiting);
    cell(tr, l.members);
    cell(tr, l.holders.map((h) => h.label + "/" + h.lane + " x" + h.held).join(", "));
    cell(tr, l.waiters.map((h) => h.label + "/" + h.lane).join(", "));
  });
}
function renderSystems(s) {
  $("sys-total").textContent = String(s.total);
  const last = Math.min(s.total, s.offset + s.limit);
  $("page").textContent = s.total ? (s.offset + 1) + "-" + last + " of " + s.total : "none";
  $("prev").disabled = s.offset <= 0; $("next").disabled = last >= s.total;
  fill("systems", s.systems, (tr, r) => {
    tr.dataset.id = r.id; if (r.id === state.system) tr.className = "sel";
    cell(tr, r.label, "name"); cell(tr, r.pending); cell(tr, r.active); cell(tr, secs(r.wait));
    cell(tr, r.paused); cell(tr, r.completed); cell(tr, r.failed); cell(tr, r.dead_letters);
  });
}
function renderSystem(d) {
  $("detail").hidden = !d;
  if (!d) return;
  $("detail-name").textContent = d.label;
  fill("lanes", d.lane_rows, (tr, l) => {
    tr.dataset.lane = l.name;
    cell(tr, l.name, "name");
    cell(tr, l.effective_priority !== l.priority && l.priority !== null
      ? l.priority + "→" + l.effective_priority : l.priority);
    cell(tr, l.pending); cell(tr, l.active); cell(tr, l.max_concurrency);
    cell(tr, l.paused ? "paused" : (l.rate_limited ? "rate-limited" : "running"));
    cell(tr, l.pending ? secs(l.wait) : "-");
    cell(tr, secs(l.wait_p50)); cell(tr, secs(l.wait_p99));
    cell(tr, secs(l.run_p50)); cell(tr, secs(l.run_p99)); cell(tr, l.completed);
    cell(tr, l.failed);
    button(tr, "queue", "queue", l.name);
    if (config.kind === "live" && config.actions) button(tr, l.paused ? "resume" : "pause",
      l.paused ? "resume" : "pause", l.name);
  });
  $("running-total").textContent = String(d.running_total);
  fill("running", d.running, (tr, c) => {
    cell(tr, c.id); cell(tr, c.lane); cell(tr, c.type, "name"); cell(tr, c.attempts);
    cell(tr, secs(c.elapsed)); progressCell(tr, c);
    if (config.kind === "live" && config.actions) button(tr, "cancel", "cancel", c.id);
  });
  $("letters-total").textContent = String(d.letters_total);
  fill("letters", d.letters, (tr, l) => {
    cell(tr, l.id); cell(tr, l.lane); cell(tr, l.type, "name"); cell(tr, l.attempts);
    cell(tr, l.failed_at ? new Date(l.failed_at * 1000).toLocaleString() : "-");
    errorCell(tr, l);
    if (config.actions) {
      button(tr, "requeue", "requeue", l.id); button(tr, "delete", "delete", l.id);
    }
  });
  fill("schedules", d.schedules, (tr, s) => {
    cell(tr, s.key, "name"); cell(tr, s.lane);
    cell(tr, s.next_run ? new Date(s.next_run).toLocaleString() : "-");
    cell(tr, s.problem || (s.paused ? "paused" : "active")); cell(tr, s.fired);
    if (config.kind === "live" && config.actions) button(tr, "fire now", "trigger", s.key);
  });
}
function renderQueue(q) {
  $("queue-box").hidden = !q;
  if (!q) return;
  $("queue-name").textContent = q.lane; $("queue-total").textContent = String(q.pending);
  fill("queue", q.commands, (tr, c) => {
    cell(tr, c.position); cell(tr, c.id); cell(tr, c.type, "name"); cell(tr, c.key);
    cell(tr, c.priority); cell(tr, c.attempts); cell(tr, secs(c.age));
    if (config.kind === "live" && config.actions) button(tr, "cancel", "cancel", c.id);
  });
}
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) { const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, String(attrs[k])); return e; }
function renderChart(points) {
  const chart = $("chart"); const w = 720, h = 160, pad = 30;
  const parts = [svg("rect", {x: 0, y: 0, width: w, height: h, fill: "#fafbfc"})];
  if (points.length > 1) {
    const t0 = points[0].t, t1 = points[points.length - 1].t, span = Math.max(t1 - t0, 1);
    for (const [key, color] of [["rate", "#1f6feb"], ["latency_ms", "#e8590c"]]) {
      const top = Math.max(...points.map((p) => p[key] || 0), 1e-9);
      const xy = points.map((p) => [pad + (p.t - t0) / span * (w - 2 * pad),
        h - pad - (p[key] || 0) / top * (h - 2 * pad)].map((n) => n.toFixed(1)).join(","));
      parts.push(svg("polyline", {points: xy.join(" "), fill: "none", stroke: color,
        "stroke-width": 2}));
      const label = svg("text", key === "rate" ? {x: 2, y: 12, fill: color}
        : {x: w - 2, y: 12, fill: color, "text-anchor": "end"});
      label.textContent = "max " + (key === "rate" ? top.toFixed(1) + "/s"
                                                  : top.toFixed(2) + " ms");
      parts.push(label);
    }
    const ax = svg("text", {x: pad, y: h - 8});
    ax.textContent = "last " + Math.round(span) + " s"; parts.push(ax);
  }
  chart.replaceChildren(...parts);
}
function url() {
  const p = new URLSearchParams({q: state.q, sort: state.sort, offset: state.offset,
                                 limit: state.limit});
  if (state.system) p.set("system", state.system);
  if (state.lane) p.set("lane", state.lane);
  return "api/events?" + p.toString();
}
function connect() {
  if (source) source.close();
  source = new EventSource(url());
  source.addEventListener("update", (ev) => {
    const data = JSON.parse(ev.data);
    $("live").textContent = "live";
    renderOverview(data.overview); renderSystems(data.systems);
    if (data.error) say(data.error, true);
    renderSystem(data.system); renderQueue(data.queue); renderChart(data.history);
  });
  source.addEventListener("problem", (ev) => {
    $("live").textContent = "error"; say(JSON.parse(ev.data).error, true);
  });
  source.onerror = () => { $("live").textContent = "reconnecting…"; };
}
$("systems").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr"); if (!tr || !tr.dataset.id) return;
  state.system = tr.dataset.id; state.lane = null; connect();
});
$("lanes").addEventListener("click", (ev) => {
  const b = ev.target.closest("button"); if (!b || b.dataset.action !== "queue") return;
  state.lane = b.dataset.target; connect();
});
let timer = null;
$("search").addEventListener("input", () => { clearTimeout(timer);
  timer = setTimeout(() => { state.q = $("search").value; state.offset = 0; connect(); }, 250); });
$("sort").addEventListener("change", () => { state.sort = $("sort").value; state.offset = 0;
  connect(); });
$("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit);
  connect(); });
$("next").addEventListener("click", () => { state.offset += state.limit; connect(); });
connect();
"""
